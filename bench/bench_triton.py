"""Load-generate against the real local tritonserver and compare with in-process onnxruntime.

    python bench/bench_triton.py [--model-id production | --onnx M --classes C] [--seconds 3]

For concurrency 1, 4 and 16 (closed loop: each of N threads sends one image, waits, repeats),
with dynamic batching on and off, it reports throughput (images/s), p50/p99 latency, the mean
batch Triton formed (from its own metrics), and the ratio of the throughput to in-process
onnxruntime on the same ONNX file measured in the same run. Built on tritonclient, because PyPI
perf-analyzer is an empty 0.1.0 on this Python/glibc. Every loop is bounded (seconds and count).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from bench_report import publish  # noqa: E402
from PIL import Image  # noqa: E402

from asl_recognition.imageio import load_rgb  # noqa: E402
from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402
from asl_recognition.paths import REPO_ROOT, SAMPLE_TEST_IMAGES  # noqa: E402
from asl_recognition.serving.onnx_introspect import read_signature  # noqa: E402
from asl_recognition.serving.repository import build_repository  # noqa: E402
from asl_recognition.serving.sources import model_files  # noqa: E402
from asl_recognition.serving.triton_server import TritonServer  # noqa: E402

DESCRIPTION = __doc__.split("\n\n")[0]

VARIANTS = {
    # name in the bench repository: (ensemble with metrics step?, dynamic batching?)
    "onnx_dynbatch": (False, True),
    "onnx_nobatch": (False, False),
    "asl": (True, True),
}


def load_inputs(onnx_path: Path, folder: Path, limit: int = 64) -> np.ndarray:
    """Real images resized to the model's input size (read from the graph), NCHW uint8."""
    spec = read_signature(onnx_path).inputs[0]
    _, height, width = spec.dims
    arrays = []
    for path in sorted(folder.glob("*.jpg"))[:limit]:
        img = load_rgb(path).resize((width, height), Image.BILINEAR)
        arrays.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
    if not arrays:
        raise SystemExit(f"no .jpg images in {folder}")
    return np.ascontiguousarray(np.stack(arrays))


def summarise(latencies: list[float], images: int, elapsed: float) -> dict:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1e3

    return {
        "images": images,
        "seconds": round(elapsed, 3),
        "throughput": images / elapsed,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(ordered) * 1e3,
    }


def bench_onnxruntime(onnx_path: Path, images: np.ndarray, batch: int, seconds: float, cap: int):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for i in range(10):
        session.run(None, {name: images[i % len(images)][None]})
    latencies, done, start = [], 0, time.perf_counter()
    while time.perf_counter() - start < seconds and done < cap:
        idx = [(done + k) % len(images) for k in range(batch)]
        t0 = time.perf_counter()
        session.run(None, {name: images[idx]})
        latencies.append(time.perf_counter() - t0)
        done += batch
    return summarise(latencies, done, time.perf_counter() - start)


def _metric_sum(metrics_url: str, name: str, model: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'model="{model}"' in line
    )


def bench_triton(
    url: str,
    protocol: str,
    model: str,
    images: np.ndarray,
    concurrency: int,
    seconds: float,
    cap: int,
) -> dict:
    """Closed loop: ``concurrency`` threads, each its own client, one image per request."""
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = {"sent": 0}
    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        client = tc.InferenceServerClient(url)
        local = []
        i = offset
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if counter["sent"] >= cap:
                        break
                    counter["sent"] += 1
                inp = tc.InferInput("images", [1, *images.shape[1:]], "UINT8")
                inp.set_data_from_numpy(images[i % len(images)][None])
                t0 = time.perf_counter()
                try:
                    client.infer(model, [inp])
                except Exception as exc:  # counted, reported
                    errors.append(str(exc))
                    continue
                local.append(time.perf_counter() - t0)
                i += 1
        finally:
            client.close()
            with lock:
                latencies.extend(local)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    result = summarise(latencies, len(latencies), time.perf_counter() - start)
    result["errors"] = len(errors)
    return result


def build_bench_repo(onnx_path: Path, classes_path: Path, repo: Path) -> None:
    for name, (ensemble, dynamic) in VARIANTS.items():
        build_repository(
            onnx_path,
            classes_path,
            repo,
            model_name=name,
            ensemble=ensemble,
            dynamic_batching=dynamic,
            max_batch_size=32,
        )


