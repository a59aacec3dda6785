"""A hostile flood through the launcher's front (issue 19): do normal photos keep being served?

    python bench/bench_flood.py [--requests 2000] [--concurrency 32] [--bomb-share 0.1]
                                [--huge-share 0.1] [--huge-mb 200]

One run of the real launcher (``python -m asl_recognition.serving.launcher``: the front, then
tritonserver on loopback) on a hand-pipeline repository (random classifier weights: the work
does not depend on them). Two phases, same server, same concurrency:

1. normal photos only (``data/test_images``), ``--requests`` x the normal share of them;
2. ``--requests`` requests mixing normal photos with padded decompression bombs (a
   12,600 x 12,600 1-bit PNG whose zero rows compress to ~20 KB, padded with a junk chunk so the
   file passes a pixels-per-byte ratio; built in memory) and ``--huge-mb`` MB bodies.

Reported: the normal photos' p99 latency in each phase and their ratio (goal < 3), the peak RSS
of tritonserver and its backend stubs summed (goal < 1 GB, sampled every 0.1 s from
/proc/<pid>/status), the peak size of the server's /dev/shm regions, and normal requests lost
(any answer but 200; goal 0). The front runs with ``--rate 0`` (every request comes from one
address: the per-client rate would refuse the flood itself); its body cap stays on.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_hands_triton import random_classifier  # noqa: E402
from bench_report import publish  # noqa: E402

from asl_recognition.netutil import free_port  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402
from asl_recognition.paths import REPO_ROOT  # noqa: E402
from asl_recognition.serving.repository import build_repository  # noqa: E402


@dataclass
class FloodOptions:
    """Flood the front with bombs and huge bodies among normal photos; report p99, RSS, losses."""

    requests: int = option(
        2000, "requests in the mixed phase (the normal phase: its photos)", low=1
    )
    concurrency: int = option(32, "clients sending at once", low=1)
    bomb_share: float = option(0.1, "share of padded PNG bombs in the mixed phase", low=0, high=1)
    huge_share: float = option(0.1, "share of huge bodies in the mixed phase", low=0, high=1)
    huge_mb: int = option(200, "size of a huge body in MB", low=1)
    bomb_side: int = option(12600, "side of the PNG bomb in pixels", low=1)
    photos: str = option(str(REPO_ROOT / "data" / "test_images"), "normal photos", path=True)
    timeout: float = option(120.0, "client seconds per request before it counts as lost", low=1)
    out: str = option(
        str(REPO_ROOT / "bench" / "results" / "flood.json"), "where the figures go", path=True
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def padded_bomb(side: int) -> bytes:
    """A valid 1-bit PNG of side x side zeros, padded so that it has >= 1 byte per 1,000 px."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    junk = os.urandom(side * side // 1000)  # an ancillary chunk decoders skip
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        (
            _chunk(b"IHDR", header),
            _chunk(b"juNk", junk),
            _chunk(b"IDAT", idat),
            _chunk(b"IEND", b""),
        )
    )


def infer_request(image: bytes) -> tuple[bytes, dict[str, str]]:
    """The binary-tensor HTTP request of one image for the ``asl`` ensemble."""
    import tritonclient.http as thttp

    tensor = thttp.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=object))
    body, json_size = thttp.InferenceServerClient.generate_request_body([tensor])
    return body, {"Inference-Header-Content-Length": str(json_size)}


