"""INT8 vs fp32 latency of a registered classifier (the CNN or the landmark MLP) as a ratio
measured side by side, and the accuracy delta.

    python bench/bench_int8.py [--model-id production] [--rounds 30] [--batch-sizes 1 32]

The fp32 model is the registered one; its INT8 variant is quantised here (static QDQ, per
channel, calibrated on a seeded sample of the model's TRAIN split) into a temporary folder and
not registered. Both run in onnxruntime on the CPU in this process, in interleaved rounds (the
order alternates each round), and the median ms/image of each is compared. Goal: INT8 at most
0.6x fp32's time with test accuracy within 1 point; the table says which parts were met.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_report import publish  # noqa: E402

from asl_recognition.optimize import measure  # noqa: E402
from asl_recognition.optimize.options import OptimizeOptions  # noqa: E402
from asl_recognition.optimize.run import load_inputs  # noqa: E402
from asl_recognition.optimize.variants import (  # noqa: E402
    OptimizeError,
    quantize_int8,
    sample_calibration,
)
from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import from_mapping, option, parse  # noqa: E402

GOAL_RATIO = 0.6
GOAL_ACCURACY_POINTS = 1.0
DESCRIPTION = __doc__.splitlines()[0]


@dataclass(frozen=True)
class BenchInt8Options:
    """Which model, how many rounds and batch sizes, where the results go."""

    model_id: str = option("production", "registry id or 'production'")
    rounds: int = option(30, "interleaved timing rounds", low=1)
    batch_sizes: list[int] = option([1, 32], "batch sizes timed", low=1)
    calibration_images: int = option(200, "training images the int8 scales come from", low=1)
    threads: int = option(0, "0: onnxruntime's default", low=0)
    registry: str = option("auto", "model registry", choices=("auto", "local", "clearml"))
    out: str = option("bench/results/bench_int8.json", "JSON results file")


def measure_pair(args: BenchInt8Options, tmp: Path) -> dict:
    """Quantise, score both on the test split, time both interleaved; the raw figures."""
    from asl_recognition.registry import get_registry

    opts = from_mapping(
        OptimizeOptions,
        {"model_id": args.model_id, "registry": args.registry, "output_dir": str(tmp / "out")},
    )
    inputs = load_inputs(get_registry(backend=args.registry), opts)
    train, test = inputs.splits["train"], inputs.splits["test"]
    calibration = sample_calibration(
        train.images.numpy(), train.paths, args.calibration_images, seed=0
    )
    int8_path = tmp / "model.int8.onnx"
    settings = quantize_int8(inputs.record.onnx_path, int8_path, calibration, True, inputs.graph)
    sessions = {
        "fp32": measure.open_session(inputs.record.onnx_path, args.threads)[0],
        "int8": measure.open_session(int8_path, args.threads)[0],
    }
    classes = len(inputs.dataset.classes)
    images = test.images.numpy()
    accuracy = {
        name: measure.score(
            measure.run_probabilities(s, images, inputs.graph.feeds), test.labels, classes
        )["accuracy"]
        for name, s in sessions.items()
    }
    latency = measure.time_interleaved(
        sessions, images, args.batch_sizes, args.rounds, inputs.graph.feeds
    )
    return {
        "model_id": inputs.record.id,
        "image_size": inputs.image_size,
        "test_images": len(images),
        "calibration_images": len(calibration.paths),
        "quantization": settings,
        "accuracy": accuracy,
        "latency": latency,
        "ratio": measure.ratios(latency)["int8"],
    }


def table(result: dict) -> str:
    """Markdown: ms/image of both, the ratio and whether each goal was met."""
    delta = 100.0 * (result["accuracy"]["int8"] - result["accuracy"]["fp32"])
    lines = [
        f"INT8 vs fp32, model {result['model_id']} ({result['image_size']} px), "
        f"median of {result['rounds']} interleaved rounds, {result['cpu']}",
        "",
        "| batch | fp32 ms/image | int8 ms/image | int8/fp32 | goal <= 0.6 |",
        "|---|---|---|---|---|",
    ]
    for batch, ratio in result["ratio"].items():
        fp32 = result["latency"]["fp32"][batch]["ms_per_image"]
        int8 = result["latency"]["int8"][batch]["ms_per_image"]
        met = "met" if ratio <= GOAL_RATIO else "NOT met"
        lines.append(f"| {batch} | {fp32:.4f} | {int8:.4f} | {ratio:.3f} | {met} |")
    met = "met" if abs(delta) <= GOAL_ACCURACY_POINTS else "NOT met"
    lines += [
        "",
        f"Test accuracy ({result['test_images']} images): fp32 "
        f"{100 * result['accuracy']['fp32']:.2f}%, int8 {100 * result['accuracy']['int8']:.2f}% "
        f"(delta {delta:+.2f} points; goal within {GOAL_ACCURACY_POINTS:g}: {met})",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`BenchInt8Options`."""
    return build_options_parser(BenchInt8Options, DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    args = parse(BenchInt8Options, argv, DESCRIPTION)
    import os
    import platform

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        try:
            result = measure_pair(args, Path(tmp))
        except OptimizeError as exc:
            print(f"bench_int8: error: {exc}", file=sys.stderr)
            return 2
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU"
    result.update(rounds=args.rounds, cpu=cpu, goal_ratio=GOAL_RATIO)
    result["goal_met"] = {
        "latency": all(r <= GOAL_RATIO for r in result["ratio"].values()),
        "accuracy": abs(result["accuracy"]["int8"] - result["accuracy"]["fp32"])
        <= GOAL_ACCURACY_POINTS / 100.0,
    }
    publish(result, table(result), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
