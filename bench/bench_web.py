"""Frames/s and latency per frame, page -> web app -> Triton and back (HTTP POST /api/frame, as
the page sends it), against ``client.py``'s direct gRPC on the same photos, interleaved in one
run; the ratio is web frames/s over direct frames/s (goal >= 0.8). One frame in flight, as the
page does. No video-mode shortcut exists: every frame runs the palm detector.

    python bench/bench_web.py [--repo DIR] [--rounds N]   (default: make run's repository)
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from asl_recognition.netutil import free_port  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402
from asl_recognition.paths import REPO_ROOT  # noqa: E402


@dataclass
class WebBenchOptions:
    """Frames/s and latency per frame through the live page's app vs client.py's direct gRPC."""

    repo: str | None = option(None, "Triton repository (default: make run's)")
    rounds: int = option(3, "passes over the bundled test photos", low=1)


def load_client():
    spec = importlib.util.spec_from_file_location("client", REPO_ROOT / "triton/client/client.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["client"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def summary(name: str, times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    row = {"path": name, "frames_per_s": len(ms) / (sum(ms) / 1000), "p50_ms": ms[len(ms) // 2]}
    row["p95_ms"], row["mean_ms"] = ms[int(0.95 * (len(ms) - 1))], statistics.mean(ms)
    return row


def main(argv: list[str] | None = None) -> int:
    from asl_recognition.serving.front import FrontServer
    from asl_recognition.serving.triton_server import TritonServer
    from asl_recognition.web.app import create_app
    from asl_recognition.web.demo import pipeline_repository
    from asl_recognition.web.options import WebOptions

    args = parse(WebBenchOptions, argv, WebBenchOptions.__doc__ or "")
    repo = Path(args.repo) if args.repo else pipeline_repository()
    photos = sorted((REPO_ROOT / "data" / "test_images").glob("*.jpg"))
    blobs = [p.read_bytes() for p in photos]
    client_mod = load_client()
    with TritonServer.on_free_ports(repo, model_control_mode="none") as triton:
        options = WebOptions(triton=triton.grpc_url, port=free_port(), rate=0.0)
        web = FrontServer(create_app(options), "127.0.0.1", options.port, options).start()
        tc, client, spec = client_mod.connect(triton.grpc_url, "grpc", "asl")
        http = httpx.Client(base_url=web.url, timeout=30)
        direct, page = [], []
        try:
            for blob in blobs[:3]:  # warm-up of both paths
                http.post("/api/frame", content=blob)
                client_mod.classify(
                    tc, client, spec, "asl", client_mod.np.array([[blob]], object), 3
                )
            for _ in range(args.rounds):
                for blob in blobs:  # interleaved: one direct, one through the app
                    batch = client_mod.np.array([[blob]], dtype=object)
                    start = time.perf_counter()
                    client_mod.classify(tc, client, spec, "asl", batch, 3)
                    direct.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    assert http.post("/api/frame", content=blob).status_code == 200
                    page.append(time.perf_counter() - start)
        finally:
            http.close()
            client.close()
            web.stop()
    rows = [summary("client.py gRPC (direct)", direct), summary("page -> app -> Triton", page)]
    for row in rows:
        print(
            f"{row['path']:<26} {row['frames_per_s']:6.1f} frames/s  p50 {row['p50_ms']:6.1f} ms"
            f"  p95 {row['p95_ms']:6.1f} ms  ({len(direct)} frames)"
        )
    print(f"ratio web/direct frames/s: {rows[1]['frames_per_s'] / rows[0]['frames_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
