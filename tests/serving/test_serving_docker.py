"""Production files checked offline: hadolint on every Dockerfile, compose against its spec."""

from __future__ import annotations

import json
import re
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
    assert services["triton"]["build"] == {
        "context": "..",
        "dockerfile": "triton/server/Dockerfile",
    }
    assert services["client"]["build"]["context"] == "./client"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} substitution, enough for the port strings checked here."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), text)


def _server_command() -> list[str]:
    text = (REPO_ROOT / "triton" / "server" / "Dockerfile").read_text()
    (cmd,) = [line for line in text.splitlines() if line.startswith("CMD ")]
    return json.loads(cmd[4:])


def test_compose_publishes_inference_only_through_the_front() -> None:
    """Triton's HTTP and gRPC are not published (no size cap in 2.51): the front is, on loopback
    unless told otherwise; Triton's metrics stay on loopback."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("triton", "triton-gpu"):
        assert [interpolate(p, {}) for p in services[name]["ports"]] == ["127.0.0.1:8002:8002"]
        assert "--backend-config=python,shm-growth-byte-size=4194304" in services[name]["command"]
    front = services["front"]
    assert front["build"] == {"context": "..", "dockerfile": "triton/front/Dockerfile"}
    assert front["command"][:2] == ["--upstream", "http://triton:8000"]
    (port,) = front["ports"]
    assert interpolate(port, {}) == "127.0.0.1:8000:8000"
    env = {"ASL_FRONT_BIND": "0.0.0.0", "ASL_TRITON_HTTP_PORT": "18000"}
    assert interpolate(port, env) == "0.0.0.0:18000:8000"


def test_compose_gives_triton_time_to_drain() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("triton", "triton-gpu"):
        (flag,) = [a for a in services[name]["command"] if a.startswith("--exit-timeout-secs=")]
        grace = services[name]["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > int(flag.split("=")[1]) + 5
    assert "--exit-timeout-secs=30" in _server_command()


def test_gpu_profile_reserves_the_gpu_and_keeps_tensorrt_engines() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert "profiles" not in services["triton"] and "deploy" not in services["triton"]
    gpu = services["triton-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["command"] == services["triton"]["command"]
    # The repository generator's default engine cache folder, on a writable volume.
    from asl_recognition.serving.configs import DEFAULT_TRT_CACHE_DIR

    assert (
        f"trt-cache:{DEFAULT_TRT_CACHE_DIR}" in gpu["volumes"]
        and "trt-cache" in compose["volumes"]
    )
    assert "triton" in gpu["networks"]["default"]["aliases"]
    # the gpu profile's client waits for the GPU server and starts no CPU server
    client_gpu = services["client-gpu"]
    assert client_gpu["profiles"] == ["gpu"] and set(client_gpu["depends_on"]) == {"triton-gpu"}
    assert client_gpu["command"] == services["client"]["command"]
    assert (
        "--gpus" in COMPOSE.read_text()
        and "--stop-timeout" in (REPO_ROOT / "triton" / "server" / "Dockerfile").read_text()
    )


def test_server_image_starts_triton_through_nvidias_entrypoint_then_the_admin_key() -> None:
    """NVIDIA's entrypoint first (driver checks, banner), then ours: tritonserver with its admin
    protocols behind ASL_TRITON_ADMIN_KEY (run as the image runs it in test_serving_admin_api)."""
    text = (REPO_ROOT / "triton" / "server" / "Dockerfile").read_text()
    (entry,) = [line for line in text.splitlines() if line.startswith("ENTRYPOINT ")]
    assert json.loads(entry[len("ENTRYPOINT ") :]) == [
        "/opt/nvidia/nvidia_entrypoint.sh",
        "/bin/sh",
        "/opt/asl/entrypoint.sh",
        "tritonserver",
    ]
    assert "COPY triton/server/entrypoint.sh /opt/asl/entrypoint.sh" in text.splitlines()
    ignore = (REPO_ROOT / "triton" / "server" / "Dockerfile.dockerignore").read_text()
    assert "!triton/server/entrypoint.sh" in ignore.splitlines()
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("triton", "triton-gpu"):
        assert services[name]["environment"] == ["ASL_TRITON_ADMIN_KEY"]


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\n")
    proc = subprocess.run([str(BIN / "hadolint"), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_server_image_carries_the_hand_pipeline_package() -> None:
    """The <model>_hands step imports asl_recognition: copied in, found via ASL_PACKAGE_ROOT,
    with cp310 pins; the context sends nothing else (no .venv, no data) but the entrypoint."""
    text = (REPO_ROOT / "triton" / "server" / "Dockerfile").read_text()
    assert "COPY asl_recognition /opt/asl/asl_recognition" in text
    assert "ENV ASL_PACKAGE_ROOT=/opt/asl" in text
    assert "pillow==12.0.0" in text  # Pillow 13 has no cp310 wheel
    # the LiteRT that computed the training table's features (1.4 moved them by up to 0.008)
    (litert,) = [
        line.split("#")[0].strip()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith("ai-edge-litert==")
    ]
    assert f" {litert} " in text
    ignore = (REPO_ROOT / "triton" / "server" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") :] == [
        "*",
        "!asl_recognition",
        "!triton/server/entrypoint.sh",
        "**/__pycache__",
    ]
    source = (REPO_ROOT / "asl_recognition" / "serving" / "hands_model.py").read_text()
    assert 'os.environ.get("ASL_PACKAGE_ROOT"' in source


def server_healthcheck() -> list[str]:
    """The server image's ``HEALTHCHECK CMD``, in its exec form."""
    text = (REPO_ROOT / "triton" / "server" / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("HEALTHCHECK ")]
    return json.loads(line[line.index(" CMD ") + 5 :])


