"""Render the checked-in rule files for the Docker path (``triton/monitoring/rules``).

Defaults give the uniform class baseline of a balanced training set; pass ``--baseline`` with the
production model's ``baseline.json`` (or ``auto``) and ``--set``/``ASL_ALERT_*`` to tune
thresholds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asl_recognition.classes import CLASSES

from .alert_rules import write_rules
from .baseline import uniform_baseline
from .settings import add_threshold_options, thresholds_from_cli
from .stack import resolve_baseline

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "triton" / "monitoring"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m asl_recognition.monitoring.render", description=__doc__
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder; rules go to OUT/rules/")
    p.add_argument(
        "--baseline",
        default="uniform",
        help="uniform (balanced classes), auto (registry production model), or a path",
    )
    add_threshold_options(p)
    args = p.parse_args(argv)
    thresholds = thresholds_from_cli(p, args)
    if args.baseline == "uniform":
        baseline = uniform_baseline(list(CLASSES))
    else:
        baseline = resolve_baseline(args.baseline)
    for path in write_rules(Path(args.out) / "rules", thresholds, baseline):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
