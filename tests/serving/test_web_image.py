"""The web image's own install is enough: its Dockerfile's pinned ``pip install`` line in a fresh
venv, the package copied as its ``COPY`` does, and the app answers its pages.

No Docker engine runs here, so this is the image's Python half run outside Docker: what a missing
pin or a new import of a package the image lacks would break.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from asl_recognition.netutil import free_port
from asl_recognition.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "triton" / "web" / "Dockerfile"


def pip_requirements(dockerfile: Path) -> list[str]:
    """The packages of the Dockerfile's ``RUN pip install`` line (continuations joined)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if re.match(r"RUN pip install", ln)]
    return [word for word in shlex.split(line)[3:] if not word.startswith("-")]


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def status_of_or_none(url: str) -> int | None:
    try:
        return status_of(url)
    except (urllib.error.URLError, ConnectionError):
        return None


def test_the_web_image_installs_enough_for_the_app(tmp_path: Path) -> None:
    packages = pip_requirements(DOCKERFILE)
    assert any(p.startswith("starlette==") for p in packages)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    image = tmp_path / "opt-asl"  # COPY asl_recognition /opt/asl/asl_recognition
    shutil.copytree(REPO_ROOT / "asl_recognition", image / "asl_recognition")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ASL_"))}
    env.update(PYTHONPATH=str(image), ASL_WORKSPACE=str(tmp_path / "ws"), HOME=str(tmp_path))
    command = [str(venv / "bin" / "python"), "-m", "asl_recognition.web"]
    command += ["--triton", "127.0.0.1:1", "--port", str(port)]  # no Triton: degrades, says so
    app = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while status_of_or_none(base + "/healthz") is None:
            assert app.poll() is None, app.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the app never answered"
            time.sleep(0.3)
        assert status_of(base + "/") == 200
        assert status_of(base + "/status") == 200
        assert status_of(base + "/healthz") == 503  # Triton is not there
    finally:
        app.terminate()
        app.wait(timeout=30)
