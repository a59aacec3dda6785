"""Read the published ``ASL`` dataset through the store and cache each split as uint8 tensors.

Images are decoded once (through ``asl_recognition.imageio``) into memory: at 64 px the whole
Kaggle sample is ~70 MB, and decoding JPEGs every epoch would make data loading the bottleneck.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from asl_recognition.hashing import sha256_file
from asl_recognition.imageio import ImageDecodeError, load_rgb
from asl_recognition.store import DatasetNotFoundError, get_store
from asl_recognition.store.base import (
    MANIFEST_NAME,
    DatasetIntegrityError,
    DatasetStore,
    DatasetVersion,
    ManifestFormatError,
    check_manifest_format,
)
from asl_recognition.training.errors import TrainingInputError

DATASET_NAME = "ASL"
SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class TensorSplit:
    """One split decoded to ``images`` uint8 [N,3,S,S] and ``labels`` int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.numel())


@dataclass
class PublishedDataset:
    version: DatasetVersion
    root: Path
    manifest: dict[str, Any]
    classes: list[str]
    image_size: int
    manifest_sha256: str = ""

    def lists_holdout(self) -> bool:
        """The manifest lists a held-out split (other signers or sources, never trained on)."""
        return bool(self.manifest.get("splits", {}).get("holdout"))

    def image_splits(self) -> list[str]:
        """The image folders to decode: train, val, test, and holdout when it is there."""
        held = self.lists_holdout() and (self.root / "holdout").is_dir()
        return ["train", "val", "test"] + (["holdout"] if held else [])

    def identity(self) -> dict[str, str]:
        """What a checkpoint records of its data, so that --resume can refuse other data.

        The id names the version; the manifest hash pins its split (the same images split with
        another seed are another manifest).
        """
        return {
            "dataset_id": self.version.id,
            "dataset_version": self.version.version,
            "manifest_sha256": self.manifest_sha256,
        }


def decode_resized(path: str | Path, image_size: int) -> np.ndarray:
    """Decode through the bounded loader and resize to a square ``image_size`` (HWC uint8)."""
    img = load_rgb(path)
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def open_published(ref: str | None, store: DatasetStore | None = None) -> PublishedDataset:
    """Resolve ``ASL`` ``ref`` (id, version, latest) and check it is a usable published version."""
    store = store or get_store()
    try:
        version = store.version_for(DATASET_NAME, ref)
    except DatasetNotFoundError as exc:
        raise TrainingInputError(
            f"dataset {DATASET_NAME} {ref or 'latest'} not found ({exc}); "
            "publish it first (tasks/publish_dataset.py)"
        ) from exc
    try:
        root = Path(store.local_copy(version))
    except DatasetIntegrityError as exc:  # altered since publishing: never trained on
        raise TrainingInputError(str(exc)) from None
    unlisted = _unlisted_images(root, version)
    if unlisted:
        raise TrainingInputError(
            f"dataset {DATASET_NAME} {version.version} ({version.id}) has {unlisted[0]}"
            + (f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else "")
            + f" in {root}, which the version does not list; refused: remove them or publish "
            "a new version"
        )
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise TrainingInputError(
            f"dataset {DATASET_NAME} {version.version} ({version.id}) has no {MANIFEST_NAME}"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise TrainingInputError(f"{manifest_path} is not valid JSON: {exc}") from exc
    try:
        check_manifest_format(manifest, f"dataset {DATASET_NAME} {version.version} ({version.id})")
    except ManifestFormatError as exc:
        raise TrainingInputError(str(exc)) from None
    classes = list(manifest.get("classes") or [])
    if not classes:
        raise TrainingInputError(f"{manifest_path} lists no classes")
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir() or not any(
            p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*")
        ):
            raise TrainingInputError(
                f"dataset {DATASET_NAME} {version.version} ({version.id}) is empty: "
                f"no images in its {split} split"
            )
        extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
        if extra:
            raise TrainingInputError(
                f"dataset {version.id} {split} has class folders {extra} missing from its "
                f"manifest class list"
            )
    image_size = int(manifest.get("image_size") or 0)
    digest = sha256_file(manifest_path)
    return PublishedDataset(version, root, manifest, classes, image_size, digest)


def _unlisted_images(root: Path, version: DatasetVersion) -> list[str]:
    """Files under the image split folders that the version's record does not list.

    ``load_split`` reads folders, so a file dropped into a checkout (or a backend's cache)
    would be trained on as if published; any backend's copy is checked here.
    """
    listed = {entry.path for entry in version.files}
    found = []
    for split in (*SPLITS, "holdout"):
        for path in (root / split).rglob("*"):
            rel = path.relative_to(root).as_posix()
            if (path.is_symlink() or not path.is_dir()) and rel not in listed:
                found.append(rel)
    return sorted(found)


def check_classes(dataset_classes: Sequence[str], expected: Sequence[str], source: str) -> None:
    """Refuse a dataset whose class list (names or index order) differs from ``expected``."""
    if list(dataset_classes) == list(expected):
        return
    missing = [c for c in expected if c not in dataset_classes]
    extra = [c for c in dataset_classes if c not in expected]
    detail = (
        f"missing {missing}, extra {extra}" if missing or extra else "same names, different order"
    )
    raise TrainingInputError(f"dataset class list differs from {source}: {detail}")


class _SplitFolder(ImageFolder):
    """ImageFolder whose class index comes from the manifest, not from sorted folder names."""

    def __init__(self, root: Path, classes: Sequence[str], loader: Callable[[str], Any]) -> None:
        self._manifest_classes = list(classes)
        super().__init__(str(root), loader=loader, allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return self._manifest_classes, {c: i for i, c in enumerate(self._manifest_classes)}


def load_split(root: Path, split: str, classes: Sequence[str], image_size: int) -> TensorSplit:
    """Decode every image of ``split`` once into a uint8 tensor."""
    folder = _SplitFolder(root / split, classes, loader=lambda p: p)
    images = np.empty((len(folder.samples), image_size, image_size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(folder.samples):
        try:
            images[i] = decode_resized(path, image_size)
        except ImageDecodeError as exc:
            raise TrainingInputError(f"cannot decode {path}: {exc}") from exc
    labels = torch.tensor([label for _, label in folder.samples], dtype=torch.int64)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    rel = [Path(p).relative_to(root).as_posix() for p, _ in folder.samples]
    return TensorSplit(tensor, labels, rel)


class AugmentedImages(Dataset):
    """In-memory uint8 images with a per-sample transform (augmentation only, no decoding)."""

    def __init__(self, split: TensorSplit, transform: Callable | None = None) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.split.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.split.labels[index]


def source_balanced_weights(manifest: dict[str, Any], split: TensorSplit) -> torch.Tensor:
    """Draw weights giving every (source, class) cell of the train split the same total mass.

    Without them 5,800 Kaggle frames drown a few hundred photos of other hands, and the model
    learns the Kaggle look; a dataset with one source gets plain class balance.
    """
    source_of = {
        e["path"]: e.get("data_source") or "" for e in manifest["splits"].get("train", [])
    }
    keys = [
        (source_of.get(path, ""), int(label)) for path, label in zip(split.paths, split.labels)
    ]
    counts: dict[tuple[str, int], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return torch.tensor([1.0 / counts[key] for key in keys], dtype=torch.float64)
