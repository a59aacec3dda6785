"""Builds into one model repository at once, and what a killed build leaves (no server).

Before the build lock, four builds released together (two models whose class lists differ in
order) crashed with "Directory not empty" on the staging rename, left ``.staging-*`` folders,
and in one round of eight left ``labels.txt`` naming the other model's classes beside the newest
version: the server would have answered with the wrong letters."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asl_recognition.classes import read_class_file, write_class_file
from asl_recognition.locks import exclusive
from asl_recognition.paths import REPO_ROOT
from asl_recognition.serving import repository
from asl_recognition.serving.repo_files import version_numbers
from asl_recognition.serving.repo_manifest import BUILD_LOCK, problems, trusted
from asl_recognition.serving.repository import build_repository


def _build(onnx: str, classes: str, repo: str, go, out) -> None:
    go.wait()
    try:
        out.put(build_repository(onnx, classes, repo)["version"])
    except Exception as exc:  # reported to the test, which fails on it
        out.put(f"{type(exc).__name__}: {exc}")


def _served_labels_match_the_newest_version(repo: Path) -> None:
    onnx_dir = repo / "asl_onnx"
    newest = onnx_dir / str(version_numbers(onnx_dir)[-1])
    classes = read_class_file(str(newest / "classes.txt"))
    for labels in (onnx_dir / "labels.txt", repo / "asl" / "labels.txt"):
        assert read_class_file(str(labels)) == classes, labels
    assert not [p.name for p in onnx_dir.iterdir() if p.name.startswith(".")]


def test_builds_at_once_take_turns_and_serve_matching_labels(tiny_models, tmp_path) -> None:
    a, a2 = tiny_models["a"], tiny_models["a2"]
    reordered = tmp_path / "reversed_classes.txt"
    write_class_file(str(reordered), list(reversed(read_class_file(str(a2.classes)))))
    builds = [(str(a.onnx), str(a.classes)), (str(a2.onnx), str(reordered))] * 2
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        repo = tmp_path / f"repo{round_}"
        build_repository(a.onnx, a.classes, repo)
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_build, args=(*b, str(repo), go, out)) for b in builds]
        for proc in procs:
            proc.start()
        go.set()
        for proc in procs:
            proc.join(120)
        results = [out.get(timeout=5) for _ in procs]
        assert all(isinstance(r, int) for r in results), results
        _served_labels_match_the_newest_version(repo)


def test_a_build_waits_while_another_holds_the_repository(tiny_models, tmp_path) -> None:
    """The turn-taking itself: deterministic, where the race above is a matter of timing."""
    a = tiny_models["a"]
    repo = tmp_path / "repo"
    repo.mkdir()
    code = (
        "import sys; from asl_recognition.serving.repository import build_repository; "
        "print(build_repository(sys.argv[1], sys.argv[2], sys.argv[3])['version'])"
    )
    command = [sys.executable, "-c", code, str(a.onnx), str(a.classes), str(repo)]
    with exclusive(repo / BUILD_LOCK):
        build = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        time.sleep(3)  # far longer than the build itself takes (it imports, then writes)
        assert build.poll() is None and not (repo / "asl_onnx").exists()
    assert build.communicate(timeout=120)[0].strip() == "1" and build.returncode == 0
    _served_labels_match_the_newest_version(repo)


def test_a_build_removes_what_a_killed_build_left(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    repo = tmp_path / "repo"
    build_repository(a.onnx, a.classes, repo)
    onnx_dir = repo / "asl_onnx"
    staging = onnx_dir / ".staging-2-k3j9x0aa"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"half a model")
    half_written = [onnx_dir / ".config.pbtxt.a1b2c3d4", repo / "asl" / ".labels.txt.zz_9y8x7"]
    for path in half_written:
        path.write_text("half")
    kept = [onnx_dir / ".notes", onnx_dir / "1" / ".config.pbtxt.keep"]  # not a build's names
    for path in kept:
        path.write_text("mine")
    build_repository(a.onnx, a.classes, repo)
    assert not staging.exists() and not [p for p in half_written if p.exists()]
    assert all(p.read_text() == "mine" for p in kept)


def _labels_agree(repo: Path) -> None:
    """What a polling Triton could load now: every version's classes are the labels beside it."""
    onnx_dir = repo / "asl_onnx"
    labels = [repo / m / "labels.txt" for m in ("asl_onnx", "asl_metrics", "asl")]
    named = [read_class_file(str(p)) for p in labels if p.exists()]
    for version in version_numbers(onnx_dir):
        classes = read_class_file(str(onnx_dir / str(version) / "classes.txt"))
        assert all(n == classes for n in named), f"version {version} beside other labels"


