"""Score a running server on labelled photos through the user's own command, ``client.py --dir``.

    python scripts/score_served.py ../shared/data/asl_roboflow_letters [--url localhost:8000]

The folder holds ``<CLASS>/*`` photos. Every class folder goes through ``triton/client/client.py
--dir FOLDER/<CLASS> --json``, exactly as a user would classify them; a photo with no hand found
counts as wrong (unless its class is ``nothing``), and so does a photo the client could not read
or the server refused (each is named on stderr). Prints accuracy, the hand-found rate and the
weakest classes, and writes the JSON answers beside the summary with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from asl_recognition.options import HelpFormatter, add_options, from_mapping, option  # noqa: E402

CLIENT = REPO_ROOT / "triton" / "client" / "client.py"
DESCRIPTION = __doc__.split("\n\n")[0]


@dataclass(frozen=True)
class ScoreOptions:
    """Which server and model answer; where the answers go."""

    url: str = option("localhost:8000", "Triton HTTP address")
    model: str = option("asl", "served model name")
    out: str | None = option(None, "write the summary and every answer to this JSON file")


def classify_folder(folder: Path, options: ScoreOptions) -> tuple[list[dict], list[str]]:
    """The client's JSON answers for one class folder (one item per photo), and its error line
    for each photo it could not classify: those count as wrong, not as never taken."""
    command = [sys.executable, str(CLIENT), "--dir", str(folder), "--url", options.url]
    done = subprocess.run(
        [*command, "--model", options.model, "--json"], capture_output=True, text=True, check=False
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    listed = done.returncode == 1 and not done.stdout.strip()  # the folder itself was refused
    if done.returncode not in (0, 1) or (listed and "no images given" not in done.stderr):
        raise SystemExit(f"client.py failed on {folder}: {done.stderr.strip()[-500:]}")
    answers = json.loads(done.stdout or "[]")
    return answers, [] if listed else errors


def score(answers: dict[str, list[dict]], refused: dict[str, list[str]] | None = None) -> dict:
    """Accuracy (no hand = wrong, not classified = wrong), hand-found rate, per-class accuracy."""
    refused = refused or {}
    total = right = hands = 0
    per_class = {}
    for label, items in answers.items():
        hits = sum(1 for item in items if item["predictions"][0]["label"] == label)
        taken = len(items) + len(refused.get(label, []))
        per_class[label] = hits / taken if taken else None
        total += taken
        right += hits
        hands += sum(1 for item in items if item.get("hand_found", True))
    return {
        "images": total,
        "accuracy": right / total if total else None,
        "hand_found_rate": hands / total if total else None,
        "per_class": per_class,
        "not_classified": sum(len(lines) for lines in refused.values()),
    }


def build_parser() -> argparse.ArgumentParser:
    """The folder (positional), then the flags generated from :class:`ScoreOptions`."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("folder", help="labelled photos: <folder>/<CLASS>/*")
    add_options(parser, ScoreOptions)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    values = vars(parser.parse_args(argv))
    folder = Path(values.pop("folder"))
    options = from_mapping(ScoreOptions, values)  # each value was typed by its flag already
    if not folder.is_dir():
        parser.error(f"{folder} is not a folder of <CLASS>/ photo folders")
    folders = sorted(p for p in folder.iterdir() if p.is_dir())
    answered = {f.name: classify_folder(f, options) for f in folders}
    answers = {label: items for label, (items, _) in answered.items()}
    refused = {label: lines for label, (_, lines) in answered.items() if lines}
    for line in (line for lines in refused.values() for line in lines):
        print(line, file=sys.stderr)
    summary = score(answers, refused)
    if not summary["images"]:
        parser.error(f"{folder} has no photo in a <CLASS>/ folder")
    weakest = sorted((v, k) for k, v in summary["per_class"].items() if v is not None)[:5]
    print(
        f"{folder}: accuracy {summary['accuracy']:.3f} on {summary['images']} photos, "
        f"hand found in {summary['hand_found_rate']:.1%}; weakest: "
        + ", ".join(f"{k} {v:.2f}" for v, k in weakest)
        + (f"; {summary['not_classified']} not classified (counted wrong)" if refused else "")
    )
    if options.out:
        Path(options.out).write_text(json.dumps({**summary, "answers": answers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
