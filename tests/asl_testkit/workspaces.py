"""An offline workspace for fixtures wider than one test."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def offline_workspace(ws: Path) -> Iterator[None]:
    """``ASL_WORKSPACE=ws`` with ClearML offline and no server configured, for a fixture wider
    than one test (the ``monkeypatch`` fixture is per test)."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASL_WORKSPACE", str(ws))
        mp.setenv("ASL_OFFLINE", "1")
        for key in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY"):
            mp.delenv(key, raising=False)
        yield
