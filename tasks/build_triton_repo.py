"""ClearML task: write (or update) the Triton model repository for a trained model.

    python tasks/build_triton_repo.py --model-id production
    python tasks/build_triton_repo.py --train-task <training task id>
    python tasks/build_triton_repo.py --onnx model.onnx --classes classes.txt --repo DIR

Outputs: repo, model_name, version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.serving.sources import ModelSourceError, build_from_params
from asl_recognition.tracking import init_task


def _bool(value: object) -> bool:
    """Connected parameters edited in the web UI come back as text."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_argument_group("model source (exactly one)")
    source.add_argument("--train-task", default=None, help="ClearML training task id (artifacts)")
    source.add_argument(
        "--model-id", default=None, help="model registry id, or 'production' for the promoted one"
    )
    source.add_argument("--onnx", default=None, help="local model.onnx (with --classes)")
    source.add_argument("--classes", default=None, help="local classes.txt (with --onnx)")
    parser.add_argument(
        "--repo", default=None, help="repository dir (default <workspace>/triton_repo)"
    )
    parser.add_argument("--model-name", default="asl", help="name clients call (default asl)")
    parser.add_argument(
        "--max-batch-size", type=int, default=32, help="largest batch Triton forms"
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="model instances (instance_group)"
    )
    parser.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance kind")
    parser.add_argument(
        "--tensorrt", action="store_true", help="add the TensorRT GPU accelerator (needs gpu)"
    )
    parser.add_argument(
        "--keep-versions", type=int, default=2, help="version_policy: serve the latest N"
    )
    parser.add_argument(
        "--no-ensemble",
        action="store_true",
        help="serve the ONNX model itself as --model-name (no model-metrics step)",
    )
    parser.add_argument(
        "--no-dynamic-batching", action="store_true", help="leave dynamic batching off"
    )
    parser.add_argument(
        "--max-queue-delay-us", type=int, default=500, help="dynamic batching max queue delay"
    )
    parser.add_argument(
        "--low-confidence-threshold",
        type=float,
        default=0.5,
        help="top-1 confidence under which asl_low_confidence_total counts a prediction",
    )
    return parser


def main() -> int:
    args = build_parser().parse_args()
    ctx = init_task("ASL", "build_triton_repo", params=vars(args), task_type="inference")
    params = dict(ctx.params)
    for flag in ("tensorrt", "no_ensemble", "no_dynamic_batching"):
        params[flag] = _bool(params.get(flag))
    try:
        result = build_from_params(params)
    except (ModelSourceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        ctx.close()
        return 1
    print(
        f"Triton repository {result['repo']}: model '{result['model_name']}' "
        f"version {result['version']} (versions {result['versions']}, pruned {result['pruned']})"
    )
    config = Path(result["repo"]) / result["onnx_model"] / "config.pbtxt"
    ctx.upload_artifact("config.pbtxt", str(config))
    ctx.record_outputs(
        repo=result["repo"], model_name=result["model_name"], version=result["version"]
    )
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
