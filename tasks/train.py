"""ClearML task: train an ASL classifier on the published dataset, export ONNX, register it.

Run from the repository root: ``python tasks/train.py --epochs 30``. Bad input ends with a
one-line ``train: error: ...`` message and exit status 1, and overwrites nothing.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.training.augment import PRESETS  # noqa: E402
from asl_recognition.training.errors import TrainingInputError  # noqa: E402
from asl_recognition.training.models import MODEL_NAMES  # noqa: E402
from asl_recognition.training.run import BALANCE, DEFAULTS, default_external  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset-version",
        default=d["dataset_version"],
        help="ASL dataset id, version (1.0.2) or 'latest' (default: latest)",
    )
    parser.add_argument("--model", choices=MODEL_NAMES, default=d["model"], help="architecture")
    parser.add_argument("--epochs", type=int, default=d["epochs"], help="maximum epochs")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"], help="batch size")
    parser.add_argument("--lr", type=float, default=d["lr"], help="AdamW learning rate")
    parser.add_argument(
        "--image-size",
        type=int,
        default=d["image_size"],
        help="square input side in px (0 = the dataset's published image_size)",
    )
    parser.add_argument(
        "--augment", choices=PRESETS, default=d["augment"], help="augmentation preset (no flips)"
    )
    parser.add_argument(
        "--weights", default=d["weights"], help="optional local state-dict file to start from"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --output-dir (or the newest run of --model) "
        "from its last checkpoint",
    )
    parser.add_argument(
        "--external",
        default=default_external(),
        help="external image folder <CLASS>/* for the generalisation check "
        "(default: ../shared/data/asl_external_massey if present, else data/external_sample; "
        "none: skip it, e.g. when that source is in the training data)",
    )
    parser.add_argument("--seed", type=int, default=d["seed"], help="random seed")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=d["device"], help="compute device"
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=d["patience"],
        help="early stopping: epochs without val macro-F1 gain (0 = off)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=d["max_steps"], help="cap on batches per epoch (0 = all)"
    )
    parser.add_argument(
        "--output-dir", default=d["output_dir"], help="run folder (default: <workspace>/runs/...)"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=d["num_workers"],
        help="DataLoader workers for augmentation (0 = in the main process)",
    )
    parser.add_argument(
        "--classes",
        default=d["classes"],
        help="expected class list file (default: the project's 29 classes); a dataset "
        "with another list is refused",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=d["label_smoothing"],
        help="cross-entropy label smoothing in [0, 1) (0 = off)",
    )
    parser.add_argument(
        "--balance",
        choices=BALANCE,
        default=d["balance"],
        help="source: draw train images so every (source, class) cell weighs the same",
    )
    parser.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="do not register the model in the model registry",
    )
    return parser


def main() -> None:
    args = build_parser().parse_args()
    from asl_recognition.tracking import init_task
    from asl_recognition.training.run import run_training

    ctx = init_task("ASL", f"train {args.model}", params=vars(args), task_type="training")
    try:
        outputs = run_training(ctx.params, ctx=ctx)
    except TrainingInputError as exc:
        raise SystemExit(f"train: error: {exc}") from None
    ctx.record_outputs(**outputs)
    ctx.close()


if __name__ == "__main__":
    main()
