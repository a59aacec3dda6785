"""Production files checked offline: hadolint on every Dockerfile, compose against its spec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from asl_recognition.paths import REPO_ROOT

BIN = Path(sys.executable).parent
DOCKERFILES = sorted((REPO_ROOT / "triton").rglob("Dockerfile"))
COMPOSE = REPO_ROOT / "triton" / "docker-compose.yml"


def test_hadolint_passes_on_every_dockerfile() -> None:
    assert {p.parent.name for p in DOCKERFILES} >= {"server", "client"}
    proc = subprocess.run(
        [str(BIN / "hadolint"), *map(str, DOCKERFILES)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_server_image_is_triton_2_51_without_the_local_stand_in() -> None:
    text = (REPO_ROOT / "triton" / "server" / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in text
    instructions = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any("backends" in line for line in instructions if line.startswith(("COPY", "ADD")))


def test_compose_file_follows_the_compose_spec() -> None:
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["triton"]["build"]["context"] == "./server"
    assert services["client"]["build"]["context"] == "./client"
    assert {"8000:8000", "8001:8001", "8002:8002"} <= set(services["triton"]["ports"])


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\n")
    proc = subprocess.run([str(BIN / "hadolint"), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout
