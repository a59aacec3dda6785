"""A real published ``ASL`` dataset built from data/sample, for the training tests.

The data helper's publish step is not used on purpose: these tests pin the dataset contract
(``<split>/<CLASS>/<file>`` + manifest.json, parent = an ASL_raw version) on their own.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from asl_testkit.workspaces import offline_workspace
from PIL import Image

from asl_recognition.classes import CLASSES
from asl_recognition.options import from_mapping
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA
from asl_recognition.training.options import TrainOptions

EXTERNAL_SAMPLE = REPO_ROOT / "data" / "external_sample"

TEST_SIZE = 32


def train_options(**values: Any) -> TrainOptions:
    """Typed train options, converted and range-checked as the command line does."""
    return from_mapping(TrainOptions, values)


def _frame(path: Path) -> int:
    match = re.search(r"(\d+)", path.stem)
    return int(match.group(1)) if match else 0


def _stage(source: Path, dest: Path, image_size: int) -> Path:
    """``source`` resized as the data stage stores images (RGB JPEG, quality 95)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.open(source).convert("RGB").resize((image_size, image_size)).save(dest, quality=95)
    return dest


def publish_sample(
    workdir: Path,
    image_size: int = TEST_SIZE,
    classes: list[str] | None = None,
    manifest_classes: list[str] | None = None,
    per_class: int = 20,
    empty: bool = False,
    holdout_hands: tuple[str, ...] = (),
    split_seed: int | None = None,
) -> str:
    """Publish ASL_raw + ASL (train 12 / val 4 / test 4 frames per class, frame-ordered).

    ``holdout_hands`` (e.g. ``("hand4", "hand5")``) adds a ``holdout`` split of those Massey
    signers from data/external_sample, labelled ``massey/<hand>`` as publish_dataset does.
    ``split_seed`` shuffles each class's frames before the cut: the same images, split anew.
    """
    from asl_recognition.store import get_store
    from asl_recognition.store.base import MANIFEST_FORMAT

    if not SAMPLE_DATA.is_dir():
        pytest.skip(f"{SAMPLE_DATA} missing (bundled real sample)")
    classes = list(classes or CLASSES)
    store = get_store()
    raw_files = {}
    for cls in classes:  # the same frames as the ASL version below: each image's raw photo
        for path in sorted((SAMPLE_DATA / cls).glob("*.jpg"), key=_frame)[:per_class]:
            raw_files[f"{cls}/{path.name}"] = path
    raw = store.create("ASL_raw", raw_files, metadata={"validation": {"success": True}})
    staging = workdir / f"staging-{image_size}"
    files: dict[str, Path] = {}
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for cls in classes:
        frames = sorted((SAMPLE_DATA / cls).glob("*.jpg"), key=_frame)[:per_class]
        if split_seed is not None:
            random.Random(f"{split_seed}:{cls}").shuffle(frames)
        n = len(frames)
        cut1, cut2 = int(n * 0.6), int(n * 0.8)
        for i, path in enumerate(frames):
            split = "train" if i < cut1 else "val" if i < cut2 else "test"
            if empty:
                continue
            rel = f"{split}/{cls}/{path.name}"
            files[rel] = _stage(path, staging / rel, image_size)
            splits[split].append(
                {
                    "path": rel,
                    "source": f"{cls}/{path.name}",
                    "group": f"{cls}:{split}",
                    "class": cls,
                    "raw_dataset_id": raw.id,
                }
            )
    splits["holdout"] = []
    for path in sorted(EXTERNAL_SAMPLE.glob("*/*")):
        hand = path.name.split("_", 1)[0]
        if hand not in holdout_hands or path.parent.name not in classes:
            continue
        rel = f"holdout/{path.parent.name}/{path.stem}.jpg"
        files[rel] = _stage(path, staging / rel, image_size)
        splits["holdout"].append(
            {
                "path": rel,
                "source": f"massey/{path.parent.name}/{path.name}",
                "class": path.parent.name,
                "data_source": "massey",
                "signer": hand,
                "holdout_label": f"massey/{hand}",
                "raw_dataset_id": raw.id,  # not among its files: measured as unreadable
            }
        )
    if not splits["holdout"]:
        del splits["holdout"]
    manifest = {
        "format": MANIFEST_FORMAT,
        "classes": manifest_classes or classes,
        "image_size": image_size,
        "grouping": "frame",
        "leaky": False,
        "seed": 0 if split_seed is None else split_seed,
        "raw_dataset_id": raw.id,
        "splits": splits,
    }
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "manifest.json").write_text(json.dumps(manifest))
    files["manifest.json"] = staging / "manifest.json"
    return store.create("ASL", files, parents=[raw.id], metadata={"image_size": image_size}).id


HOLDOUT_HANDS = ("hand4",)
_TRAINED: dict[str, object] = {}


def trained_model(tmp_path_factory: pytest.TempPathFactory):
    """A 32 px CNN trained for six steps on a published sample with a held-out group.

    Trained once per test session (test_predict.py shares it): (workspace, registry record).
    """
    if "model" not in _TRAINED:
        root = tmp_path_factory.mktemp("optimize")
        with offline_workspace(root / "ws"):
            from asl_recognition.registry import get_registry
            from asl_recognition.training.run import run_training

            dataset_id = publish_sample(root, holdout_hands=HOLDOUT_HANDS)
            options = train_options(
                dataset_version=dataset_id,
                epochs=1,
                max_steps=6,
                lr=0.01,
                batch_size=32,
                augment="none",
                external="none",
                seed=3,
            )
            outputs = run_training(options)
            _TRAINED["model"] = (root / "ws", get_registry("local").get(outputs["model_id"]))
    return _TRAINED["model"]
