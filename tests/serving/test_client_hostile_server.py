"""client.py, run as the README shows it (alone, from ``/``), against a server that answers
badly: too slowly (gRPC had no deadline at all), without end (an HTTP answer was read whole
into memory), of another shape, or not probabilities (a real tritonserver serving a model whose
output is NaN). Each is one line on stderr and the inference exit code (5), within --timeout,
never a traceback, a hang, or a class printed from an answer that is not one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent import futures
from http.server import ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from asl_testkit.servers import start_server
from test_client_hostile_inputs import CONFIGS, StandIn, run_client
from test_serving_server import CLIENT
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from asl_recognition.classes import write_class_file
from asl_recognition.paths import SAMPLE_TEST_IMAGES
from asl_recognition.serving.repository import build_repository

EXIT_INFER = 5


def photos() -> list[str]:
    return [str(p) for p in sorted(SAMPLE_TEST_IMAGES.glob("*.jpg"))[:2]]


def one_line_refusal(result, *words: str) -> None:
    assert result.returncode == EXIT_INFER, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    for word in words:
        assert word in line, line


class Endless(StandIn):
    """Every infer answer is 1 MiB chunks without end."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
        try:
            while True:
                self.wfile.write(chunk)
        except OSError:  # the client gave up
            pass


def malformed(outputs) -> type[StandIn]:
    """A stand-in whose infer answer is ``outputs(images)``."""

    class Malformed(StandIn):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            header = int(self.headers.get("Inference-Header-Content-Length", len(body)))
            images = json.loads(body[:header])["inputs"][0]["shape"][0]
            self._send({"outputs": outputs(images)})

    return Malformed


def probs(data: list[str], rows: int) -> list[dict]:
    return [{"name": "PROBS", "datatype": "BYTES", "shape": [rows, 1], "data": data}]


MALFORMED = {
    "a row too many": (lambda n: probs(["0.97:0:A"] * (n + 1), n + 1), "shape"),
    "more than top-k": (lambda n: probs(["0.97:0:A"] * (2 * n), 2 * n), "shape"),
    "no output": (lambda n: [], "shape none"),
    "not a class": (lambda n: probs(["garbage"] * n, n), "'garbage'"),
    "nan": (lambda n: probs(["nan:0:A"] * n, n), "'nan:0:A'"),
}


def serve(handler) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_an_answer_of_another_shape_is_one_line(case: str) -> None:
    outputs, word = MALFORMED[case]
    server, url = serve(malformed(outputs))
    try:
        result = run_client("--model", "pix", "--url", url, *(f"--image={p}" for p in photos()))
    finally:
        server.shutdown()
        server.server_close()
    one_line_refusal(result, "inference failed", word)


def test_an_endless_http_answer_is_refused_within_bounded_memory() -> None:
    server, url = serve(Endless)
    try:
        started = time.monotonic()
        result = run_client(
            "--model", "pix", "--url", url, f"--image={photos()[0]}", memory=1536 << 20
        )
    finally:
        server.shutdown()
        server.server_close()
    one_line_refusal(result, "inference failed", "bytes")
    assert time.monotonic() - started < 30


class Stalled(pb_grpc.GRPCInferenceServiceServicer):
    """Live, a 64x64 pixel model with labels; inference never answers (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=True)

    def ModelMetadata(self, request, context):
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            inputs=[tensor(name="images", datatype="UINT8", shape=[-1, 64, 64, 3])],
            outputs=[tensor(name="PROBS", datatype="FP32", shape=[-1, 26])],
        )

    def ModelConfig(self, request, context):
        config = mc.ModelConfig(name=request.name, max_batch_size=8)
        config.output.append(mc.ModelOutput(name="PROBS", label_filename="labels.txt"))
        return pb.ModelConfigResponse(config=config)

    def ModelInfer(self, request, context):
        self.release.wait(120)
        context.abort(grpc.StatusCode.UNAVAILABLE, "released")


def test_a_stalled_grpc_server_is_given_up_after_the_timeout() -> None:
    servicer = Stalled()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        started = time.monotonic()
        result = run_client(
            "--model", "pix", "--protocol", "grpc", "--url", f"127.0.0.1:{port}",
            "--timeout", "2", f"--image={photos()[0]}",
        )  # fmt: skip
        took = time.monotonic() - started
    except subprocess.TimeoutExpired:
        pytest.fail("client.py waited for a stalled gRPC server for over 60 s")
    finally:
        servicer.release.set()
        server.stop(0)
    one_line_refusal(result, "inference failed", "Deadline")
    assert took < 20, took


@pytest.mark.server
def test_a_real_model_answering_nan_prints_no_class(tmp_path: Path) -> None:
    """A model whose probabilities are NaN (a diverged export) is served by a real
    tritonserver; its classification answer "nan:0:A" was printed as "A nan", exit 0."""
    import torch
    from asl_testkit.tiny_models import export_images_model

    class Diverged(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            mean = images.float().mean(dim=(2, 3))
            return mean * float("nan")  # 3 channels -> 3 "probabilities", all NaN

    export_images_model(Diverged(), 24, tmp_path / "model.onnx")
    write_class_file(str(tmp_path / "classes.txt"), ["A", "B", "C"])
    build_repository(tmp_path / "model.onnx", tmp_path / "classes.txt", tmp_path / "repo")
    server = start_server(tmp_path / "repo", tmp_path)
    try:
        for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
            result = subprocess.run(
                [sys.executable, "-I", str(CLIENT), "--url", url, "--protocol", protocol,
                 "--top-k", "3", f"--image={photos()[0]}"],
                capture_output=True, text=True, timeout=60, cwd="/",
            )  # fmt: skip
            one_line_refusal(result, "inference failed", "nan")
    finally:
        server.stop()


class BigInput(StandIn):
    """A pixel model of 1024x1024 inputs (3 MiB an image), batches of up to 8."""

    def do_GET(self) -> None:
        if self.path.endswith("/models/big"):
            tensor = {"name": "images", "datatype": "UINT8", "shape": [-1, 1024, 1024, 3]}
            outputs = [{"name": "PROBS", "datatype": "BYTES", "shape": [-1, 26]}]
            return self._send({"name": "big", "inputs": [tensor], "outputs": outputs})
        if self.path.endswith("/models/big/config"):
            return self._send({"name": "big", **CONFIGS})
        super().do_GET()


def test_a_folder_of_many_images_is_sent_holding_one_batch(tmp_path: Path) -> None:
    """200 photos for a 1024x1024 model: the client held every decoded image (600 MiB) before
    sending the first; it needs one batch of 8 (24 MiB)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(200):
        (folder / f"{index:03d}.jpg").write_bytes(Path(photos()[0]).read_bytes())
    server, url = serve(BigInput)
    measure = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, cwd='/'); "
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "len(done.stdout.splitlines()))"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", measure, sys.executable, "-I", str(CLIENT)]
            + ["--model", "big", "--url", url, "--dir", str(folder)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    code, max_rss_kib, answered = (int(word) for word in result.stdout.split())
    assert (code, answered) == (0, 200), result
    assert max_rss_kib < 350 * 1024, f"{max_rss_kib // 1024} MiB for 200 images"
