"""Shared ending of every bench: print the Markdown table, keep it and the raw numbers as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(result: dict[str, Any], table: str, out: str | Path) -> Path:
    """Print ``table`` and write ``result`` plus the table to ``out`` (the README quotes it)."""
    print()
    print(table)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "markdown": table}, indent=2))
    print(f"\nresults: {path}")
    return path
