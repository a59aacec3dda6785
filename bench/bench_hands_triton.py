"""Photos per second through Triton's hand pipeline vs the same pipeline in-process, one run.

    python bench/bench_hands_triton.py [--onnx M --classes C] [--seconds 5] [--concurrency 1 8]

Both sides do the same work per photo: decode the file (asl_recognition.imageio), find the hand
(HandLandmarker), derive the 63 features, run the landmark classifier (onnxruntime in-process;
the ``<name>_hands`` -> ``<name>_onnx`` -> ``<name>_metrics`` ensemble in Triton, photo bytes
sent over HTTP). Closed loop: each of N threads sends one photo, waits, repeats. Cells are
interleaved (Triton, in-process, Triton, ...) over ``--rounds`` so machine noise hits both
alike; the ratio is Triton's total over in-process's per concurrency (goal >= 0.8 at 8). No
classifier given: a ServedLandmarkModel with random weights (the work does not depend on them).
Every loop is bounded by seconds and by a photo count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_report import publish  # noqa: E402
from bench_triton import summarise  # noqa: E402

from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA  # noqa: E402
from asl_recognition.serving.repository import build_repository  # noqa: E402
from asl_recognition.serving.triton_server import TritonServer  # noqa: E402

DESCRIPTION = __doc__.splitlines()[0]


def random_classifier(folder: Path) -> tuple[Path, Path]:
    """The training contract with random weights: FEATURES, HAND_FOUND -> PROBS [N, 29]."""
    from asl_recognition.classes import CLASSES, write_class_file
    from asl_recognition.training.export import export_onnx
    from asl_recognition.training.landmark_model import LandmarkNet

    net = LandmarkNet(len(CLASSES), CLASSES.index("nothing")).eval()
    path = export_onnx(net, folder / "model.onnx", 0, num_classes=len(CLASSES))
    write_class_file(str(folder / "classes.txt"), CLASSES)
    return path, folder / "classes.txt"


def sample_photos(folder: Path, per_class: int) -> list[Path]:
    """A few photos of every class folder (with and without hands)."""
    photos = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos += sorted(sub.glob("*.jpg"))[:per_class]
    if not photos:
        raise SystemExit(f"no .jpg photos under {folder}")
    return photos


def closed_loop(worker_factory, photos: list[Path], concurrency: int, seconds: float, cap: int):
    """N threads, each ``worker(path)`` in a loop until time or the photo cap runs out."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = [0.0]
    counter = iter(range(cap))
    workers = [worker_factory() for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)

    def run(worker, offset: int) -> None:
        barrier.wait()
        index = offset
        while time.perf_counter() < deadline[0]:
            with lock:
                if next(counter, None) is None:
                    return
            path = photos[index % len(photos)]
            index += concurrency
            start = time.perf_counter()
            try:
                worker(path)
            except Exception:  # every failure counts, whatever its type
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=run, args=(w, i)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if not latencies:
        raise SystemExit(f"no photo answered at concurrency {concurrency} ({errors[0]} errors)")
    return {**summarise(latencies, len(latencies), elapsed), "errors": errors[0]}


def in_process_worker(session):
    """Decode + HandLandmarker (one per thread: not thread safe) + the shared ORT session."""
    from asl_recognition.hands import HandLandmarker, landmark_features
    from asl_recognition.imageio import load_rgb

    landmarker = HandLandmarker()

    def work(path: Path) -> np.ndarray:
        with load_rgb(path) as img:
            result = landmarker.detect(np.asarray(img))
        features = np.zeros((1, 63), np.float32)
        if result is not None:
            features[0] = landmark_features(result)
        found = np.array([[1.0 if result is not None else 0.0]], np.float32)
        return session.run(["PROBS"], {"FEATURES": features, "HAND_FOUND": found})[0]

    return work


def triton_worker(url: str, model: str):
    """One HTTP client per thread; the photo's bytes as they are on disk."""
    import tritonclient.http as thttp

    client = thttp.InferenceServerClient(url)
    outputs = [thttp.InferRequestedOutput("PROBS"), thttp.InferRequestedOutput("HAND_FOUND")]

    def work(path: Path) -> np.ndarray:
        batch = np.array([[path.read_bytes()]], dtype=np.object_)
        inp = thttp.InferInput("IMAGE", [1, 1], "BYTES")
        inp.set_data_from_numpy(batch)
        return client.infer(model, [inp], outputs=outputs).as_numpy("PROBS")

    return work


