"""Training throughput of the project's Trainer against a bare torch loop, in the same run.

    python bench/bench_train.py [--source DIR] [--image-size 64] [--batch-size 64] [--model cnn]
                                [--steps 5] [--rounds 6] [--out bench/results/bench_train.json]

Both loops train the same architecture from the same initial weights on the same in-memory
uint8 tensors (decoded once by the training data loader, as a real run does), with the same
batch, AdamW settings and no augmentation. Each round runs both loops back to back for a few
steps, in alternating order (project-bare, bare-project, ...), so that load from other
processes on a shared machine hits both alike; the ratio is the median of the per-round
ratios. The ratio of CPU seconds the process used per image is reported too: it is the cost
comparison least moved by other processes.

Data loading is checked two ways: the time the Trainer spends producing batches (indexing, and
the ``light`` augmentation preset a real run uses) against its compute per step, and a bare
loop on one pre-made batch (no data work at all) as the compute-only ceiling.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from bench_report import publish  # noqa: E402
from torch import nn  # noqa: E402

from asl_recognition.classes import CLASSES  # noqa: E402
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA, SHARED_DATA  # noqa: E402
from asl_recognition.training.augment import build_augment  # noqa: E402
from asl_recognition.training.data import TensorSplit, load_split  # noqa: E402
from asl_recognition.training.loop import LoopConfig, Trainer, seed_everything  # noqa: E402
from asl_recognition.training.models import build_model  # noqa: E402
from asl_recognition.training.options import MODEL_NAMES, TrainOptions  # noqa: E402


def default_source() -> Path:
    shared = SHARED_DATA / "asl_kaggle_sample"
    return shared if shared.is_dir() else SAMPLE_DATA


def load_images(source: Path, image_size: int) -> tuple[TensorSplit, float]:
    """``<source>/<CLASS>/*.jpg`` decoded by the training loader (bounded decode + resize)."""
    t0 = time.perf_counter()
    split = load_split(source.parent, source.name, CLASSES, image_size)
    if len(split) == 0:
        raise SystemExit(f"no images under {source}/<CLASS>/")
    return split, time.perf_counter() - t0


Timing = tuple[int, float, float]  # images, wall seconds, process CPU seconds


def project_round(
    model: nn.Module, data: TensorSplit, cfg: LoopConfig, epoch: int, run_dir: Path
) -> Timing:
    """One ``Trainer.train_epoch`` (the code a real run executes per step)."""
    trainer = Trainer(model, data, data, CLASSES, cfg, run_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    out = trainer.train_epoch(epoch)
    return int(out["images"]), time.perf_counter() - t0, time.process_time() - c0


def bare_round(
    model: nn.Module, data: TensorSplit, cfg: LoopConfig, steps: int, seed: int, fixed: bool
) -> Timing:
    """The textbook loop with the same settings; ``fixed``: one pre-made batch (compute only)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch_size = cfg.batch_size
    criterion = nn.CrossEntropyLoss()
    model.train()
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    first = perm[:batch_size]
    x0, y0 = data.images[first].clone(), data.labels[first].clone()
    seen = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        if fixed:
            x, y = x0, y0
        else:
            idx = perm[step * batch_size : (step + 1) * batch_size]
            x, y = data.images[idx], data.labels[idx]
        loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen, time.perf_counter() - t0, time.process_time() - c0


def batch_prep_ms(trainer: Trainer, steps: int) -> float:
    """Milliseconds per step the Trainer spends producing batches, with no compute at all."""
    t0 = time.perf_counter()
    n = 0
    for n, _ in enumerate(trainer.batches(1), start=1):
        if n >= steps:
            break
    return (time.perf_counter() - t0) * 1e3 / max(1, n)


def markdown(result: dict) -> str:
    c, runs = result["config"], result["runs"]

    def cell(values: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in values)

    lines = [
        f"{c['model']} at {c['image_size']} px, batch {c['batch_size']}, {c['rounds']} rounds of "
        f"{c['steps']} steps per loop in alternating order, {c['threads']} torch threads, "
        f"{c['images']} real images from {c['source_name']} (decoded once in "
        f"{result['decode_seconds']:.1f} s).",
        "",
        "| loop | img/s (median) | rounds |",
        "|---|---|---|",
        f"| project `Trainer.train_epoch` | {result['project_images_per_s']:.0f} "
        f"| {cell(runs['project'])} |",
        f"| bare torch loop | {result['bare_images_per_s']:.0f} | {cell(runs['bare'])} |",
        f"| bare loop, one pre-made batch (compute only) | "
        f"{result['compute_only_images_per_s']:.0f} | {cell(runs['compute_only'])} |",
        "",
        f"Ratio project / bare: **{result['ratio']:.2f}** (median of the per-round ratios; "
        f"target >= 0.9); by CPU seconds per image: {result['cpu_ratio']:.2f}; "
        f"project / compute-only: {result['ratio_to_compute_only']:.2f}.",
        "",
        "| augmentation | batch prep ms/step | compute ms/step | data share of a step |",
        "|---|---|---|---|",
    ]
    for name, d in result["data_loading"].items():
        lines.append(
            f"| {name} | {d['batch_ms']:.1f} | {d['compute_ms']:.1f} | {d['share']:.1%} |"
        )
    return "\n".join(lines)


def timed_rounds(
    fresh: Callable[[], nn.Module], data: TensorSplit, cfg: LoopConfig, rounds: int, tmp: Path
) -> tuple[dict[str, list[float]], dict[str, list[Timing]]]:
    """Both loops per round, in alternating order, after an untimed warm-up of each."""
    steps = cfg.max_steps or 1
    project_round(fresh(), data, replace(cfg, max_steps=2), 1, tmp)
    bare_round(fresh(), data, cfg, 2, cfg.seed, fixed=False)
    runs: dict[str, list[float]] = {"project": [], "bare": [], "compute_only": []}
    timings: dict[str, list[Timing]] = {"project": [], "bare": []}
    for r in range(rounds):
        for name in ("project", "bare") if r % 2 == 0 else ("bare", "project"):
            if name == "project":
                timing = project_round(fresh(), data, cfg, r + 1, tmp)
            else:
                timing = bare_round(fresh(), data, cfg, steps, cfg.seed + r, False)
            timings[name].append(timing)
            runs[name].append(timing[0] / timing[1])
        print(
            f"round {r + 1}: project {runs['project'][-1]:.0f} img/s, "
            f"bare {runs['bare'][-1]:.0f} img/s",
            flush=True,
        )
    for r in range(max(1, rounds // 2)):
        images, wall, _ = bare_round(fresh(), data, cfg, steps, cfg.seed + r, True)
        runs["compute_only"].append(images / wall)
    return runs, timings


def data_loading(
    fresh: Callable[[], nn.Module],
    data: TensorSplit,
    cfg: LoopConfig,
    compute_ms: float,
    tmp: Path,
) -> dict[str, dict[str, float]]:
    """Batch preparation per step with no augmentation and with the ``light`` preset."""
    out = {}
    for preset in ("none", "light"):
        transform = build_augment(preset, int(data.images.shape[-1]))
        trainer = Trainer(fresh(), data, data, CLASSES, cfg, tmp, transform=transform)
        batch_ms = batch_prep_ms(trainer, cfg.max_steps or 1)
        out[preset] = {
            "batch_ms": batch_ms,
            "compute_ms": compute_ms,
            "share": batch_ms / (batch_ms + compute_ms),
        }
    return out


def run(args: argparse.Namespace) -> dict:
    """Decode once, time both loops, check data loading; the figures as a JSON-ready dict."""
    options = TrainOptions(epochs=1, batch_size=args.batch_size, model=args.model)
    seed_everything(options.seed)  # as a real run does (deterministic kernels for both loops)
    source = Path(args.source)
    data, decode_s = load_images(source, args.image_size)
    init = build_model(args.model, len(CLASSES), args.image_size).state_dict()

    def fresh() -> nn.Module:
        model = build_model(args.model, len(CLASSES), args.image_size)
        model.load_state_dict(copy.deepcopy(init))
        return model

    steps = min(args.steps, max(1, len(data) // args.batch_size))
    options.max_steps = steps
    cfg = LoopConfig.from_options(options, device="cpu", progress=False)
    with tempfile.TemporaryDirectory(prefix="asl-bench-train-") as tmp:
        runs, timings = timed_rounds(fresh, data, cfg, args.rounds, Path(tmp))
        project = statistics.median(runs["project"])
        loading = data_loading(fresh, data, cfg, args.batch_size / project * 1e3, Path(tmp))
    bare = statistics.median(runs["bare"])
    compute_only = statistics.median(runs["compute_only"])
    cpu_per_image = {k: sum(t[2] for t in v) / sum(t[0] for t in v) for k, v in timings.items()}
    return {
        "config": {
            "model": args.model,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": steps,
            "rounds": args.rounds,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "source": str(source),
            "source_name": source.name,
            "images": len(data),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "decode_seconds": decode_s,
        "runs": runs,
        "project_images_per_s": project,
        "bare_images_per_s": bare,
        "compute_only_images_per_s": compute_only,
        "ratio": statistics.median(p / b for p, b in zip(runs["project"], runs["bare"])),
        "ratio_of_medians": project / bare,
        "cpu_ratio": cpu_per_image["bare"] / cpu_per_image["project"],
        "ratio_to_compute_only": project / compute_only,
        "data_loading": loading,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        default=str(default_source()),
        help="image folder <CLASS>/*.jpg (default: ../shared/data/asl_kaggle_sample if present, "
        "else data/sample)",
    )
    parser.add_argument("--image-size", type=int, default=64, help="square side in px")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size")
    parser.add_argument("--model", choices=MODEL_NAMES, default="cnn", help="architecture")
    parser.add_argument("--steps", type=int, default=5, help="training steps per loop and round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (each runs both loops)")
    parser.add_argument(
        "--out",
        default=str(REPO_ROOT / "bench" / "results" / "bench_train.json"),
        help="JSON results file",
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.batch_size < 1:
        parser.error("--steps, --rounds and --batch-size must be at least 1")
    result = run(args)
    publish(result, markdown(result), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