def send(port: int, body: bytes, headers: dict[str, str], timeout: float) -> int | str:
    """Status code, or the name of the error the connection ended with."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v2/models/asl/infer", body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    except OSError as exc:  # a huge body: the front refuses and closes while it is sent
        return type(exc).__name__
    finally:
        conn.close()


class PeakRss:
    """Peak summed VmRSS of a process and its descendants, and of a /dev/shm name prefix."""

    def __init__(self, root: int, shm_prefix: str) -> None:
        self.root, self.shm_prefix = root, shm_prefix
        self.peak_kib = self.peak_shm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        tree, frontier = [self.root], [self.root]
        while frontier:
            frontier = [pid for pid, parent in parents.items() if parent in frontier]
            tree += frontier
        return tree

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            total = 0
            for pid in self._tree():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                except OSError:
                    continue
            shm = sum(p.stat().st_size for p in Path("/dev/shm").glob(f"{self.shm_prefix}*"))
            self.peak_kib, self.peak_shm = max(self.peak_kib, total), max(self.peak_shm, shm)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def run_phase(port: int, plan: list[tuple[str, bytes, dict]], opts: FloodOptions) -> dict:
    """Send the plan with ``concurrency`` threads; latencies of the normal requests, outcomes."""
    latencies: list[float] = []
    outcomes: dict[str, dict[str, int]] = {}
    lock, cursor = threading.Lock(), iter(range(len(plan)))

    def worker() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            kind, body, headers = plan[index]
            start = time.perf_counter()
            status = send(port, body, headers, opts.timeout)
            elapsed = time.perf_counter() - start
            with lock:
                counts = outcomes.setdefault(kind, {})
                counts[str(status)] = counts.get(str(status), 0) + 1
                if kind == "normal" and status == 200:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(opts.concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    normal = outcomes.get("normal", {})
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "normal_p99_ms": (
            round(float(np.percentile(latencies, 99)) * 1000, 1) if latencies else None
        ),
        "normal_p50_ms": (
            round(float(np.percentile(latencies, 50)) * 1000, 1) if latencies else None
        ),
        "normal_lost": sum(n for status, n in normal.items() if status != "200"),
        "outcomes": outcomes,
    }


def plans(opts: FloodOptions) -> tuple[list, list]:
    photos = sorted(Path(opts.photos).glob("*.jpg"))
    if not photos:
        raise SystemExit(f"bench_flood.py: error: no .jpg photos in {opts.photos}")
    normal = [("normal", *infer_request(p.read_bytes())) for p in photos]
    bomb = ("bomb", *infer_request(padded_bomb(opts.bomb_side)))
    huge = ("huge", b"\0" * (opts.huge_mb * 1000 * 1000), {})
    rng = random.Random(0)
    mixed = []
    for index in range(opts.requests):
        draw = rng.random()
        if draw < opts.bomb_share:
            mixed.append(bomb)
        elif draw < opts.bomb_share + opts.huge_share:
            mixed.append(huge)
        else:
            mixed.append(normal[index % len(normal)])
    count = sum(kind == "normal" for kind, _, _ in mixed)
    return [normal[i % len(normal)] for i in range(count)], mixed


def launch(repo: Path, work: Path) -> tuple[subprocess.Popen, int]:
    """The launcher CLI with the flood's front settings; returns once it prints ready."""
    port = free_port()
    command = [sys.executable, "-m", "asl_recognition.serving.launcher", "--repo", str(repo)]
    command += ["--http-port", str(port), "--grpc-port", str(free_port())]
    command += ["--metrics-port", str(free_port()), "--log-path", str(work / "triton.log")]
    # every request comes from this one address: no per-client rate or connection cap
    command += ["--rate", "0", "--max-connections", "256", "--client-connections", "0"]
    command += ["--requests-in-flight", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("tritonserver ready"):
        proc.kill()
        raise SystemExit(f"bench_flood.py: error: the launcher did not start: {line.strip()}")
    return proc, port


def triton_pid(launcher: int) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        text = stat.read_text()
        if int(text.rsplit(")", 1)[1].split()[1]) == launcher and "(tritonserver)" in text:
            return int(stat.parent.name)
    raise SystemExit("bench_flood.py: error: no tritonserver under the launcher")


def table(result: dict) -> str:
    base, mixed = result["baseline"], result["mixed"]
    return "\n".join(
        [
            "| figure | value | goal |",
            "|---|---|---|",
            f"| normal p99, photos only | {base['normal_p99_ms']} ms | |",
            f"| normal p99, in the flood | {mixed['normal_p99_ms']} ms | |",
            f"| ratio | {result['p99_ratio']} | < 3 |",
            f"| server peak RSS (tritonserver + stubs) | {result['peak_rss_mb']} MB | < 1000 |",
            f"| server /dev/shm regions, peak | {result['peak_shm_mb']} MB | |",
            f"| normal requests lost | {base['normal_lost'] + mixed['normal_lost']} | 0 |",
            f"| bad requests' answers | {mixed['outcomes'].get('bomb')} bombs, "
            f"{mixed['outcomes'].get('huge')} huge | |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(FloodOptions, argv, FloodOptions.__doc__ or "")
    baseline_plan, mixed_plan = plans(opts)
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        work = Path(tmp)
        onnx, classes = random_classifier(work)
        build_repository(onnx, classes, work / "repo", max_batch_size=8)
        proc, port = launch(work / "repo", work)
        try:
            with PeakRss(triton_pid(proc.pid), f"asl_triton_{proc.pid}_") as peak:
                baseline = run_phase(port, baseline_plan, opts)
                mixed = run_phase(port, mixed_plan, opts)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    ratio = (
        round(mixed["normal_p99_ms"] / baseline["normal_p99_ms"], 2)
        if mixed["normal_p99_ms"] and baseline["normal_p99_ms"]
        else None
    )
    result = {
        "options": asdict(opts),
        "baseline": baseline,
        "mixed": mixed,
        "p99_ratio": ratio,
        "peak_rss_mb": round(peak.peak_kib / 1024, 1),
        "peak_shm_mb": round(peak.peak_shm / 1024 / 1024, 1),
    }
    publish(result, table(result), opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
