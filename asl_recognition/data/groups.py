"""Whole-group holdouts and signer/source-disjoint splits.

A model that has seen a signer's hand (or a source's camera and background) in training scores
that signer far above a stranger. To measure generalisation, a split can keep every signer (or
source) in exactly one of train/val/test, and whole sources or signers can be held out in a
fourth ``holdout`` split that training never sees.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asl_recognition.data.sources import SourceSpecError
from asl_recognition.data.split import SPLITS, place_groups

HOLDOUT = "holdout"
WHOLE_GROUP_BY = ("signer", "source")


@dataclass(frozen=True)
class HoldoutRule:
    """``--holdout-source NAME`` (signer None) or ``--holdout-group SOURCE:SIGNER`` (globs ok)."""

    option: str  # "source" | "group"
    source: str
    signer: str | None
    text: str

    def label(self, source: str, signer: str | None) -> str | None:
        """``massey`` / ``massey/hand4`` when the file belongs to this rule, else None."""
        if not fnmatch.fnmatchcase(source, self.source):
            return None
        if self.signer is None:
            return source
        if signer is None or not fnmatch.fnmatchcase(signer, self.signer):
            return None
        return f"{source}/{signer}"

    def describe(self) -> str:
        return f"{self.option}={self.text}"


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def parse_holdouts(
    sources: Iterable[str], groups: Iterable[str], known_sources: Sequence[str]
) -> list[HoldoutRule]:
    """Rules from the options; an unknown source name is refused here, before any work."""
    known = list(known_sources)
    listing = ", ".join(known) or "none"
    rules: list[HoldoutRule] = []
    for name in sources:
        if name not in known:
            raise SourceSpecError(
                f"--holdout-source {name!r}: no such source (sources: {listing})"
            )
        rules.append(HoldoutRule("source", name, None, name))
    for text in groups:
        source, sep, signer = text.replace("/", ":", 1).partition(":")
        if not sep:  # a bare signer pattern: that signer in any source
            source, signer = "*", text
        source, signer = source.strip() or "*", signer.strip()
        if not signer:
            raise SourceSpecError(f"--holdout-group {text!r}: expected SOURCE:SIGNER")
        if not _has_glob(source) and source not in known:
            raise SourceSpecError(f"--holdout-group {text!r}: no source {source!r} ({listing})")
        rules.append(HoldoutRule("group", source, signer, text))
    return rules


def assign_holdout(
    rules: Sequence[HoldoutRule],
    data_sources: Sequence[str],
    signers: Sequence[str | None],
) -> list[str | None]:
    """The holdout label of each file (None = stays in train/val/test); first rule wins.

    Raises SourceSpecError when a rule matches no file: a typo must not silently hold out
    nothing and leave the "held-out" score measured on nothing.
    """
    labels: list[str | None] = [None] * len(data_sources)
    used = [0] * len(rules)
    for i, (src, signer) in enumerate(zip(data_sources, signers)):
        for r, rule in enumerate(rules):
            label = rule.label(src, signer)
            if label is not None:
                used[r] += 1
                if labels[i] is None:
                    labels[i] = label
    for rule, n in zip(rules, used):
        if n == 0:
            seen = sorted({f"{s}/{g}" for s, g in zip(data_sources, signers) if g})[:12]
            hint = f" (signers seen: {', '.join(seen)})" if seen else " (no file names a signer)"
            raise SourceSpecError(f"--holdout-{rule.option} {rule.text!r} matches no file{hint}")
    return labels


def split_whole_groups(
    groups: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, str]:
    """Each group (a signer, a source) to ONE split, across classes; sizes steer the ratios.

    Unlike the per-class stratified split, a group here spans every class, so groups are
    placed globally (:func:`place_groups` over all of them at once).
    """
    sizes = Counter(groups)
    assigned = place_groups(sizes, fractions, f"{seed}:whole-groups")
    empty = [s for s in SPLITS if not assigned[s]]
    if empty:
        warnings.warn(
            f"{len(sizes)} whole group(s) for {len(SPLITS)} splits: {', '.join(empty)} left empty",
            stacklevel=2,
        )
    return {g: s for s, gs in assigned.items() for g in gs}


def whole_group_key(group_by: str, data_source: str, signer: str | None) -> str | None:
    """``signer:massey/hand1`` / ``source:kaggle``; None when the file names no signer."""
    if group_by == "source":
        return f"source:{data_source}"
    if group_by == "signer" and signer:
        return f"signer:{data_source}/{signer}"
    return None
