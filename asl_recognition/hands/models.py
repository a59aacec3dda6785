"""The two hand models (palm detector, 21-point landmarker): one pinned source, verified by sha256.

The ``.tflite`` files come from one PyPI wheel, ``mediapipe==0.10.21`` (Apache-2.0), downloaded
with pip (never from a model hub at run time). The wheel and every extracted file are checked
against the hashes recorded here, so a partial download or an altered file is refused before an
interpreter ever reads it. Fetching is idempotent: verified files already in the folder mean no
network at all.

Every task gets its folder from :func:`hand_models` (what ``verify_models()`` with no folder
means): the project's cache, fetched on first use, so a fresh agent needs no ``make hand-models``.
A folder given explicitly (a Triton model version) is only verified. Fetches into one folder are
serialised with a file lock, so two steps on one agent never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from asl_recognition.hashing import sha256_file
from asl_recognition.paths import REPO_ROOT

WHEEL_SPEC = "mediapipe==0.10.21"
WHEEL_NAME = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
# The platform wheel is named explicitly so any interpreter (3.10 in the Triton image included)
# fetches the same bytes; the model files inside are platform independent.
PIP_PLATFORM_ARGS = (
    "--only-binary=:all:",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--platform",
    "manylinux_2_28_x86_64",
)

# file name in the cache folder -> (member inside the wheel, sha256)
MODEL_FILES: dict[str, tuple[str, str]] = {
    "palm_detection_full.tflite": (
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    ),
    "hand_landmark_full.tflite": (
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    ),
    "palm_detection_lite.tflite": (
        "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
        "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
    ),
    "hand_landmark_lite.tflite": (
        "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
        "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
    ),
    "LICENSE": ("mediapipe-0.10.21.dist-info/LICENSE", ""),
}
# The wheel's licence travels with the models; it is not hashed (text, not executed).
ENV_VAR = "ASL_HAND_MODELS"
DEFAULT_DIR = REPO_ROOT / ".cache" / "hand_models"
PIP_TIMEOUT_S = 600
LOCK_NAME = ".fetch.lock"  # beside the model files; held while one process fetches
HOW_TO_FETCH = f"run `make hand-models` or set {ENV_VAR} to a folder holding the verified files"


class ModelFileError(RuntimeError):
    """A model file that is missing, altered or cannot be fetched; the message says what to do."""


class ModelFileMissing(ModelFileError):
    """A model file is absent (as in an empty cache): fetching it is safe."""


def models_dir(path: str | Path | None = None) -> Path:
    """The folder holding the model files: ``path``, else env ``ASL_HAND_MODELS``, else .cache."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _check(folder: Path) -> Path:
    """Every model file present with its recorded sha256; an altered file is named before a
    missing one, so fetching (which only fills missing files) never hides a tampered cache."""
    missing = []
    for name, (_member, expected) in MODEL_FILES.items():
        path = folder / name
        if not path.is_file():
            missing.append(path)
            continue
        actual = sha256_file(path) if expected else ""
        if actual != expected:
            raise ModelFileError(
                f"{path} has sha256 {actual[:16]}..., expected {expected[:16]}... "
                f"(altered or partial); delete it and {HOW_TO_FETCH}"
            )
    if missing:
        raise ModelFileMissing(f"{missing[0]} is missing; {HOW_TO_FETCH}")
    return folder


def verify_models(folder: str | Path | None = None) -> Path:
    """Check every model file in ``folder`` against its recorded sha256; raise on a bad one.

    No ``folder`` means the project's cache, fetched when files are missing (:func:`hand_models`).
    """
    if folder is None:
        return hand_models()
    return _check(Path(folder))


def hand_models() -> Path:
    """The verified model folder every task uses: env ``ASL_HAND_MODELS``, else .cache.

    Missing files are fetched (pinned wheel, sha256-checked); an altered file is refused, not
    silently replaced (``make hand-models`` repairs on purpose).
    """
    return ensure_models(repair=False)


def _download_wheel(dest: Path) -> Path:
    """``pip download`` the pinned wheel into ``dest``; a one-line error when pip cannot."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
    ]
    cmd += [*PIP_PLATFORM_ARGS, "--dest", str(dest), WHEEL_SPEC]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ModelFileError(f"pip download {WHEEL_SPEC} took over {PIP_TIMEOUT_S} s") from exc
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        if "No module named pip" in last:  # clearml-agent's uv venvs are made without pip
            raise ModelFileError(
                f"cannot download {WHEEL_SPEC}: {sys.executable} has no pip; install "
                f"requirements.txt into it (it pins pip), or set {ENV_VAR} to a folder holding "
                "the verified model files"
            )
        raise ModelFileError(
            f"cannot download {WHEEL_SPEC} (offline?): {last}; run `make hand-models` where pip "
            f"reaches the index (or scripts/fetch_hand_models.py --wheel <a copy of {WHEEL_NAME}>)"
            f", or set {ENV_VAR} to a folder holding the verified model files"
        )
    return wheel


def _extract(wheel: Path, folder: Path) -> None:
    """Verify the wheel, then write each needed member atomically (temp name, then rename)."""
    if sha256_file(wheel) != WHEEL_SHA256:
        raise ModelFileError(f"{wheel} does not have the recorded sha256 of {WHEEL_NAME}")
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name, (member, expected) in MODEL_FILES.items():
            data = archive.read(member)
            if expected and hashlib.sha256(data).hexdigest() != expected:
                raise ModelFileError(f"{member} in {wheel} does not have its recorded sha256")
            partial = folder / f".{name}.{os.getpid()}.partial"
            partial.write_bytes(data)
            os.replace(partial, folder / name)


@contextlib.contextmanager
def _fetch_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder/.fetch.lock`` (released when the process dies)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a+b")
    except OSError as exc:
        raise ModelFileError(
            f"cannot write the hand models to {folder}: {exc.strerror or exc}; {HOW_TO_FETCH}"
        ) from None
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_models(
    folder: str | Path | None = None, wheel: str | Path | None = None, repair: bool = True
) -> Path:
    """Make ``folder`` hold the verified model files and return it (no network if already so).

    ``wheel`` is a local copy of the pinned wheel for offline machines; otherwise pip fetches it.
    ``repair=False`` fetches only missing files and refuses an altered one.
    """
    folder = models_dir(folder)
    try:
        return _check(folder)
    except ModelFileMissing:
        pass
    except ModelFileError:
        if not repair:
            raise
    with _fetch_lock(folder):
        try:  # another process may have fetched while this one waited for the lock
            return _check(folder)
        except ModelFileMissing:
            pass
        except ModelFileError:
            if not repair:
                raise
        if wheel is not None:
            _extract(Path(wheel), folder)
        else:
            with tempfile.TemporaryDirectory(prefix="hand_models_") as tmp:
                _extract(_download_wheel(Path(tmp)), folder)
    if folder.resolve() == DEFAULT_DIR.resolve():
        # Downloaded artefacts never belong in the repository's history.
        (DEFAULT_DIR.parent / ".gitignore").write_text("*\n")
    return _check(folder)


def copy_models(dest: Path, source: str | Path | None = None) -> Path:
    """Copy the verified model files into ``dest`` (e.g. a Triton model version folder).

    No ``source``: the project's cache, fetched when empty (:func:`hand_models`).
    """
    source = verify_models(source)
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy2(source / name, dest / name)
    return verify_models(dest)
