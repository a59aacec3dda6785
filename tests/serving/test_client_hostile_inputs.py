"""client.py, run as the README shows it (alone, from ``/``), on hostile files and folders: each
is one line on stderr with the bad-image exit code (1), never a traceback, and the answers of
the other images are printed.

The server is a stand-in speaking Triton's HTTP API on loopback (the client only needs its
model metadata, config and infer answers): ``asl`` takes photo bytes, ``pix`` 64x64 pixels.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_decode_progressive import empty_scans_jpeg, one_scan_per_component_jpeg
from test_serving_server import CLIENT

from asl_recognition.paths import SAMPLE_TEST_IMAGES

OUTPUT = [{"name": "PROBS", "datatype": "BYTES", "shape": [-1, 26]}]
CONFIGS = {"output": [{"name": "PROBS", "label_filename": "labels.txt"}], "max_batch_size": 8}
MODELS = {
    "asl": [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1, 1]}],
    "pix": [{"name": "images", "datatype": "UINT8", "shape": [-1, 64, 64, 3]}],
}


class StandIn(BaseHTTPRequestHandler):
    """Triton's HTTP v2 routes the client uses; every image is answered "A" at 0.97."""

    protocol_version = "HTTP/1.1"

    def _send(self, obj: dict, code: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")  # v2 / health / live, v2 / models / m [/ x]
        if parts[1:] == ["health", "live"] or parts[3:] == ["ready"]:
            return self._send({})
        model = parts[2] if len(parts) > 2 else ""
        if model not in MODELS:
            return self._send({"error": f"unknown model {model}"}, 404)
        if parts[3:] == ["config"]:
            return self._send({"name": model, **CONFIGS})
        self._send({"name": model, "inputs": MODELS[model], "outputs": OUTPUT})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        header = int(self.headers.get("Inference-Header-Content-Length", len(body)))
        images = json.loads(body[:header])["inputs"][0]["shape"][0]
        answer = {"name": "PROBS", "datatype": "BYTES", "shape": [images, 1]}
        self._send({"outputs": [{**answer, "data": ["0.97:0:A"] * images}]})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def triton_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_client(*args: str, env: dict | None = None, prefix: tuple = (), memory: int = 0):
    """client.py alone (``-I`` unless ``env`` is given, as a user's shell would), from ``/``,
    within ``memory`` bytes of address space when given."""
    isolated = () if env else ("-I",)
    limit = (lambda: resource.setrlimit(resource.RLIMIT_AS, (memory, memory))) if memory else None
    return subprocess.run(
        [*prefix, sys.executable, *isolated, str(CLIENT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=env,
        preexec_fn=limit,
    )


def a_photo() -> bytes:
    return sorted(SAMPLE_TEST_IMAGES.glob("*.jpg"))[0].read_bytes()


def test_jpeg_bombs_of_many_scans_are_one_line_each(triton_url, tmp_path: Path) -> None:
    """Before: 11 s of CPU for the 70 KB of empty scans, then both were decoded and sent."""
    scans, layered = tmp_path / "scans.jpg", tmp_path / "layered.jpg"
    scans.write_bytes(empty_scans_jpeg(6000, 6000, 5000))
    layered.write_bytes(one_scan_per_component_jpeg(6000, 6000))
    (tmp_path / "photo.jpg").write_bytes(a_photo())
    start = time.perf_counter()
    proc = run_client("--dir", str(tmp_path), "--url", triton_url, "--model", "pix")
    assert time.perf_counter() - start < 10  # the interpreter, imports and one request
    assert proc.stdout == f"{tmp_path / 'photo.jpg'}: A 0.9700\n", proc.stderr
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        f"error: {layered}: not an image (decompression bomb: 6000x6000, 108000000 samples in "
        "its 3 component(s), over the bound of 40000000 (a JPEG of several scans is held "
        "whole at full size, not reduced); refused undecoded)",
        f"error: {scans}: not an image (decompression bomb: a JPEG of over 100 scans (a photo "
        "has about 10); refused undecoded)",
    ]


def test_a_huge_webp_is_refused_unread(triton_url, tmp_path: Path) -> None:
    """Before: Pillow's WebP reader read all 3 GB while opening: a MemoryError traceback."""
    webp = tmp_path / "huge.webp"
    webp.write_bytes(b"RIFF\xf4\xff\xff\xbfWEBPVP8 ")
    os.truncate(webp, 3 << 30)  # sparse
    proc = run_client("--image", str(webp), "--url", triton_url, "--model", "pix", memory=2 << 30)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: {webp}: not an image (file too large: 3221225472 bytes, over the limit of "
        "26214400 for a JPEG or WebP file (read whole to open))"
    ]


def test_a_file_name_that_is_not_utf8_keeps_every_answer(triton_url, tmp_path: Path) -> None:
    """Before: a strict UTF-8 stdout raised UnicodeEncodeError on the name: no answer printed."""
    for name in (b"caf\xe9.jpg", b"ok.jpg"):
        (tmp_path / os.fsdecode(name)).write_bytes(a_photo())
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONIOENCODING": "utf-8"}  # as in a terminal
    proc = run_client("--dir", str(tmp_path), "--url", triton_url, env=env)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.splitlines() == [
        f"{tmp_path}/caf\\udce9.jpg: A 0.9700",
        f"{tmp_path}/ok.jpg: A 0.9700",
    ]


def modes_enforced() -> tuple:
    """A command prefix under which a folder's mode holds: none for a user; for root (which
    ignores modes) setpriv without the two capabilities that override them."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search")
    if not setpriv or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("root ignores folder modes, and setpriv cannot drop that here")
    return prefix


def test_a_folder_that_cannot_be_listed_is_one_line(tmp_path: Path) -> None:
    """Before: a PermissionError traceback."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "A.jpg").write_bytes(a_photo())
    locked.chmod(0)
    try:
        proc = run_client("--dir", str(locked), "--url", "127.0.0.1:9", prefix=modes_enforced())
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"error: --dir {locked} cannot be read: Permission denied\n"
