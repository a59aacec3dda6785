"""client.py, run as the README shows it, against an HTTP server that is not Triton or is
broken: metadata that is not JSON or not of Triton's shape, an answer tritonclient cannot
decode, headers without end, a model input of absurd size. Each is one line on stderr and its
exit code within bounded memory, never a traceback, a MemoryError or the OOM killer (a
100,000 x 100,000 input had the client resize a photo to 24 GB; an endless header took 5.9 GB
in 10 s).
"""

from __future__ import annotations

import json

import pytest
from test_client_hostile_inputs import CONFIGS, MODELS, OUTPUT, StandIn, run_client
from test_client_hostile_server import photos, serve

EXIT_BAD_IMAGE, EXIT_UNREACHABLE, EXIT_NO_MODEL, EXIT_INFER = 1, 3, 4, 5
MEMORY = 1536 << 20


def answering(metadata: bytes | None = None, config: bytes | None = None, infer=None):
    """A stand-in whose metadata, config or infer answer is given raw (else the good one)."""

    class Broken(StandIn):
        def _raw(self, body: bytes, headers: dict | None = None) -> None:
            self.send_response(200)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            ready = self.path.endswith(("/live", "/ready"))
            raw = config if self.path.endswith("/config") else metadata
            if ready or raw is None:
                return super().do_GET()
            self._raw(raw)

        def do_POST(self) -> None:
            if infer is None:
                return super().do_POST()
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._raw(*infer)

    return Broken


def meta(**changes) -> bytes:
    return json.dumps(
        {"name": "pix", "inputs": MODELS["pix"], "outputs": OUTPUT, **changes}
    ).encode()


def infer_answer(output: dict, binary: bytes = b"") -> tuple[bytes, dict]:
    head = json.dumps({"outputs": [{"name": "PROBS", "shape": [1, 1], **output}]}).encode()
    return head + binary, {"Inference-Header-Content-Length": str(len(head))}


BROKEN = {
    "metadata not JSON": ({"metadata": b"<html>sign in</html>"}, EXIT_NO_MODEL, "not Triton's"),
    "metadata nested deep": ({"metadata": b"[" * 200_000}, EXIT_NO_MODEL, "not Triton's"),
    "metadata a list": ({"metadata": b"[]"}, EXIT_NO_MODEL, "Triton's shape"),
    "config not JSON": ({"config": b"oops"}, EXIT_NO_MODEL, "not Triton's"),
    "batch size a word": (
        {"config": json.dumps({**CONFIGS, "max_batch_size": "many"}).encode()},
        EXIT_NO_MODEL,
        "Triton's shape",
    ),
    "shape of words": (
        {"metadata": meta(inputs=[{"name": "i", "datatype": "UINT8", "shape": ["a", 2, 3]}])},
        EXIT_NO_MODEL,
        "Triton's shape",
    ),
    "input of 100,000 px a side": (
        {"metadata": meta(inputs=[{**MODELS["pix"][0], "shape": [-1, 100_000, 100_000, 3]}])},
        EXIT_NO_MODEL,
        "not an image size",
    ),
    "numbers that are words": (
        {"infer": infer_answer({"datatype": "FP32", "data": ["x"]})},
        EXIT_INFER,
        "cannot be read",
    ),
    "binary part too short": (
        {
            "infer": infer_answer(
                {"datatype": "BYTES", "parameters": {"binary_data_size": 9}}, b"\5"
            )
        },
        EXIT_INFER,
        "cannot be read",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_server_is_one_line_within_bounded_memory(case: str) -> None:
    answers, code, words = BROKEN[case]
    server, url = serve(answering(**answers))
    try:
        args = ("--model", "pix", "--url", url, f"--image={photos()[0]}", "--timeout", "10")
        result = run_client(*args, memory=MEMORY)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == "", result.stderr
    (line,) = result.stderr.splitlines()
    assert words in line, line


class EndlessHeaders(StandIn):
    """Live, then every answer is a status line and 60 KB headers without end."""

    def do_GET(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        try:
            while True:
                self.wfile.write(b"X-Pad: " + b"a" * 60_000 + b"\r\n")
        except OSError:  # the client gave up
            pass


def test_endless_headers_are_refused_within_bounded_memory() -> None:
    server, url = serve(EndlessHeaders)
    try:
        args = ("--url", url, f"--image={photos()[0]}", "--timeout", "10")
        result = run_client(*args, memory=MEMORY)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == EXIT_UNREACHABLE, (result.returncode, result.stderr)
    (line,) = result.stderr.splitlines()
    assert "headers over" in line, line
