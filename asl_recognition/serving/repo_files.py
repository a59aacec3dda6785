"""Files of a Triton model repository: atomic writes, numbered versions, paths kept inside it.

Files are written so that a server polling the repository never sees half a model: a version
directory is staged under a hidden name and renamed into place, and a config is only rewritten
when its content changes (a rewrite makes Triton reload the model).

Model names are checked against what Triton accepts before any path is built, and every path
written or deleted is resolved and must lie inside the repository, so no name or symlink can
make the generator touch files elsewhere.

Versions: ``keep_versions`` directories stay on disk (a rollback is deleting the newest one); an
older version stays only while the new config (dims, labels) also describes it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from google.protobuf import text_format

from asl_recognition.classes import read_class_file
from asl_recognition.hashing import sha256_file
from asl_recognition.serving.configs import load_config
from asl_recognition.serving.onnx_introspect import OnnxSignature, read_signature
from asl_recognition.serving.repo_manifest import MANIFEST_FILE, changed_files
from asl_recognition.serving.step_names import STEP_SUFFIXES
from asl_recognition.training.architectures import LANDMARKS

MODEL_FILE = "model.onnx"
VERSION_CLASSES_FILE = "classes.txt"
BUILD_LOCK_WAIT_S = 300.0
STAGING_PREFIX = ".staging-"
# atomic_write's temporary files: "." + the file's name + "." + mkstemp's 8 characters
_WRITE_LEFTOVER = re.compile(r"\.(config\.pbtxt|labels\.txt|model\.py)\.[A-Za-z0-9_]{8}")
_MANIFEST_LEFTOVER = re.compile(re.escape(MANIFEST_FILE) + r"\.[A-Za-z0-9_]{8}")
# Letters, digits, '_', '-', '.'; starts with a letter or digit (so never '.', '..' or hidden);
# short enough for the '_metrics' suffix. No separator can appear, so no path can escape.
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_model_name(name: str) -> str:
    """Refuse a model name Triton would not serve, that is not one plain folder name, or that
    ends like an ensemble's step (:data:`STEP_SUFFIXES`)."""
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    if name.endswith(STEP_SUFFIXES):
        raise ValueError(
            f"invalid model name {name!r}: names ending in {', '.join(STEP_SUFFIXES)} are the "
            "ensemble's steps"
        )
    return name


def inside(root: Path, path: Path) -> Path:
    """``path`` itself if it resolves (symlinks followed) strictly inside ``root``, else refuse."""
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise ValueError(f"{path} resolves to {resolved}, outside the repository {root}")
    return path


