"""Best-model selection: promote a new model only if it beats production on one metric.

Works on any registry with the project's API (``get``, ``production``, ``promote``): the local
JSON registry offline, the ClearML model registry (tags, ``Model.query_models``) with a server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from asl_recognition.hashing import sha256_file
from asl_recognition.pipeline.options import SelectBestOptions
from asl_recognition.registry.base import ModelIntegrityError
from asl_recognition.registry.confusion import find_confusion, read_classes
from asl_recognition.serving.repository import check_servable

MODES = ("max", "min")
WORST_HOLDOUT = "worst_holdout_accuracy"


@dataclass
class Decision:
    """What select_best decided and why; both metrics are kept for the log."""

    promoted: bool
    reason: str
    metric: str
    mode: str
    candidate: Any
    previous: Any | None
    candidate_value: float | None
    previous_value: float | None

    @property
    def production_model_id(self) -> str:
        if self.promoted or self.previous is None:
            return self.candidate.id
        return self.previous.id

    def as_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "metric": self.metric,
            "mode": self.mode,
            "candidate_model_id": self.candidate.id,
            "candidate_value": self.candidate_value,
            "previous_model_id": self.previous.id if self.previous else None,
            "previous_value": self.previous_value,
            "production_model_id": self.production_model_id,
        }


def metric_value(record: Any, metric: str) -> float | None:
    """The record's metric as a finite float, or None when absent or not a number.

    ``worst_holdout_accuracy`` is derived: the lowest held-out group accuracy, so candidates
    can be ranked by the source or signer they do worst on.
    """
    if metric == WORST_HOLDOUT and WORST_HOLDOUT not in record.metrics:
        scores = holdout_scores(record)
        return min(scores.values()) if scores else None
    value = record.metrics.get(metric)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def is_better(candidate: float, current: float, mode: str = "max") -> bool:
    """Strictly better: a tie keeps the model already in production (no churn)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return candidate > current if mode == "max" else candidate < current


def holdout_scores(record: Any) -> dict[str, float]:
    """Held-out group -> accuracy, as training registered it (empty for models without one)."""
    groups = record.metrics.get("holdout") or {}
    scores = {}
    for group, result in groups.items():
        value = result.get("accuracy") if isinstance(result, dict) else result
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            scores[str(group)] = number
    return scores


def holdout_regressions(candidate: Any, previous: Any, tolerance: float = 0.0) -> list[str]:
    """Groups both models were scored on where the candidate is worse by more than tolerance.

    The quality gate: a better in-distribution metric must not be bought with a worse score
    on other signers or sources.
    """
    new, old = holdout_scores(candidate), holdout_scores(previous)
    return [
        f"{group} {new[group]:.4f} < {old[group]:.4f}"
        for group in sorted(set(new) & set(old))
        if new[group] < old[group] - tolerance
    ]


def worst_heldout_shortfall(record: Any, minimum: float) -> str | None:
    """Why ``record`` fails the worst-held-out-group floor ``minimum`` (None: it passes).

    The issue's goal is a floor on people and cameras never seen, so a model is judged by the
    group it does worst on, not by a mean that a strong source could carry.
    """
    if minimum <= 0:
        return None
    scores = holdout_scores(record)
    if not scores:
        return f"it has no held-out group scores to check against --min-worst-heldout {minimum}"
    group = min(scores, key=lambda g: (scores[g], g))
    if scores[group] >= minimum:
        return None
    return f"its worst held-out group {group} {scores[group]:.4f} < --min-worst-heldout {minimum}"


def check_answers_its_classes(record: Any) -> None:
    """Refuse a model with classes it never saw a train row of (training records them)."""
    untrained = record.metrics.get("untrained_classes") or []
    if untrained:
        raise ValueError(
            f"model {record.id} cannot answer class(es) {', '.join(map(str, untrained))} it "
            "claims: it had no train rows of them (for the landmark model: no hand found; see "
            "the ASL_landmarks hand-found report); not promoted"
        )


