"""What dead tritonservers leave behind, removed only where no live server can own it.

- ``/dev/shm`` regions of the Python backend's stubs: a server killed with its stubs (SIGKILL,
  SIGSEGV) cannot unlink them. Each server names its regions with a prefix of its own
  (:class:`.triton_server.TritonServer`), so a stop removes exactly its own, and a start removes
  those of launchers that are gone. While it runs they are kept 0600 (created 0644).
- ``/tmp/python_env_XXXXXX``: each Python-based backend makes one at start (the path is built
  into the backend) and removes it only on a clean exit, so every killed server leaves one or
  two (642 had piled up on the development machine). An empty one older than every live
  tritonserver belongs to none of them.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from asl_recognition.locks import pid_alive
from asl_recognition.serving.stubs import PROC, proc_stat, servers

SHM_DIR = Path("/dev/shm")
ENV_DIR_GLOB = "/tmp/python_env_*"


def remove_shm_regions(prefix: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Delete the regions named with ``prefix``: one server's (its ``shm_prefix``)."""
    removed = []
    for path in shm_dir.glob(f"{prefix}*"):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path.name)
    return sorted(removed)


def make_regions_private(prefix: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Mode 0600 for the regions named with ``prefix``: the Python backend creates them 0644
    (boost's default, whatever the umask), so any local user could read the photos in flight."""
    changed = []
    for path in shm_dir.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
                changed.append(path.name)
    return sorted(changed)


def remove_orphaned_regions(shm_dir: Path = SHM_DIR) -> list[str]:
    """Delete regions of servers whose launcher is gone (killed with ``kill -9``, say).

    The prefix names the launcher's pid; a region is removed only when that pid is dead and no
    process still maps it (a server that outlived its launcher keeps its regions).
    """
    candidates = [
        path
        for path in shm_dir.glob("asl_triton_*_*_*")
        if path.name.split("_")[2].isdigit() and not pid_alive(int(path.name.split("_")[2]))
    ]
    mapped = _mapped_files() if candidates else set()
    removed = []
    for path in candidates:
        if str(path) not in mapped:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path.name)
    return sorted(removed)


def _mapped_files() -> set[str]:
    """Every file some process maps (``/proc/*/maps``), as its path."""
    mapped = set()
    for maps in PROC.glob("[0-9]*/maps"):
        with contextlib.suppress(OSError):
            for line in maps.read_text().splitlines():
                parts = line.split(None, 5)
                if len(parts) == 6:
                    mapped.add(parts[5].removesuffix(" (deleted)"))
    return mapped


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch); None once it is gone."""
    stat = proc_stat(pid)
    if stat is None:
        return None
    try:
        boot = next(
            float(line.split()[1])
            for line in (PROC / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration):
        return None
    return boot + stat.start_ticks / os.sysconf("SC_CLK_TCK")


def remove_orphaned_env_dirs(pattern: str = ENV_DIR_GLOB) -> list[str]:
    """Remove this user's empty Python-backend env folders made before every live tritonserver
    started (so by servers that are gone); a folder with anything in it is left alone.

    Start times count from the boot time the kernel reports, which moves when the wall clock is
    set forward: a live server's empty folder could then look older. It would be removed only
    while empty, which it stays unless a model sets ``EXECUTION_ENV_PATH`` (none here does)."""
    starts = [t for t in (_started_at(pid) for pid in servers()) if t is not None]
    oldest_live = min(starts, default=time.time()) - 1.0  # the clock tick's rounding
    removed = []
    for path in Path(pattern).parent.glob(Path(pattern).name):
        with contextlib.suppress(OSError):
            st = path.lstat()
            if st.st_uid == os.getuid() and st.st_mtime < oldest_live:
                path.rmdir()  # only when empty
                removed.append(str(path))
    return sorted(removed)
