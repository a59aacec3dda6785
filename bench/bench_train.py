"""Training throughput of the project's Trainer against a bare torch loop, in the same run.

    python bench/bench_train.py [--source DIR] [--image-size 64] [--batch-size 64] [--model cnn]
                                [--steps 5] [--rounds 6] [--out bench/results/bench_train.json]
    python bench/bench_train.py --model landmarks [--landmarks-version ID | --source DIR ...]
                                [--epochs 150] [--rounds 3]
                                [--out bench/results/bench_train_landmarks.json]

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

``--model landmarks`` times what ``make run`` trains: the whole ``Trainer.fit`` (every epoch's
val evaluation, checkpoints and TensorBoard logging included, configured as ``run.py``
configures it: batch augmentation in landmark space, one intra-op thread) against a bare loop
with the same model, initial weights, batch augmentation, thread count, optimiser, loss and
epochs, on the same real landmark rows: an ASL_landmarks version of the workspace
(``--landmarks-version``), else make run's bundled photos (configs/run.yaml's sources:
data/sample and data/massey_signers) measured here by the serving landmarker. The ratio is
Trainer speed / bare speed (goal >= 0.5); the Trainer on torch's default thread count is timed
once beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from bench_report import publish  # noqa: E402
from torch import nn  # noqa: E402

from asl_recognition.classes import CLASSES  # noqa: E402
from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA, SHARED_DATA  # noqa: E402
from asl_recognition.training.architectures import ARCHITECTURES  # noqa: E402
from asl_recognition.training.augment import build_augment  # noqa: E402
from asl_recognition.training.data import TensorSplit, load_split  # noqa: E402
from asl_recognition.training.loop import LoopConfig, Trainer  # noqa: E402
from asl_recognition.training.models import build_model  # noqa: E402
from asl_recognition.training.options import TrainOptions  # noqa: E402
from asl_recognition.training.runtime import seed_everything  # noqa: E402

RUN_RECIPE = REPO_ROOT / "configs" / "run.yaml"  # whose photos the landmark bench measures


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


def run(args: BenchTrainOptions) -> dict:
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


# -- the landmark model -------------------------------------------------------------------------
def measured_rows(folders: list[Path]) -> tuple[TensorSplit, TensorSplit, str]:
    """The photos of ``folders`` measured by the serving landmarker: every 4th photo is val
    (hand or not, as a run's val split), the other photos with a hand are train."""
    from asl_recognition.hands import HandLandmarker
    from asl_recognition.training.landmark_data import measure_folder

    landmarker = HandLandmarker()
    parts = [measure_folder(folder, CLASSES, landmarker).split for folder in folders]
    rows = torch.cat([p.images for p in parts])
    labels = torch.cat([p.labels for p in parts])
    index = torch.arange(len(rows))
    val = index % 4 == 3
    train = ~val & (rows[:, -1] > 0)
    names = " + ".join(f.name for f in folders)
    return TensorSplit(rows[train], labels[train]), TensorSplit(rows[val], labels[val]), names


def landmark_rows(args: BenchTrainOptions) -> tuple[TensorSplit, TensorSplit, str]:
    """(train hand rows, val rows, where they come from)."""
    if args.landmarks_version:
        from asl_recognition.data.landmarks import load_table
        from asl_recognition.training.landmark_run import landmark_splits

        table, meta = load_table(args.landmarks_version)
        train, val, _, _ = landmark_splits(table, list(CLASSES), False, meta["id"])
        return train, val, f"ASL_landmarks {meta['id']} of the workspace"
    if args.source:
        return measured_rows([Path(args.source)])
    from asl_recognition.pipeline.dag import ASL_DAG
    from asl_recognition.pipeline.recipe import recipe_sources

    return measured_rows(list(recipe_sources(ASL_DAG, RUN_RECIPE).values()))


def landmark_fit(
    model: nn.Module,
    train: TensorSplit,
    val: TensorSplit,
    cfg: LoopConfig,
    run_dir: Path,
) -> Timing:
    """``Trainer.fit`` as ``run.py`` sets it up for the landmark model, TensorBoard included."""
    from torch.utils.tensorboard import SummaryWriter

    from asl_recognition.training.landmark_run import landmark_augment

    with SummaryWriter(str(run_dir / "tensorboard")) as writer:
        trainer = Trainer(
            model,
            train,
            val,
            CLASSES,
            cfg,
            run_dir,
            writer=writer,
            batch_augment=landmark_augment("light"),
        )
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch lines
            out = trainer.fit()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out.train_images, wall, cpu


def landmark_bare(model: nn.Module, train: TensorSplit, cfg: LoopConfig, seed: int) -> Timing:
    """The textbook loop: same model, batches, batch augmentation, threads, optimiser and loss."""
    from asl_recognition.training.landmark_model import LandmarkAugment, RowsAugment
    from asl_recognition.training.runtime import intra_op_threads

    augment = RowsAugment(LandmarkAugment())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    generator = torch.Generator().manual_seed(seed)
    n, batch_size = len(train), cfg.batch_size
    steps = n // batch_size if n > batch_size else 1
    seen = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with intra_op_threads(cfg.threads):
        model.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            for step in range(steps):
                picked = order[step * batch_size : (step + 1) * batch_size]
                x, y = augment(train.images[picked]), train.labels[picked]
                loss = criterion(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seen += len(y)
    return seen, time.perf_counter() - t0, time.process_time() - c0


def run_landmarks(args: BenchTrainOptions) -> dict:
    """Measure (or load) the rows once, then ``rounds`` of Trainer and bare loop, alternating."""
    from asl_recognition.training.landmark_run import LANDMARK_THREADS, build_landmark_net

    t0 = time.perf_counter()
    train, val, rows_from = landmark_rows(args)
    measure_s = time.perf_counter() - t0
    if len(train) == 0 or len(val) == 0:
        raise SystemExit(f"bench_train: error: no train rows with a hand in {rows_from}")
    options = TrainOptions(
        model="landmarks",
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=0,
        label_smoothing=0.1,
    )
    seed_everything(options.seed)
    cfg = replace(LoopConfig.from_options(options, progress=False), threads=LANDMARK_THREADS)
    init = build_landmark_net(list(CLASSES), None).state_dict()

    def fresh() -> nn.Module:
        model = build_landmark_net(list(CLASSES), None)
        model.load_state_dict(copy.deepcopy(init))
        return model

    runs: dict[str, list[Timing]] = {"project": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="asl-bench-train-") as tmp:
        for r in range(args.rounds):
            for name in ("project", "bare") if r % 2 == 0 else ("bare", "project"):
                if name == "project":
                    timing = landmark_fit(fresh(), train, val, cfg, Path(tmp) / f"p{r}")
                else:
                    timing = landmark_bare(fresh(), train, cfg, options.seed + r)
                runs[name].append(timing)
            print(
                f"round {r + 1}: Trainer.fit {runs['project'][-1][1]:.1f} s, "
                f"bare loop {runs['bare'][-1][1]:.1f} s ({args.epochs} epochs)",
                flush=True,
            )
        default = replace(cfg, threads=0)
        default_threads = landmark_fit(fresh(), train, val, default, Path(tmp) / "default")
    seconds = {k: [t[1] for t in v] for k, v in runs.items()}
    cpu = {k: sum(t[2] for t in v) for k, v in runs.items()}
    return {
        "config": {
            "model": "landmarks",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "rows_from": rows_from,
            "train_rows": len(train),
            "val_rows": len(val),
            "threads": LANDMARK_THREADS,
            "default_threads": torch.get_num_threads(),
            "lr": cfg.lr,
            "label_smoothing": cfg.label_smoothing,
            "torch": torch.__version__,
        },
        "rows_seconds": measure_s,
        "seconds": seconds,
        "project_seconds": statistics.median(seconds["project"]),
        "bare_seconds": statistics.median(seconds["bare"]),
        "ratio": statistics.median(b / p for p, b in zip(seconds["project"], seconds["bare"])),
        "cpu_ratio": cpu["bare"] / cpu["project"],
        "default_threads_seconds": default_threads[1],
    }


def landmark_markdown(result: dict) -> str:
    c, seconds = result["config"], result["seconds"]

    def cell(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    return "\n".join(
        [
            f"landmark MLP, {c['epochs']} epochs of {c['train_rows']} train rows (val "
            f"{c['val_rows']} rows) from {c['rows_from']}, batch {c['batch_size']}, "
            f"{c['rounds']} rounds in alternating order.",
            "",
            "| loop | seconds (median) | rounds |",
            "|---|---|---|",
            f"| project `Trainer.fit` ({c['threads']} thread, val + checkpoints + TensorBoard) "
            f"| {result['project_seconds']:.1f} | {cell(seconds['project'])} |",
            f"| bare torch loop ({c['threads']} thread, same batch augmentation) "
            f"| {result['bare_seconds']:.1f} | {cell(seconds['bare'])} |",
            f"| project `Trainer.fit`, torch's default {c['default_threads']} threads "
            f"| {result['default_threads_seconds']:.1f} | 1 run |",
            "",
            f"Ratio project / bare (speed): **{result['ratio']:.2f}** (median of the per-round "
            f"ratios; goal >= 0.5); by CPU seconds: {result['cpu_ratio']:.2f}.",
        ]
    )


@dataclass
class BenchTrainOptions:
    """The model, its data and how long each loop runs; where the results go."""

    source: str | None = option(
        None,
        "image folder <CLASS>/*.jpg (default: ../shared/data/asl_kaggle_sample if present, "
        "else data/sample; landmarks: make run's photos, configs/run.yaml)",
    )
    image_size: int = option(64, "square side in px", low=1)
    batch_size: int = option(64, "batch size", low=1)
    model: str = option("cnn", "architecture", choices=tuple(ARCHITECTURES))
    steps: int = option(5, "training steps per loop and round", low=1)
    rounds: int | None = option(
        None, "rounds, each runs both loops (default 6; landmarks 3)", low=1
    )
    epochs: int = option(150, "landmarks: epochs per loop", low=1)
    landmarks_version: str | None = option(
        None,
        "landmarks: rows of this ASL_landmarks id/version of the workspace (default: "
        "measure the photos of --source)",
    )
    out: str | None = option(
        None, "JSON results file (default: bench/results/bench_train[_landmarks].json)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`BenchTrainOptions`."""
    return build_options_parser(BenchTrainOptions, __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    args = parse(BenchTrainOptions, argv, __doc__.split("\n\n")[0])
    landmarks = args.model == "landmarks"
    args.rounds = args.rounds or (3 if landmarks else 6)
    name = "bench_train_landmarks.json" if landmarks else "bench_train.json"
    out = args.out or str(REPO_ROOT / "bench" / "results" / name)
    if landmarks:
        result = run_landmarks(args)
        publish(result, landmark_markdown(result), out)
        return 0
    args.source = args.source or str(default_source())
    result = run(args)
    publish(result, markdown(result), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