def test_server_health_checks_stop_a_server_with_a_dead_stub() -> None:
    """Triton keeps a model whose stub was killed "ready": the image's and compose's checks run
    the stub check (tests/serving/test_serving_stubs.py) from where the package is copied, with
    --stop-server so that the restart policy starts a new server, and only then the ready one."""
    check = "cd /opt/asl && python3 -m asl_recognition.serving.stubs --stop-server && python3 -c"
    ready = "urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"
    shell, flag, command = server_healthcheck()
    assert (shell, flag) == ("/bin/sh", "-c") and check in command and ready in command
    triton = yaml.safe_load(COMPOSE.read_text())["x-triton"]
    kind, command = triton["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and check in command and ready in command
    assert triton["restart"] == "unless-stopped"
    # an init adopts orphans: tritonserver's only children are its stubs
    dockerfile = (REPO_ROOT / "triton" / "server" / "Dockerfile").read_text()
    assert triton["init"] is True and "docker run --rm --init" in dockerfile


def test_the_front_image_runs_the_front_with_only_what_it_installs() -> None:
    """The front's image installs starlette, uvicorn and httpx (its Dockerfile's pip line) and
    copies the package: an import of the build's modules (protobuf, tritonclient, onnx) had
    made it fail at start. Here every other third-party package is refused at import, and the
    front's CLI must still answer --help."""
    dockerfile = (REPO_ROOT / "triton/front/Dockerfile").read_text()
    (pip_line,) = [line for line in dockerfile.splitlines() if "pip install" in line]
    installed = {re.split(r"[=<>\[]", word)[0] for word in pip_line.split() if "==" in word}
    assert installed == {"starlette", "uvicorn", "httpx"}, pip_line
    guard = (
        "import sys, importlib.abc\n"
        # what pip installs for the three pins (pip install --dry-run --report), and the package
        "ALLOWED = {'starlette', 'uvicorn', 'httpx', 'h11', 'anyio', 'idna', 'certifi',\n"
        "           'httpcore', 'click', 'typing_extensions', 'asl_recognition'}\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        top = name.split('.')[0]\n"
        "        if top in sys.stdlib_module_names or top in ALLOWED or top.startswith('_'):\n"
        "            return None\n"
        "        raise ModuleNotFoundError(f'the front image has no {top}', name=top)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "sys.argv = ['front', '--help']\n"
        "import runpy; runpy.run_module('asl_recognition.serving.front', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", guard], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--upstream" in proc.stdout, proc.stderr[-2000:]


def test_no_documented_docker_run_publishes_tritons_own_http_port() -> None:
    """Any web page a browser on the host opens can POST to 127.0.0.1 as a simple request, and
    one of another origin crashed tritonserver 2.51 (400 KB of ``[``): HTTP goes via the front."""
    for path in (
        REPO_ROOT / "triton" / "server" / "Dockerfile",
        REPO_ROOT / "docs" / "serving.md",
    ):
        text = path.read_text(encoding="utf-8")
        runs = re.findall(r"docker run [^`]*?asl-triton-server", text, re.S)
        assert runs, path
        assert not any(re.search(r"-p \S*:8000\b", run) for run in runs), (path, runs)
