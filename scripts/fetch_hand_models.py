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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.hands.models import ModelFileError, ensure_models  # noqa: E402
from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402

DESCRIPTION = __doc__.splitlines()[0]


@dataclass(frozen=True)
class FetchOptions:
    """Where the hand models go, and an offline copy of the wheel they come from."""

    dest: str | None = option(None, "folder for the model files")
    wheel: str | None = option(None, "local copy of the wheel")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`FetchOptions` (also for the README table)."""
    return build_options_parser(FetchOptions, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    options = parse(FetchOptions, argv, DESCRIPTION)
    try:
        folder = ensure_models(options.dest, wheel=options.wheel)
    except (ModelFileError, OSError) as exc:
        print(f"fetch_hand_models: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