def markdown(rows: list[dict], baseline: dict, batch32: dict) -> str:
    lines = [
        f"In-process onnxruntime, batch 1: {baseline['throughput']:.0f} img/s, mean of "
        + " and ".join(f"{r['throughput']:.0f}" for r in baseline["runs"])
        + f" measured before and after (p50 {baseline['p50_ms']:.2f} ms, "
        f"p99 {baseline['p99_ms']:.2f} ms); batch 32: {batch32['throughput']:.0f} img/s.",
        "",
        "| model | dynamic batching | concurrency | img/s | p50 ms | p99 ms | mean batch | "
        "vs in-process ORT (batch 1) | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {'on' if r['dynamic_batching'] else 'off'} | {r['concurrency']} "
            f"| {r['throughput']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['mean_batch']:.2f} | {r['ratio_to_ort']:.2f} | {r['errors']} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class BenchTritonOptions:
    """The model, the images, and the cells (seconds, concurrency, protocol) measured."""

    model_id: str | None = option(None, "registry id or 'production' (default)")
    onnx: str | None = option(None, "ONNX file (with --classes) instead")
    classes: str | None = option(None, "class list for --onnx")
    images: str = option(str(SAMPLE_TEST_IMAGES), "folder of real .jpg")
    seconds: float = option(3.0, "duration of each cell", low=0)
    max_requests: int = option(20000, "cap per cell", low=1)
    concurrency: list[int] = option([1, 4, 16], "client threads of each cell", low=1)
    protocol: str = option("http", "Triton protocol", choices=("http", "grpc"))
    out: str = option(str(REPO_ROOT / "bench" / "results" / "triton.json"), "JSON results")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`BenchTritonOptions`."""
    return build_options_parser(BenchTritonOptions, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    args = parse(BenchTritonOptions, argv, DESCRIPTION)
    model_id = None if args.onnx else (args.model_id or "production")
    onnx_path, classes_path = model_files(model_id=model_id, onnx=args.onnx, classes=args.classes)
    images = load_inputs(onnx_path, Path(args.images))
    # The baseline is measured before and after the Triton cells (machine load drifts) and the
    # ratio uses their mean.
    before = bench_onnxruntime(onnx_path, images, 1, args.seconds, args.max_requests)
    batch32 = bench_onnxruntime(onnx_path, images, 32, args.seconds, args.max_requests)
    rows = []
    with tempfile.TemporaryDirectory(prefix="asl-bench-") as tmp:
        repo = Path(tmp) / "repo"
        build_bench_repo(onnx_path, classes_path, repo)
        server = TritonServer.on_free_ports(
            repo,
            model_control_mode="none",
            log_path=Path(tmp) / "triton.log",
            exit_timeout_secs=3,
        )
        with server:
            url = server.http_url if args.protocol == "http" else server.grpc_url
            for name, (ensemble, dynamic) in VARIANTS.items():
                counted = f"{name}_onnx" if ensemble else name
                bench_triton(url, args.protocol, name, images, 2, 0.5, 200)  # warm-up
                for concurrency in args.concurrency:
                    counts = [
                        _metric_sum(server.metrics_url, m, counted)
                        for m in ("nv_inference_count", "nv_inference_exec_count")
                    ]
                    cell = bench_triton(
                        url,
                        args.protocol,
                        name,
                        images,
                        concurrency,
                        args.seconds,
                        args.max_requests,
                    )
                    after = [
                        _metric_sum(server.metrics_url, m, counted)
                        for m in ("nv_inference_count", "nv_inference_exec_count")
                    ]
                    executions = max(after[1] - counts[1], 1)
                    cell.update(
                        model=name if not ensemble else f"{name} (ensemble + metrics step)",
                        dynamic_batching=dynamic,
                        concurrency=concurrency,
                        protocol=args.protocol,
                        mean_batch=(after[0] - counts[0]) / executions,
                    )
                    rows.append(cell)
                    print(
                        f"{cell['model']:<36} dyn={'on ' if dynamic else 'off'} c={concurrency:<3}"
                        f" {cell['throughput']:7.0f} img/s  p50 {cell['p50_ms']:6.2f} ms"
                        f"  p99 {cell['p99_ms']:6.2f} ms  batch {cell['mean_batch']:.2f}",
                        flush=True,
                    )
    after_ort = bench_onnxruntime(onnx_path, images, 1, args.seconds, args.max_requests)
    baseline = {
        key: (before[key] + after_ort[key]) / 2 for key in ("throughput", "p50_ms", "p99_ms")
    }
    baseline["runs"] = [before, after_ort]
    for row in rows:
        row["ratio_to_ort"] = row["throughput"] / baseline["throughput"]
    table = markdown(rows, baseline, batch32)
    result = {"onnx": str(onnx_path), "ort_batch1": baseline, "ort_batch32": batch32, "rows": rows}
    publish(result, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
