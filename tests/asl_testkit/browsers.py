"""A page rendered by a real headless browser (the dashboards' HTML and screenshots)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def chromium_page(url: str, tmp: Path, screenshot: Path | None = None) -> str:
    """Headless Debian chromium: the rendered DOM, and optionally a PNG screenshot."""
    import pytest

    from asl_recognition.monitoring.tools import find_tool

    browser = find_tool("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium missing: run scripts/install_system_deps.sh")
    base = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}",
    ]  # fmt: skip
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [*base, f"--screenshot={screenshot}", "--window-size=1400,1500", url],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert screenshot.is_file() and screenshot.stat().st_size > 10_000, res.stderr[-2000:]
    res = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout
