"""Test helpers shared by several test folders: tiny real models, free ports, a real Triton.

The models are trained here for a few steps on the bundled real images (data/sample) and
exported exactly as the model contract says (uint8 NCHW ``images`` -> softmax
``probabilities``), so serving and monitoring tests do not depend on the training pipeline,
yet exercise genuinely different models (image size, classes, architecture).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
from PIL import Image

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.netutil import free_port  # noqa: F401 - re-exported for the tests
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
SUBSET = ["A", "B", "C", "L", "Y"]
MERGED_PER_CLASS = 4  # Kaggle frames per class beside the Massey crops in the data tests


@dataclass
class TinyModel:
    onnx: Path
    classes: Path
    image_size: int
    class_names: list[str]


@contextlib.contextmanager
def offline_workspace(ws: Path) -> Iterator[None]:
    """``ASL_WORKSPACE=ws`` with ClearML offline and no server configured, for a fixture wider
    than one test (the ``monkeypatch`` fixture is per test)."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ASL_WORKSPACE", str(ws))
        mp.setenv("ASL_OFFLINE", "1")
        for key in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY"):
            mp.delenv(key, raising=False)
        yield


def run_script(
    *argv: str | os.PathLike, env: Mapping[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``python ARGV...`` from the repository root, as an agent runs a task; output as text."""
    return subprocess.run(
        [sys.executable, *map(str, argv)],
        cwd=REPO_ROOT,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def kaggle_slice(
    sample_dir: Path, target: Path, start: int, per_class: int = MERGED_PER_CLASS
) -> Path:
    """Frames ``start``..``start+per_class`` of every class, copied as a Kaggle-style folder."""
    for cls in CLASSES:
        (target / cls).mkdir(parents=True)
        for src in sorted((sample_dir / cls).glob("*.jpg"))[start : start + per_class]:
            shutil.copyfile(src, target / cls / src.name)
    return target


def load_images(classes: list[str], size: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for index, name in enumerate(classes):
        for path in sorted((SAMPLE_DATA / name).glob("*.jpg"))[:per_class]:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
            xs.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            ys.append(index)
    return np.stack(xs), np.asarray(ys)


def fit(model, x, y, steps: int, batch: int, lr: float = 3e-3) -> None:
    """Adam on random batches of (x, y); the model outputs probabilities. Leaves it in eval."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,))
        loss = torch.nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-8), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def export_images_model(model, image_size: int, onnx_path: Path) -> None:
    """The serving contract: uint8 NCHW ``images`` -> ``probabilities``, dynamic batch."""
    import torch

    with warnings.catch_warnings():  # dynamo=False is the documented one-file exporter here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8),),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
        )