@dataclass(frozen=True)
class BenchHandsTritonOptions:
    """The classifier, the photos, and the cells (seconds, concurrency, rounds) measured."""

    onnx: str | None = option(None, "landmark classifier ONNX (default: random weights)")
    classes: str | None = option(None, "its classes.txt (with --onnx)")
    photos: str = option(str(SAMPLE_DATA), "folder of class folders")
    per_class: int = option(4, "photos per class folder", low=1)
    seconds: float = option(5.0, "seconds per cell", low=0)
    max_images: int = option(5000, "photo cap per cell", low=1)
    concurrency: list[int] = option([1, 8], "client threads of each cell", low=1)
    rounds: int = option(2, "interleaved rounds per cell", low=1)
    hand_instances: int | None = option(
        None, "Triton hand instances (default: one per CPU)", low=1
    )
    out: str = option(str(REPO_ROOT / "bench" / "results" / "hands_triton.json"), "JSON results")


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`BenchHandsTritonOptions`."""
    return build_options_parser(BenchHandsTritonOptions, DESCRIPTION)


def start_server(repo: Path, work: Path) -> TritonServer:
    log = work / "triton.log"
    return TritonServer.on_free_ports(repo, model_control_mode="none", log_path=log).start_ready(
        120
    )


def measure(
    args: BenchHandsTritonOptions, onnx_path: Path, photos: list[Path], server: TritonServer
) -> list[dict]:
    """Interleaved cells: per round, per concurrency, Triton then in-process."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    totals: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.rounds):
        for concurrency in args.concurrency:
            for side, factory in (
                ("triton", lambda: triton_worker(server.http_url, "asl")),
                ("in-process", lambda: in_process_worker(session)),
            ):
                cell = closed_loop(factory, photos, concurrency, args.seconds, args.max_images)
                totals.setdefault((side, concurrency), []).append(cell)
    rows = []
    for concurrency in args.concurrency:
        pair = {}
        for side in ("triton", "in-process"):
            cells = totals[(side, concurrency)]
            images, seconds = sum(c["images"] for c in cells), sum(c["seconds"] for c in cells)
            pair[side] = {
                "images": images,
                "errors": sum(c["errors"] for c in cells),
                "throughput": images / seconds,
                "p50_ms": float(np.median([c["p50_ms"] for c in cells])),
            }
        ratio = pair["triton"]["throughput"] / pair["in-process"]["throughput"]
        rows.append({"concurrency": concurrency, **pair, "ratio": ratio})
    return rows


def table(rows: list[dict], instances: int) -> str:
    lines = [
        f"Hand pipeline, photos/s (Triton: {instances} hand instance(s), HTTP, one photo per "
        "request; in-process: one landmarker per thread)",
        "",
        "| concurrency | Triton img/s | in-process img/s | ratio | Triton p50 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        t, p = row["triton"], row["in-process"]
        lines.append(
            f"| {row['concurrency']} | {t['throughput']:.1f} | {p['throughput']:.1f} | "
            f"{row['ratio']:.2f} | {t['p50_ms']:.1f} | {t['errors'] + p['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(BenchHandsTritonOptions, argv, DESCRIPTION)
    if bool(args.onnx) != bool(args.classes):
        raise SystemExit("--onnx and --classes go together")
    instances = args.hand_instances or os.cpu_count() or 1
    photos = sample_photos(Path(args.photos), args.per_class)
    with tempfile.TemporaryDirectory(prefix="bench-hands-") as tmp:
        work = Path(tmp)
        onnx_path, classes = (
            (Path(args.onnx), Path(args.classes)) if args.onnx else random_classifier(work)
        )
        build_repository(
            onnx_path, classes, work / "repo", max_batch_size=8, hand_instances=instances
        )
        server = start_server(work / "repo", work)
        try:
            rows = measure(args, onnx_path, photos, server)
        finally:
            server.stop()
    result = {"photos": len(photos), "hand_instances": instances, "rows": rows}
    publish(result, table(rows, instances), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
