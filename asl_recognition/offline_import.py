"""Import every offline ClearML session this workspace recorded into the configured server.

    python -m asl_recognition.offline_import [--sessions FILE]

Each task run offline appends its session zip to ``<workspace>/offline_sessions.jsonl`` by
absolute path. A moved workspace's lines name the old place (a one-line import stopped at the
first, "Could not find the session folder", and imported nothing) and a copied one's name the
other workspace's zips, so each zip is looked up in this workspace's offline cache first
(``<workspace>/clearml_cache/offline``, where offline runs keep them), then where it was
recorded. One line per session; exit 1 when any could not be imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from asl_recognition.options import build_parser as build_options_parser
from asl_recognition.options import from_mapping, option
from asl_recognition.paths import workspace

PROG = "python -m asl_recognition.offline_import"
SESSIONS_FILE = "offline_sessions.jsonl"


@dataclass(frozen=True)
class OfflineImportOptions:
    """Which record of offline sessions to import."""

    sessions: str = option("", f"the sessions file (default: <workspace>/{SESSIONS_FILE})")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`OfflineImportOptions` (also for the docs)."""
    parser = build_options_parser(OfflineImportOptions, __doc__.split("\n\n")[0])
    parser.prog = PROG
    return parser


def session_zips(sessions: Path, offline: Path) -> list[Path]:
    """Every recorded zip, this workspace's copy first; unreadable lines are skipped."""
    found = []
    for line in sessions.read_text(encoding="utf-8").splitlines():
        try:
            recorded = Path(json.loads(line)["zip"])
        except (ValueError, KeyError, TypeError):
            continue
        here = offline / recorded.name
        found.append(here if here.is_file() else recorded)
    return found


def main(argv: list[str] | None = None) -> int:
    options = from_mapping(OfflineImportOptions, vars(build_parser().parse_args(argv)))
    sessions = Path(options.sessions) if options.sessions else workspace() / SESSIONS_FILE
    if not sessions.is_file():
        print(f"offline_import: error: {sessions}: no offline sessions recorded", file=sys.stderr)
        return 2
    from clearml import Task

    failed = 0
    for zipped in session_zips(sessions, workspace() / "clearml_cache" / "offline"):
        try:
            print(f"{zipped}: imported as task {Task.import_offline_session(str(zipped))}")
        except Exception as exc:  # the SDK raises ValueError, requests' errors, ...
            failed += 1
            print(f"offline_import: {zipped}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