def train_and_export(
    out_dir: Path, classes: list[str], image_size: int, arch: str, seed: int, steps: int = 40
) -> TinyModel:
    """A few Adam steps, then uint8 NCHW -> normalise -> net -> softmax exported to ONNX."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    n = len(classes)
    if arch == "cnn":
        body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, n),
        )
    else:  # a different architecture: MLP on a 4x downsampled image
        body = nn.Sequential(
            nn.AvgPool2d(4),
            nn.Flatten(),
            nn.Linear(3 * (image_size // 4) ** 2, 32),
            nn.ReLU(),
            nn.Linear(32, n),
        )

    class Served(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0)
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255.0)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body((images.float() - self.mean) / self.std), dim=1)

    model = Served()
    xs, ys = load_images(classes, image_size, per_class=8)
    fit(model, torch.from_numpy(xs), torch.from_numpy(ys), steps, batch=32)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, classes_path = out_dir / "model.onnx", out_dir / "classes.txt"
    export_images_model(model, image_size, onnx_path)
    write_class_file(str(classes_path), classes)
    return TinyModel(onnx_path, classes_path, image_size, list(classes))


class LazyModels(dict):
    """Train each tiny model on first use, so a test run trains only the models it needs."""

    SPECS = {
        "a": (list(CLASSES), 32, "cnn", 0),  # 29 classes, 32 px CNN
        "a2": (list(CLASSES), 32, "cnn", 1),  # same signature as a, other weights
        "b": (SUBSET, 48, "mlp", 2),  # 5 classes, 48 px, another architecture
    }

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, key: str) -> TinyModel:
        classes, size, arch, seed = self.SPECS[key]
        self[key] = train_and_export(self.root / key, classes, size, arch, seed=seed)
        return self[key]


def start_server(repo: Path, log_dir: Path, **kwargs):
    """A real local tritonserver on free ports, ready; its own log file under ``log_dir``."""
    import tempfile

    from asl_recognition.serving.launcher import TritonServer

    log_dir.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.mkstemp(prefix="triton-", suffix=".log", dir=log_dir)[1])
    return TritonServer.on_free_ports(repo, log_path=log, **kwargs).start_ready(90)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def bomb_png(path: Path, side: int) -> None:
    """A valid 1-bit PNG of side x side pixels whose zero rows compress to a few KB."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def padded_bomb_png(path: Path, width: int, height: int, pad: int = 0) -> Path:
    """A valid 8-bit RGB PNG of black rows (a few hundred KB for 160 MP), with ``pad`` junk
    bytes in an ancillary chunk before IDAT: the padding moves any pixels-per-byte ratio."""
    row = b"\x00" * (1 + 3 * width)
    per_block = max(1, (1 << 20) // len(row))
    blocks, last = divmod(height, per_block)
    # A full flush empties the window: every full block then deflates to the same bytes, so
    # 160 MP is built from one compressed block (zlib header + raw deflate + adler32 by hand).
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block, adler = row * per_block, 1
    comp.compress(block)
    comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    for _ in range(blocks):
        adler = zlib.adler32(block, adler)
    adler = zlib.adler32(row * last, adler)
    tail = comp.compress(row * last) + comp.flush()
    idat = b"\x78\xda" + repeat * blocks + tail + struct.pack(">I", adler)
    junk = _png_chunk(b"juNK", b"\x00" * pad) if pad else b""
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + junk
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    return path


def png16(path: Path, pixels: np.ndarray) -> Path:
    """Write a 16-bit-per-channel PNG (grey, grey+alpha, RGB or RGBA from the last axis).

    Pillow cannot write 16-bit colour PNGs; this encodes the rows by hand (filter 0, zlib).
    """
    pixels = np.asarray(pixels, dtype=np.uint16)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = pixels.astype(">u2").reshape(height, width * channels).tobytes()
    stride = width * channels * 2
    raw = b"".join(b"\x00" + rows[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )
    return path


def export_landmark_classifier(out_dir: Path, features=None, labels=None, seed: int = 0) -> Path:
    """A real landmark classifier ONNX (the training contract: FEATURES, HAND_FOUND -> PROBS).

    ``features``/``labels`` given: the MLP is fitted on them for a few hundred steps, so the
    served answer for those photos is known. Exported by the training stage's own export.
    """
    import torch

    from asl_recognition.classes import CLASSES, write_class_file
    from asl_recognition.training.export import export_onnx
    from asl_recognition.training.landmark_model import LandmarkNet

    torch.manual_seed(seed)
    net = LandmarkNet(len(CLASSES), CLASSES.index("nothing"))
    if features is not None:
        x, y = torch.as_tensor(features), torch.as_tensor(labels)
        optimiser = torch.optim.Adam(net.mlp.parameters(), lr=1e-2)
        for _ in range(200):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net.mlp(x), y).backward()
            optimiser.step()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(net.eval(), out_dir / "model.onnx", 0, num_classes=len(CLASSES))
    write_class_file(str(out_dir / "classes.txt"), CLASSES)
    return path


# `make run`'s pipeline command (after the interpreter), run from the repository root.
RUN_PIPELINE = [
    "pipelines/asl_pipeline.py",
    "--mode",
    "local-executor",
    "--config",
    "configs/run.yaml",
]


def recipe_steps(recipe: str = "configs/run.yaml") -> list[str]:
    """The steps a recipe's pipeline runs, in order (read from the DAG and the recipe)."""
    from asl_recognition.paths import REPO_ROOT
    from asl_recognition.pipeline.clearml_controller import active_steps
    from asl_recognition.pipeline.dag import ASL_DAG
    from asl_recognition.pipeline.recipe import load_recipe

    values = {**ASL_DAG.param_defaults(), **load_recipe(ASL_DAG, REPO_ROOT / recipe)}
    return [step.name for step in active_steps(ASL_DAG, values)]


class BackgroundLoop:
    """``tick()`` every ``period`` seconds in a daemon thread while inside ``with``: traffic."""

    period = 0.1

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the loop used (a client), after the thread ended."""

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.tick()

    def __enter__(self) -> "BackgroundLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.close()


def chromium_page(url: str, tmp: Path, screenshot: Path | None = None) -> str:
    """Headless Debian chromium: the rendered DOM, and optionally a PNG screenshot."""
    import pytest

    from asl_recognition.monitoring.tools import find_tool

    browser = find_tool("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium missing: run scripts/install_system_deps.sh")
    base = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}",
    ]  # fmt: skip
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [*base, f"--screenshot={screenshot}", "--window-size=1400,1500", url],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert screenshot.is_file() and screenshot.stat().st_size > 10_000, res.stderr[-2000:]
    res = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


Respond = Callable[[BaseHTTPRequestHandler], tuple[int, str, bytes]]


class LoopbackServer:
    """A real HTTP server on a free loopback port; ``respond(request)`` answers every GET with
    (status, content type, body). Stubs of Prometheus's API and Triton's metrics are built on it.
    """

    def __init__(self, respond: Respond) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                status, content_type, body = respond(self)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