def test_no_moment_of_a_build_pairs_a_version_with_other_labels(
    tiny_models, tmp_path, monkeypatch
) -> None:
    """Poll mode may load between any two writes; the build checks the state after each one.

    Before, the new version went in first and the labels after it: a poll between them served
    the new model under the old class names (here the same classes in reverse order)."""
    import asl_recognition.serving.repo_files as repo_files
    import asl_recognition.serving.repository as repository

    a, a2 = tiny_models["a"], tiny_models["a2"]
    reordered = tmp_path / "reversed_classes.txt"
    write_class_file(str(reordered), list(reversed(read_class_file(str(a2.classes)))))
    repo = tmp_path / "repo"
    build_repository(a.onnx, a.classes, repo)
    writes = []

    def checked(write):
        def run(*args, **kwargs):
            result = write(*args, **kwargs)
            writes.append(write.__name__)
            _labels_agree(repo)
            return result

        return run

    monkeypatch.setattr(repository, "atomic_write", checked(repository.atomic_write))
    for name in ("_publish_version", "remove_version"):
        monkeypatch.setattr(repo_files, name, checked(getattr(repo_files, name)))
    info = build_repository(a2.onnx, reordered, repo)
    assert {"_publish_version", "remove_version", "atomic_write"} <= set(writes), writes
    assert info["version"] == 2 and info["versions"] == [2] and info["pruned"] == [1]
    _served_labels_match_the_newest_version(repo)


def _raises(exc: BaseException):
    def fault(*args, **kwargs):
        raise exc

    return fault


def test_a_build_stopped_half_way_is_refused_until_built_again(
    tiny_models, tmp_path, monkeypatch
) -> None:
    """Ctrl-C after a change of model has written its labels and configs, before its version
    lands (injected there): the build used to record what it had written in ``finally``, so the
    half-built repository passed every check, and Triton would load a model with no version.
    Now it is refused, naming the interruption, until a build finishes."""
    a, b = tiny_models["a"], tiny_models["b"]  # b: other classes, size and architecture
    repo = tmp_path / "repo"
    build_repository(a.onnx, a.classes, repo)
    monkeypatch.setattr(repository, "update_versions", _raises(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        build_repository(b.onnx, b.classes, repo)
    assert read_class_file(str(repo / "asl" / "labels.txt")) == read_class_file(str(b.classes))
    unfinished = "/ (its last build did not finish: KeyboardInterrupt)"
    assert problems(repo) == [f"{m}{unfinished}" for m in ("asl", "asl_metrics", "asl_onnx")]
    assert not trusted(repo)
    monkeypatch.undo()
    assert build_repository(b.onnx, b.classes, repo)["version"] == 1
    assert problems(repo) == [] and trusted(repo)
    _served_labels_match_the_newest_version(repo)


def test_a_build_that_fails_before_changing_anything_leaves_the_repository_served(
    tiny_models, tmp_path, monkeypatch
) -> None:
    """A full disk at the build's first write: what was served is untouched and stays
    trusted, so a running launcher keeps serving it."""
    a, a2 = tiny_models["a"], tiny_models["a2"]
    repo = tmp_path / "repo"
    build_repository(a.onnx, a.classes, repo)
    full = OSError(28, "No space left on device")
    monkeypatch.setattr(repository, "remove_incompatible", _raises(full))
    with pytest.raises(OSError, match="No space left"):
        build_repository(a2.onnx, a2.classes, repo)
    assert problems(repo) == [] and trusted(repo)
    assert version_numbers(repo / "asl_onnx") == [1]


def test_a_first_build_that_fails_leaves_a_refused_repository(
    tiny_models, tmp_path, monkeypatch
) -> None:
    """Without an earlier record a failed first build must still write one, or the half-built
    repository would be served unchecked (a repository with no record is not checked)."""
    a = tiny_models["a"]
    repo = tmp_path / "repo"
    monkeypatch.setattr(repository, "update_versions", _raises(OSError(28, "No space left")))
    with pytest.raises(OSError):
        build_repository(a.onnx, a.classes, repo)
    assert problems(repo) and not trusted(repo)
    assert all("did not finish: OSError: [Errno 28] No space left" in p for p in problems(repo))
