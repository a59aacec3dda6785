"""Locate and run the Debian Prometheus tools (``promtool``, ``amtool``, both servers)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# Debian names the Alertmanager binary prometheus-alertmanager; upstream tarballs say alertmanager
_CANDIDATES = {
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "amtool": ("amtool",),
}
INSTALL_HINT = (
    "install with scripts/install_system_deps.sh (Debian: prometheus prometheus-alertmanager)"
)


def find_tool(name: str) -> str | None:
    for candidate in _CANDIDATES.get(name, (name,)):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require_tool(name: str) -> str:
    found = find_tool(name)
    if not found:
        raise FileNotFoundError(f"{name} not found on PATH; {INSTALL_HINT}")
    return found


def run_tool(
    name: str, *args: str | Path, timeout: float = 60, cwd: str | Path | None = None
) -> subprocess.CompletedProcess:
    """Run a tool, capturing output; the caller checks ``returncode``."""
    cmd = [require_tool(name), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