def other_classes(candidate: Any, previous: Any) -> str | None:
    """Why ``candidate`` cannot replace ``previous`` (None: it can): metrics over other classes
    do not compare (3 classes score above 29), and serving would lose or gain answers."""
    new, old = read_classes(candidate), _registered_classes(previous)
    missing, extra = [c for c in old if c not in new], [c for c in new if c not in old]
    if not old or not (missing or extra):  # production's files lost: only its metrics remain
        return None
    return f"its classes differ from production's (missing {missing}, extra {extra})"


def _registered_classes(record: Any) -> list[str]:
    """The record's class list when its file is the one registered: an altered file of the
    production model (its files unverified here) must not block every later promotion."""
    recorded = (getattr(record, "sha256", None) or {}).get("classes")
    try:
        if recorded and sha256_file(record.classes_path) != recorded:
            return []
    except (OSError, TypeError):
        return []
    return read_classes(record)


def unservable(registry: Any, record: Any) -> str | None:
    """Why production's own files fail their registration check, or None: a retrained model
    that only tied it (the same recipe and seed) had been kept, and every build refused it."""
    verify = getattr(registry, "verify", None)  # the local registry's; ClearML's has none
    try:
        if verify is not None:
            verify(record)
    except ModelIntegrityError as exc:
        return str(exc)
    return None


def decide(registry: Any, opts: SelectBestOptions) -> Decision:
    """Compare ``opts.model_id`` with the current production model; no side effects.

    ``opts.holdout_gate`` off switches the held-out-group gate off.
    """
    model_id, metric, mode, name = opts.model_id, opts.metric, opts.metric_mode, opts.name
    holdout_tolerance = opts.holdout_tolerance if opts.holdout_gate else None
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    candidate = registry.get(model_id)
    check_answers_its_classes(candidate)
    check_promotable(candidate)  # before its class list is compared with production's
    previous = registry.production_scores(name)  # its metrics: its files are not needed
    shortfall = worst_heldout_shortfall(candidate, opts.min_worst_heldout)
    if shortfall and previous is None:
        raise ValueError(f"model {model_id} not promoted: {shortfall}")
    new_value = metric_value(candidate, metric)
    if new_value is None:
        raise ValueError(
            f"model {model_id} has no numeric metric {metric!r}; "
            f"it has: {', '.join(sorted((candidate.metrics or {}).keys())) or 'none'}"
        )
    if previous is None:
        return Decision(
            True, "no production model yet", metric, mode, candidate, None, new_value, None
        )
    old_value = metric_value(previous, metric)
    if previous.id == candidate.id:
        reason = "already the production model"
        return Decision(False, reason, metric, mode, candidate, previous, new_value, old_value)
    changed = other_classes(candidate, previous)
    if changed and opts.class_change and not shortfall:
        reason = f"{changed}: promoted as a change of classes (--class-change)"
        return Decision(True, reason, metric, mode, candidate, previous, new_value, old_value)
    shortfall = shortfall or (changed and f"{changed} (--class-change promotes it)")
    if shortfall:
        reason = f"{shortfall}; kept"
        return Decision(False, reason, metric, mode, candidate, previous, new_value, old_value)
    if old_value is None:  # still gated: a variant record or an older run lacks the metric
        reason = f"production model {previous.id} has no {metric}"
    elif is_better(new_value, old_value, mode):
        reason = f"{metric} {new_value:.4f} beats production {old_value:.4f} ({mode})"
    elif new_value == old_value and (broken := unservable(registry, previous)):
        reason = f"{metric} {new_value:.4f} ties production, which cannot be served: {broken}"
    else:
        reason = (
            f"{metric} {new_value:.4f} does not beat production {old_value:.4f} ({mode}); kept"
        )
        return Decision(False, reason, metric, mode, candidate, previous, new_value, old_value)
    regressions = (
        holdout_regressions(candidate, previous, holdout_tolerance)
        if holdout_tolerance is not None
        else []
    )
    if regressions:
        reason += f", but it regresses on held-out groups: {'; '.join(regressions)}; kept"
        return Decision(False, reason, metric, mode, candidate, previous, new_value, old_value)
    return Decision(True, reason, metric, mode, candidate, previous, new_value, old_value)


def select_best(registry: Any, opts: SelectBestOptions) -> Decision:
    """``decide`` then, if better, ``registry.promote`` (tag ``production`` + publish).

    ``opts.prefer_int8``: the promoted model's INT8 variant (``tasks/optimize_model.py``) is
    served instead when its accuracy stays within ``opts.int8_tolerance`` of the fp32 model's.
    """
    with registry.selecting():  # compared and promoted while no other selection runs
        decision = decide(registry, opts)
        if decision.promoted:
            variant, skipped = None, []
            if opts.prefer_int8:
                variant = int8_variant(registry, decision.candidate, opts.int8_tolerance, skipped)
            if skipped:
                decision.reason += "; " + "; ".join(skipped)
            if variant is not None:
                within = opts.int8_tolerance
                decision.reason += f"; serving its INT8 variant {variant.id} (within {within})"
            decision.candidate = registry.promote((variant or decision.candidate).id)
    return decision


def check_promotable(record: Any) -> None:
    """Refuse a model that no Triton repository can be built from (a class list that disagrees
    with its output width): promoted, it had demoted the served model and left production
    naming one that every later build refused."""
    try:
        check_servable(record.onnx_path, record.classes_path)
    except ValueError as exc:
        raise ValueError(f"model {record.id} not promoted: it cannot be served: {exc}") from None


def compared_accuracies(parent: Any, variant: Any) -> tuple[float | None, float | None]:
    """The two models' accuracy on the same photos: held-out (other people) when both have it,
    else test; a variant's test accuracy against its parent's held-out one compared two sets."""
    both_held_out = all(metric_value(r, "holdout_accuracy") is not None for r in (parent, variant))
    metric = "holdout_accuracy" if both_held_out else "test_accuracy"
    return metric_value(parent, metric), metric_value(variant, metric)


def int8_variant(
    registry: Any, parent: Any, tolerance: float, skipped: list[str] | None = None
) -> Any | None:
    """The newest servable INT8 variant of ``parent`` whose accuracy is within ``tolerance`` of
    it. One that cannot be served (a damaged file) is passed over, its reason added to
    ``skipped``: it used to stop the whole selection, so the better fp32 model was not promoted."""
    for record in reversed(registry.variants(parent, "int8")):
        base, accuracy = compared_accuracies(parent, record)
        if base is None or accuracy is None or accuracy < base - tolerance:
            continue
        try:
            check_promotable(record)
        except ValueError as exc:
            if skipped is not None:
                skipped.append(f"INT8 variant passed over: {exc}")
            continue
        return record
    return None


def _split_of(metric: str) -> str:
    return metric.split("_", 1)[0] if metric.startswith(("val_", "test_")) else "val"


def confusion_matrix(record: Any, metric: str = "val_macro_f1") -> list[list[float]] | None:
    """The record's confusion matrix for the metric's split (None when it has none).

    The decision never depends on it; it is logged beside the decision.
    """
    return find_confusion(record, prefer=(_split_of(metric), "val", "test"))["matrix"]


def log_decision(logger: Any, decision: Decision) -> None:
    """Decision text, both metric values and both confusion matrices in the task's log/plots."""
    logger.report_text(
        f"select_best: {'PROMOTED' if decision.promoted else 'KEPT'}: {decision.reason}"
    )
    for label, value in (
        ("candidate", decision.candidate_value),
        ("production", decision.previous_value),
    ):
        if value is not None:
            logger.report_single_value(f"{decision.metric} ({label})", value)
    for label, record in (
        ("candidate", decision.candidate),
        ("previous production", decision.previous),
    ):
        if record is None:
            continue
        matrix = confusion_matrix(record, decision.metric)
        if matrix is None:
            logger.report_text(f"no confusion matrix found for {label} model {record.id}")
            continue
        labels = read_classes(record) or None
        if labels is not None and len(labels) != len(matrix):
            labels = None
        logger.report_confusion_matrix(
            title="confusion matrix",
            series=f"{label} {record.id}",
            matrix=matrix,
            iteration=0,
            xaxis="predicted",
            yaxis="true",
            xlabels=labels,
            ylabels=labels,
        )
