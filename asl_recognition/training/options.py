"""The options of ``tasks/train.py``, declared once (see :mod:`asl_recognition.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from asl_recognition.options import MAX_SEED, option
from asl_recognition.paths import REPO_ROOT, SHARED_DATA
from asl_recognition.training.architectures import ARCHITECTURES

AUGMENT_PRESETS = ("none", "light", "strong", "generalise")
BALANCE = ("none", "source")
DEVICES = ("auto", "cpu", "cuda")


def default_external() -> str:
    """The Massey hands when the shared data is present, else the bundled 5-per-letter slice."""
    shared = SHARED_DATA / "asl_external_massey"
    return str(shared if shared.is_dir() else REPO_ROOT / "data" / "external_sample")


@dataclass
class TrainOptions:
    """Train an ASL classifier on a published dataset, export ONNX and register it."""

    dataset_version: str = option("latest", "ASL dataset id, version (e.g. 1.0.2) or 'latest'")
    model: str = option("cnn", "architecture", choices=tuple(ARCHITECTURES))
    landmarks_version: str = option(
        "latest",
        "ASL_landmarks id, version or 'latest' (--model landmarks; must be measured on "
        "--dataset-version)",
    )
    epochs: int = option(30, "maximum epochs (early stopping may end sooner)", low=1)
    batch_size: int = option(64, "batch size", low=1)
    lr: float = option(2e-3, "AdamW learning rate", low=1e-9)
    image_size: int = option(
        0, "square input side in px (0 = the dataset's published image_size)", low=0
    )
    augment: str = option("light", "augmentation preset (no flips)", choices=AUGMENT_PRESETS)
    weights: str | None = option(
        None,
        "optional local state-dict file of the same --model to start from (only the class "
        "head may differ)",
        path=True,
    )
    resume: bool = option(
        False,
        "continue the run in --output-dir (or the newest run of --model) from its last "
        "checkpoint; refused when the dataset version, its split, the model or the image size "
        "differs",
    )
    external: str | None = option(
        None,
        "image folder <CLASS>/* from another source, scored apart (empty: "
        "../shared/data/asl_external_massey if present, else data/external_sample; none: skip; "
        "a folder outside the repository or the commit is dropped, with a warning, for a step "
        "on an agent)",
        path=True,
        remote_fallback="none",
        default_from=default_external,
    )
    seed: int = option(42, "random seed", low=0, high=MAX_SEED)
    device: str = option("auto", "compute device", choices=DEVICES)
    patience: int = option(6, "early stopping: epochs without val macro-F1 gain (0 = off)", low=0)
    max_steps: int = option(0, "cap on batches per epoch (0 = all)", low=0)
    output_dir: str | None = option(
        None, "run folder (empty: <workspace>/runs/...)", path=True, written=True
    )
    num_workers: int = option(
        0, "DataLoader workers for augmentation (0 = in the main process)", low=0
    )
    classes: str | None = option(
        None,
        "expected class list file (empty: the project's 29 classes); a dataset with another "
        "list is refused",
        path=True,
    )
    label_smoothing: float = option(
        0.0, "cross-entropy label smoothing in [0, 1) (0 = off)", low=0.0, high=0.99
    )
    balance: str = option(
        "none",
        "source: draw train images so every (source, class) cell weighs the same",
        choices=BALANCE,
    )
    keep: str = option(
        "best",
        "the weights that become the model: best (highest val macro-F1) or last (the final "
        "epoch; for small in-distribution val sets whose best epoch comes early)",
        choices=("best", "last"),
    )
    register: bool = option(True, "register the model in the model registry")


@dataclass
class LosoOptions:
    """Leave-one-source-out: train the landmark MLP without one source (or signer), score it."""

    landmarks_version: str = option(
        "latest", "ASL_landmarks id, version or 'latest' whose rows the folds use"
    )
    recipe: str = option(
        "configs/generalise.yaml",
        "recipe whose train step's options every fold trains with (epochs, label smoothing, "
        "keep, ...); repo-relative or absolute",
        path=True,
    )
    epochs: int = option(0, "epochs of each fold (0 = the recipe's)", low=0)
    by_signer: list[str] = option(
        ["massey"], "sources left out one signer at a time (the others: one source at a time)"
    )
    groups: list[str] = option(
        [], "leave out only these groups (e.g. webcam massey/hand1; empty: every group)"
    )
    threads: int = option(1, "torch intra-op threads while the folds train", low=1)
    output_dir: str | None = option(
        None,
        "report folder (empty: a new <workspace>/reports/loso/<landmarks id>/<UTC time>-<random> "
        "per run); one run at a time may write in a folder",
        path=True,
        written=True,
    )
