"""Render the checked-in rule files for the Docker path (``triton/monitoring/rules``).

Defaults give the uniform class baseline of a balanced training set; pass ``--baseline`` with the
production model's ``baseline.json`` (or ``auto``) and ``--set``/``ASL_ALERT_*`` to tune
thresholds.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from asl_recognition.classes import CLASSES
from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import option

from .alert_rules import write_rules
from .baseline import uniform_baseline
from .settings import ThresholdOptions, parse_cli
from .stack import baseline_for

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "triton" / "monitoring"
PROG = "python -m asl_recognition.monitoring.render"
DESCRIPTION = __doc__


@dataclass(frozen=True)
class RenderOptions(ThresholdOptions):
    """Where the rule files go and which drift baseline they carry."""

    out: str = option(str(DEFAULT_OUT), "folder; rules go to OUT/rules/")
    baseline: str = option(
        "uniform", "uniform (balanced classes), auto (registry production model), or a path"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`RenderOptions` (also for the README table)."""
    parser = build_options_parser(RenderOptions, DESCRIPTION)
    parser.prog = PROG
    return parser


def main(argv: list[str] | None = None) -> int:
    options, thresholds = parse_cli(RenderOptions, argv, PROG, DESCRIPTION)
    if options.baseline == "uniform":
        baseline = uniform_baseline(list(CLASSES))
    else:
        baseline = baseline_for(options.baseline)
    for path in write_rules(Path(options.out) / "rules", thresholds, baseline):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
