"""The Python backend's shared-memory regions hold every request's bytes (a client's photo,
whole) and are created 0644 whatever the umask: while a server runs they are its user's alone.
"""

from __future__ import annotations

import time

import numpy as np
import tritonclient.http as thttp
from asl_testkit.servers import start_server

from asl_recognition.serving.leftovers import SHM_DIR
from asl_recognition.serving.repository import build_repository


def _modes(prefix: str) -> dict[str, int]:
    return {path.name: path.stat().st_mode & 0o777 for path in SHM_DIR.glob(f"{prefix}*")}


def test_regions_are_private_once_ready_and_stay_so(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, tmp_path / "repo")
    server = start_server(tmp_path / "repo", tmp_path, poll_secs=1, exit_timeout_secs=3)
    try:
        modes = _modes(server.shm_prefix)
        assert modes and set(modes.values()) == {0o600}, modes
        client = thttp.InferenceServerClient(server.http_url)
        batch = np.zeros((1, 3, a.image_size, a.image_size), np.uint8)
        inp = thttp.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        assert client.infer("asl", [inp]).as_numpy("probabilities").shape == (1, 29)
        client.close()
        time.sleep(1.5)
        assert server.running()
        assert set(_modes(server.shm_prefix).values()) == {0o600}
    finally:
        server.stop()