def remove_staging_leftovers(root: Path) -> list[Path]:
    """What a killed build left in the model folders: staging folders, half-written files.

    Call it holding the repository's build lock, when no build can be writing them."""
    removed = [p for p in root.iterdir() if p.is_file() and _MANIFEST_LEFTOVER.fullmatch(p.name)]
    for path in removed:
        path.unlink()
    for model_dir in (p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        folders = [model_dir, *(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())]
        for folder in folders:
            for path in folder.iterdir():
                if path.is_symlink():
                    continue
                if path.is_dir() and folder == model_dir and path.name.startswith(STAGING_PREFIX):
                    shutil.rmtree(path)
                elif path.is_file() and _WRITE_LEFTOVER.fullmatch(path.name):
                    path.unlink()
                else:
                    continue
                removed.append(path)
    return removed


def atomic_write(root: Path, path: Path, data: bytes) -> bool:
    """Write only when the content differs; returns whether the file changed. A link is
    replaced even with equal content: the record never trusts one (:mod:`.repo_manifest`)."""
    inside(root, path)
    if not path.is_symlink() and path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def labels_bytes(classes: list[str]) -> bytes:
    """A class list as labels.txt / classes.txt hold it: one name a line."""
    return ("\n".join(classes) + "\n").encode("utf-8")


def version_numbers(model_dir: Path) -> list[int]:
    """The numbered version folders of a model, oldest first ('0...' names are not versions)."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")
    )


def _version_matches(version_dir: Path, sha: str, classes: list[str]) -> bool:
    onnx_file, classes_file = version_dir / MODEL_FILE, version_dir / VERSION_CLASSES_FILE
    return (
        onnx_file.is_file()
        and classes_file.is_file()
        and sha256_file(onnx_file) == sha
        and read_class_file(str(classes_file)) == classes
    )


def _compatible(version_dir: Path, signature: OnnxSignature, classes: list[str]) -> bool:
    """An older version may stay only if the new config (dims, labels) also describes it."""
    try:
        return (
            read_signature(version_dir / MODEL_FILE).key() == signature.key()
            and read_class_file(str(version_dir / VERSION_CLASSES_FILE)) == classes
        )
    except (OSError, ValueError):
        return False


def _publish_version(
    root: Path, model_dir: Path, version: int, onnx_path: Path, classes: list[str]
) -> None:
    target = inside(root, model_dir / str(version))
    staging = Path(
        tempfile.mkdtemp(dir=inside(root, model_dir), prefix=f"{STAGING_PREFIX}{version}-")
    )
    shutil.copyfile(onnx_path, staging / MODEL_FILE)
    (staging / VERSION_CLASSES_FILE).write_bytes(labels_bytes(classes))
    os.chmod(staging, 0o755)
    os.rename(staging, target)


def remove_version(root: Path, model_dir: Path, version: int) -> None:
    """Delete one version folder, never through a symlink nor outside the repository."""
    path = inside(root, model_dir / str(version))
    if path.is_symlink():
        raise ValueError(f"{path} is a symlink; refusing to delete through it")
    shutil.rmtree(path)


def remove_unused_hands(root: Path, model_name: str, recorded: dict[str, dict]) -> str | None:
    """Delete ``<name>_hands`` when the model no longer uses it (a landmark model replaced by an
    image model), if a build of this repository wrote it: Triton would keep its Python stub and
    LiteRT loaded for a model that nothing calls, and it would look served."""
    name = f"{model_name}_hands"
    path = inside(root, root / name)
    if name not in recorded or not path.is_dir() or path.is_symlink():
        return None
    shutil.rmtree(path)
    return name


def check_platform(model_dir: Path, platform: str) -> None:
    """Refuse to overwrite a folder that holds a model of another platform or backend."""
    config_file = model_dir / "config.pbtxt"
    if config_file.is_file():
        try:
            current = load_config(config_file)
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{config_file} is not a model config a build wrote ({exc}); move it away or "
                "use another --model-name"
            ) from None
        if (current.platform or current.backend) not in (platform, ""):
            raise ValueError(
                f"{model_dir} already holds a '{current.platform or current.backend}' model; "
                f"use another --model-name or a fresh --repo"
            )


def model_dirs(root: Path, model_name: str, ensemble: bool, graph_type: str) -> dict[str, Path]:
    """Every folder the build may touch, each checked to resolve inside the repository."""
    check_model_name(model_name)
    onnx, metrics, hands = (model_name + suffix for suffix in STEP_SUFFIXES)
    names = {"onnx": onnx if ensemble else model_name}
    if ensemble:
        names.update(metrics=metrics, ensemble=model_name)
    if ensemble and graph_type == LANDMARKS:
        names["hands"] = hands
    dirs = {key: inside(root, root / name) for key, name in names.items()}
    for key in ("onnx", "hands"):
        for version in version_numbers(dirs[key]) if key in dirs else []:
            inside(root, dirs[key] / str(version))
    return dirs


def remove_changed_versions(root: Path, model_dir: Path, recorded: dict[str, str]) -> list[int]:
    """Delete the versions whose files differ from ``recorded`` (what the last build wrote in
    this model's folder: changed, missing or added since), and versions it does not list:
    copies of registry models, so nothing is lost, and a server started later must not load
    them. Without a record (a repository built before records) every version is left alone."""
    removed = []
    for version in version_numbers(model_dir) if recorded else []:
        prefix = f"{version}/"
        files = {k[len(prefix) :]: v for k, v in recorded.items() if k.startswith(prefix)}
        if changed_files(model_dir, str(version), files):  # with no record, every file is new
            remove_version(root, model_dir, version)
            removed.append(version)
    return removed


def remove_incompatible(
    root: Path, model_dir: Path, signature: OnnxSignature, classes: list[str]
) -> list[int]:
    """Delete the versions that the new config and labels would not describe.

    Called before those are written: in poll mode Triton may load the folder between any two
    writes, and an old version beside the new labels (or the new version beside the old ones)
    would answer with the wrong class names. With no version the model is unavailable instead.
    """
    removed = []
    for old in version_numbers(model_dir):
        if not _compatible(model_dir / str(old), signature, classes):
            remove_version(root, model_dir, old)
            removed.append(old)
    return removed


def update_versions(
    root: Path,
    model_dir: Path,
    onnx_path: Path,
    classes: list[str],
    keep_versions: int,
    newest_before: int = 0,
) -> tuple[int, bool, list[int]]:
    """Publish ``onnx_path`` as the newest version (or reuse it); keep ``keep_versions``.

    The versions there are compatible already (:func:`remove_incompatible`); a new version
    still numbers after ``newest_before``, the newest there was before that removal."""
    sha = sha256_file(onnx_path)
    existing = version_numbers(model_dir)
    reused = bool(existing) and _version_matches(model_dir / str(existing[-1]), sha, classes)
    version = existing[-1] if reused else max(existing + [newest_before]) + 1
    if not reused:
        _publish_version(root, model_dir, version, onnx_path, classes)
    pruned = []
    for old in version_numbers(model_dir)[:-keep_versions]:
        remove_version(root, model_dir, old)
        pruned.append(old)
    return version, reused, sorted(pruned)


def block_bytecode_cache(root: Path, version_dir: Path) -> None:
    """Keep Python from writing ``__pycache__`` next to the step's model.py.

    The backend stub imports model.py with an isolated interpreter (PYTHONDONTWRITEBYTECODE is
    ignored, and the file cannot switch caching off before it is compiled). A new
    ``__pycache__`` folder changes the model folder, and a polling server then reloads the
    model after every start. A plain file of that name makes Python skip the cache silently.
    """
    blocker = inside(root, version_dir / "__pycache__")
    if blocker.is_dir() and not blocker.is_symlink():
        shutil.rmtree(blocker)
    atomic_write(root, blocker, b"")
