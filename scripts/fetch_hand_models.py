"""Fetch and verify the hand models (palm detector, 21-point landmarker) once, for every stage.

    python scripts/fetch_hand_models.py [--dest DIR] [--wheel PATH]

Downloads the pinned ``mediapipe==0.10.21`` wheel with pip, checks its sha256, extracts the
four ``.tflite`` files (and the licence) into DIR (default: env ``ASL_HAND_MODELS``, else
``.cache/hand_models``) and checks each file's sha256. Verified files already there mean no
network at all; a damaged file is fetched again. ``--wheel`` uses a local copy of the wheel on
an offline machine. Exit status 1 with a one-line reason when the files cannot be had. Tasks fetch
missing files into the same folder themselves (``hands.models.hand_models``); this script is for
machines that must work offline later, and for repairing an altered file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.hands.models import ModelFileError, ensure_models  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None, help="folder for the model files")
    parser.add_argument("--wheel", type=Path, default=None, help="local copy of the wheel")
    args = parser.parse_args(argv)
    try:
        folder = ensure_models(args.dest, wheel=args.wheel)
    except (ModelFileError, OSError) as exc:
        print(f"fetch_hand_models: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
