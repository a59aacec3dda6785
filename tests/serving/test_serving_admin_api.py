"""Triton's admin protocols (shared memory, trace, logging) need ASL_TRITON_ADMIN_KEY, on the
launcher's server and through the server image's entrypoint (asl_recognition/serving/admin_api.py).

Before: any client of the gRPC port could turn tritonserver's verbose logging on or register
shared memory (checked on the real 2.51 binary)."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from asl_testkit.servers import start_server
from test_serving_stubs import _batch, image_folder, image_python
from tritonclient.utils import InferenceServerException

from asl_recognition.netutil import free_port
from asl_recognition.paths import REPO_ROOT
from asl_recognition.processes import http_ready
from asl_recognition.serving.admin_api import GRPC_HEADER, HEADER, KEY_ENV
from asl_recognition.serving.repository import build_repository
from asl_recognition.serving.triton_server import (
    TritonServer,
    TritonServerError,
    assemble_backends,
    server_environment,
)

pytestmark = pytest.mark.server
KEY = "test-admin-key_0123456789"


def _refused(call) -> str:
    with pytest.raises(InferenceServerException) as refused:
        call()
    return str(refused.value)


def _assert_admin_closed_and_inference_open(grpc_url: str, http_url: str) -> None:
    """Without the key: no admin call on either port; with it: the settings; inference open."""
    grpc = tgrpc.InferenceServerClient(grpc_url)
    http = thttp.InferenceServerClient(http_url)
    try:
        calls = [
            lambda: grpc.update_log_settings({"log_verbose_level": 5}),
            lambda: grpc.get_trace_settings(),
            lambda: grpc.register_system_shared_memory("probe", "/asl_probe", 64),
            lambda: grpc.get_system_shared_memory_status(),
        ]
        for call in calls:
            assert "This protocol is restricted" in _refused(call)
        assert "This API is restricted" in _refused(lambda: http.get_log_settings())
        wrong = {GRPC_HEADER: KEY + "x"}
        assert "restricted" in _refused(lambda: grpc.get_log_settings(headers=wrong))
        settings = grpc.get_log_settings(headers={GRPC_HEADER: KEY}, as_json=True)
        assert int(settings["settings"]["log_verbose_level"]["uint32_param"]) == 0
        assert "log_verbose_level" in http.get_log_settings(headers={HEADER: KEY})
        batch = _batch()
        inp = tgrpc.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        probabilities = grpc.infer("asl", [inp]).as_numpy("probabilities")
        assert probabilities.shape == (len(batch), 29)
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    finally:
        grpc.close()
        http.close()


@contextlib.contextmanager
def _local_server(tiny_models, tmp_path: Path, mode: str):
    """A local TritonServer (the launcher's) on model a, and a gRPC client of it."""
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    server = start_server(tmp_path / "repo", tmp_path, model_control_mode=mode)
    grpc = tgrpc.InferenceServerClient(server.grpc_url)
    try:
        yield server, grpc
    finally:
        grpc.close()
        server.stop()


def test_the_launchers_server_keeps_admin_calls_behind_the_key(
    tiny_models, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with _local_server(tiny_models, tmp_path, "none") as (server, _):
        _assert_admin_closed_and_inference_open(server.grpc_url, server.http_url)
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes()
        assert KEY.encode() not in environ  # on the command line only: stubs never see it
    assert KEY not in server.log_path.read_text()


def test_without_a_key_the_admin_calls_are_closed(tiny_models, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with _local_server(tiny_models, tmp_path, "none") as (_, grpc):
        assert "restricted" in _refused(lambda: grpc.get_log_settings())
        for guess in ("", KEY, "None"):
            headers = {GRPC_HEADER: guess}
            assert "restricted" in _refused(lambda: grpc.get_log_settings(headers=headers))
        assert grpc.is_model_ready("asl")


def test_in_explicit_mode_loading_a_model_needs_the_key(
    tiny_models, tmp_path, monkeypatch
) -> None:
    """Only ``explicit`` lets clients load and unload models; there the key guards them too."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with _local_server(tiny_models, tmp_path, "explicit") as (_, grpc):
        assert not grpc.is_model_ready("asl_onnx")
        assert "restricted" in _refused(lambda: grpc.load_model("asl_onnx"))
        assert not grpc.is_model_ready("asl_onnx")
        grpc.load_model("asl_onnx", headers={GRPC_HEADER: KEY})
        assert grpc.is_model_ready("asl_onnx")


def test_a_failed_start_shows_the_command_without_the_key(
    tiny_models, tmp_path, monkeypatch
) -> None:
    """tritonserver exits (its gRPC port is taken): the one-line error shows *** for the key."""
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    monkeypatch.setenv(KEY_ENV, KEY)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = TritonServer(
            tmp_path / "repo",
            http_port=free_port(),
            grpc_port=taken.getsockname()[1],
            metrics_port=free_port(),
            log_path=tmp_path / "failed.log",
        )
        with pytest.raises(TritonServerError) as failed:
            server.start_ready(60)
    shown = str(failed.value.__cause__)  # the chained one line with the command
    assert "--grpc-restricted-protocol=shared-memory,trace,logging:asl-admin-key=***" in shown
    assert KEY not in shown and KEY not in str(failed.value)


def test_a_key_triton_cannot_carry_is_refused_in_one_line(tmp_path) -> None:
    """Triton splits its flag at , : and =; the value is never echoed."""
    bad = "short:key=1,2"
    env = {**os.environ, KEY_ENV: bad}
    launcher = [sys.executable, "-m", "asl_recognition.serving.launcher", "--repo", str(tmp_path)]
    entry = [sys.executable, "-m", "asl_recognition.serving.admin_api", "true"]
    for command in (launcher, entry):
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
        assert proc.returncode == 2, proc.stderr
        assert f"{KEY_ENV} must be 16-128 characters" in proc.stderr and bad not in proc.stderr


@pytest.mark.parametrize(
    "flag", ["--grpc-restricted-protocol=logging:k=v", "--grpc-r=logging:k=v", "--http-restr"]
)
def test_the_entrypoint_refuses_restriction_flags_of_its_own(flag: str) -> None:
    """tritonserver takes an unambiguous abbreviation of a flag: so does the refusal."""
    command = [sys.executable, "-m", "asl_recognition.serving.admin_api", "true", flag]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and f"{flag.split('=')[0]} is set here" in proc.stderr


@pytest.mark.parametrize(
    ("args", "explicit"),
    [
        (["--model-control-mode=poll"], False),
        (["--model-control-mode", "none"], False),
        ([], False),  # Triton's default: none
        (["--model-control-mode=explicit"], True),
        (["--model-control-mode=EXPLICIT"], True),  # Triton reads the mode in any case
        (["--model-cont", "explicit"], True),  # an abbreviation Triton takes
        (["--model-control-mode=poll", "--model-control-mode=explicit"], True),  # the last
        (["--model-control-mode=pol"], True),  # unknown: fails closed
    ],
)
def test_the_repository_protocol_is_restricted_unless_the_mode_refuses_loads(
    args: list[str], explicit: bool
) -> None:
    from asl_recognition.serving.admin_api import _control_mode, restriction_args

    flags = restriction_args(_control_mode(args), KEY)
    assert all(("model-repository" in flag) == explicit for flag in flags)


def test_a_local_server_owns_the_mode_and_the_restriction_flags(monkeypatch, tmp_path) -> None:
    for extra in ("--model-cont=explicit", "--http-restricted-api=logging:k=v"):
        with pytest.raises(ValueError, match="is set by TritonServer"):
            TritonServer(tmp_path, extra_args=[extra])
    monkeypatch.setenv(KEY_ENV, "x")
    with pytest.raises(TritonServerError, match=f"{KEY_ENV} must be 16-128 characters"):
        TritonServer(tmp_path)


def test_mirakurus_debug_line_of_the_command_hides_the_key(caplog, tmp_path) -> None:
    from asl_recognition.child_output import Output
    from asl_recognition.processes import Child

    command = [sys.executable, "-c", "pass", f"--key={KEY}"]
    with caplog.at_level(logging.DEBUG, logger="mirakuru.base"):
        child = Child(command, Output(tmp_path / "child.log"), secrets_in_command=[KEY]).start()
        child.stop()
    assert "Starting process" in caplog.text and "--key=***" in caplog.text
    assert KEY not in caplog.text


def test_the_entrypoint_reads_the_mode_as_triton_does(tiny_models, tmp_path, monkeypatch) -> None:
    """``EXPLICIT`` is explicit mode to Triton: loading needs the key there too."""
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    shape = TritonServer.on_free_ports(tmp_path / "repo", exit_timeout_secs=1)
    shape._backend_dir = assemble_backends(tmp_path / "backends")
    flags = [arg for arg in shape.command() if "restricted" not in arg]
    flags = [a for a in flags if not a.startswith(("--model-control", "--repository-poll"))]
    entry = [sys.executable, "-m", "asl_recognition.serving.admin_api"]
    command = entry + flags[:1] + flags[1:] + ["--model-control-mode=EXPLICIT"]
    env = {**server_environment(), KEY_ENV: KEY, "PYTHONPATH": str(REPO_ROOT)}
    with _running(command, env, shape.http_url, tmp_path / "server.log") as server:
        grpc = tgrpc.InferenceServerClient(shape.grpc_url)
        try:
            assert not grpc.is_model_ready("asl_onnx")
            assert "restricted" in _refused(lambda: grpc.load_model("asl_onnx"))
            grpc.load_model("asl_onnx", headers={GRPC_HEADER: KEY})
            assert grpc.is_model_ready("asl_onnx") and server.poll() is None
        finally:
            grpc.close()


@contextlib.contextmanager
def _running(command: list[str], env: dict[str, str], http_url: str, log_path: Path):
    """``command`` (a tritonserver behind its entrypoint) running until ready, stopped after."""
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while not http_ready(f"http://{http_url}/v2/health/ready"):
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=60)


def _image_entrypoint(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """The image's ``/bin/sh /opt/asl/entrypoint.sh`` on a copy laid out as in the image (the
    package and the script in one folder), with the image's Python 3.10 as ``python3``; what
    that starts gets ``env``'s PATH back (the local Python stubs find their packages by it)."""
    image = image_folder(tmp_path)
    shim = tmp_path / "bin" / "python3"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nPATH={shlex.quote(env["PATH"])} exec {image_python()} "$@"\n')
    shim.chmod(0o755)
    env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"
    return ["/bin/sh", str(image / "entrypoint.sh")]


def test_the_server_images_entrypoint_starts_triton_with_admin_behind_the_key(
    tiny_models, tmp_path
) -> None:
    """NVIDIA's entrypoint runs ``exec "$@"``: this is what it runs, with the image's CMD."""
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    shape = TritonServer.on_free_ports(tmp_path / "repo", exit_timeout_secs=1)
    shape._backend_dir = assemble_backends(tmp_path / "backends")
    flags = [arg for arg in shape.command() if "restricted" not in arg]
    env = {**server_environment(), KEY_ENV: KEY}
    command = _image_entrypoint(tmp_path, env) + flags
    with _running(command, env, shape.http_url, tmp_path / "server.log") as server:
        # sh and python3 exec'd: the same pid is tritonserver, without the key in its environment
        assert Path(f"/proc/{server.pid}/comm").read_text().strip() == "tritonserver"
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith((KEY_ENV.encode(), b"PYTHONPATH="))]
        _assert_admin_closed_and_inference_open(shape.grpc_url, shape.http_url)
    assert KEY not in (tmp_path / "server.log").read_text()
