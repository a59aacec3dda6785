"""Tasks fetch the hand models themselves: an empty cache (a fresh agent, ``ASL_HAND_MODELS``
pointing at an empty folder) is filled from the pinned wheel before the landmarker and the Triton
hand model use it; a tampered cache file is refused, not replaced; offline, the error is one line
that says what to do; two fetches into one folder wait for each other.

pip is pointed at a local find-links folder holding the pinned wheel (``PIP_NO_INDEX``), so these
tests go through the real ``pip download`` without the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from asl_recognition.hands import HandLandmarker, ModelFileError, verify_models
from asl_recognition.hands.models import ENV_VAR, LOCK_NAME, MODEL_FILES, copy_models
from asl_recognition.hashing import sha256_file
from asl_recognition.imageio import load_rgb
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA
from asl_recognition.serving.hands_repository import publish_hands_version

FETCH_IN_A_TASK = "from asl_recognition.hands import hand_models; print(hand_models())"


def pip_env(find_links: Path | None) -> dict[str, str]:
    """pip with no config and no index: the wheel from ``find_links``, or nothing at all."""
    return {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(find_links) if find_links else "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
    }


@pytest.fixture
def local_wheel_pip(mediapipe_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = pip_env(mediapipe_wheel.parent)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``ASL_HAND_MODELS`` set to a folder that does not exist yet, as on a fresh agent."""
    cache = tmp_path / "hand_models_cache"
    monkeypatch.setenv(ENV_VAR, str(cache))
    return cache


def model_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


def test_the_landmarker_fetches_an_empty_cache_then_finds_hands(
    empty_cache: Path, local_wheel_pip: dict[str, str]
) -> None:
    landmarker = HandLandmarker()  # as publish_landmarks and train build theirs
    assert verify_models(empty_cache) == empty_cache
    assert model_files(empty_cache) == sorted(MODEL_FILES)
    photos = sorted((SAMPLE_DATA / "B").glob("*.jpg"))[:5]
    found = [landmarker.detect(np.asarray(load_rgb(p))) for p in photos]
    assert any(result is not None for result in found)


def test_the_triton_hand_model_is_staged_from_an_empty_cache(
    empty_cache: Path, local_wheel_pip: dict[str, str], tmp_path: Path
) -> None:
    """build_triton_repo's path: publish_hands_version copies from the (fetched) cache."""
    version, removed = publish_hands_version(tmp_path / "signs_hands", [])
    assert (version, removed) == (1, [])
    assert verify_models(tmp_path / "signs_hands" / "1")
    assert verify_models(empty_cache) == empty_cache


def test_an_explicit_folder_is_only_verified(
    tmp_path: Path, local_wheel_pip: dict[str, str]
) -> None:
    """A Triton version folder is never filled behind the caller's back."""
    folder = tmp_path / "version"
    with pytest.raises(ModelFileError, match="is missing"):
        HandLandmarker(folder)
    assert not folder.exists()


def test_a_tampered_cached_file_is_refused_in_one_line(
    hand_models: Path, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in pip_env(None).items():  # a refetch would fail: proves none was tried
        monkeypatch.setenv(key, value)
    copy_models(empty_cache, hand_models)
    target = empty_cache / "hand_landmark_full.tflite"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    (empty_cache / "palm_detection_lite.tflite").unlink()  # missing and altered: altered wins
    with pytest.raises(ModelFileError) as info:
        HandLandmarker()
    message = str(info.value)
    assert "\n" not in message
    assert "hand_landmark_full.tflite has sha256" in message and "make hand-models" in message
    assert target.read_bytes() == bytes(data)  # refused, not silently replaced
    assert not (empty_cache / "palm_detection_lite.tflite").exists()


def test_offline_the_task_error_is_one_line_naming_the_way_out(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in pip_env(None).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ModelFileError) as info:
        HandLandmarker()
    message = str(info.value)
    assert "\n" not in message
    assert "cannot download mediapipe==0.10.21" in message
    assert "make hand-models" in message and ENV_VAR in message
    assert model_files(empty_cache) == []


def test_a_python_without_pip_is_named_as_the_cause(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """clearml-agent's uv venvs are made without pip (clearml_agent/helper/package/uv_api.py,
    ``uv venv`` without ``--seed``): a real venv without pip runs the download, and the error
    names the missing pip, not a network that works."""
    venv = tmp_path / "venv_without_pip"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    monkeypatch.setattr(sys, "executable", str(venv / "bin" / "python"))
    with pytest.raises(ModelFileError) as info:
        verify_models()
    message = str(info.value)
    assert "\n" not in message and "offline" not in message
    assert f"{venv / 'bin' / 'python'} has no pip" in message and ENV_VAR in message
    assert model_files(empty_cache) == []


def task_process(cache: Path, pip: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, **pip, ENV_VAR: str(cache), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", FETCH_IN_A_TASK],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def holds_open(proc: subprocess.Popen, path: Path, timeout: float = 60.0) -> bool:
    """Whether ``proc`` opens ``path`` within ``timeout`` s (read from /proc/PID/fd)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False  # it ended without waiting for the lock
        try:
            targets = {os.readlink(fd) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()}
        except OSError:
            continue
        if str(path) in targets:
            return True
        time.sleep(0.05)
    return False


def test_a_fetch_waits_for_the_one_in_progress(
    hand_models: Path, mediapipe_wheel: Path, tmp_path: Path
) -> None:
    """While this test holds the lock (a fetch in progress), an offline task waits; it then
    finds the files the first fetch wrote and needs no network."""
    import fcntl

    cache = tmp_path / "cache"
    cache.mkdir()
    with open(cache / LOCK_NAME, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        proc = task_process(cache, pip_env(None))
        try:
            assert holds_open(proc, cache / LOCK_NAME), proc.communicate(timeout=60)
            time.sleep(0.5)
            assert proc.poll() is None  # blocked in flock
            copy_models(cache, hand_models)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == str(cache)


def test_two_fetches_at_once_leave_one_verified_folder(
    mediapipe_wheel: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    procs = [task_process(cache, pip_env(mediapipe_wheel.parent)) for _ in range(2)]
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    assert verify_models(cache) == cache
    assert model_files(cache) == sorted(MODEL_FILES)  # no partials left
    for name, (_member, expected) in MODEL_FILES.items():
        assert not expected or sha256_file(cache / name) == expected
