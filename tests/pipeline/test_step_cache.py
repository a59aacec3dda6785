"""The step cache across runs on real files: a real local registry and dataset store in a tmp
workspace; a hit is reused only when its files and the ids it names still hold."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.dag import ASL_DAG
from asl_recognition.pipeline.runs import runs_dir
from asl_recognition.pipeline.step_cache import CACHE_NAME, StepCache
from asl_recognition.registry import NewModel, get_registry
from asl_recognition.store import get_store

TRAIN = ASL_DAG.step("train")
PUBLISH = ASL_DAG.step("publish_dataset")
ARGV = ["--epochs", "1"]


@pytest.fixture
def workspace_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``use(ws)`` points ASL_WORKSPACE at ``ws`` (offline, no server)."""
    monkeypatch.setenv("ASL_OFFLINE", "1")
    for key in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)

    def use(ws: Path) -> Path:
        ws.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("ASL_WORKSPACE", str(ws))
        return ws

    use(tmp_path / "ws")
    return use


def cache() -> StepCache:
    steps = StepCache(runs_dir(), REPO_ROOT)
    steps.out = io.StringIO()  # where a dropped entry is reported
    return steps


def train_outputs(ws: Path) -> dict:
    """What tasks/train.py reports: a model registered in the workspace's registry."""
    run_dir = ws / "runs" / f"train-images-{len(list(ws.glob('**/train-images-*')))}"
    run_dir.mkdir(parents=True)
    (run_dir / "model.onnx").write_bytes(b"onnx bytes of a tiny model")
    (run_dir / "classes.txt").write_text("A\nB\n")
    record = get_registry().register(
        NewModel(
            name="asl",
            onnx_path=str(run_dir / "model.onnx"),
            classes_path=str(run_dir / "classes.txt"),
            metrics={"val_macro_f1": 0.5},
        )
    )
    return {
        "model_id": record.id,
        "onnx_path": record.onnx_path,
        "classes_path": record.classes_path,
        "onnx_uri": None,
        "run_dir": str(run_dir),
        "val_macro_f1": 0.5,
    }


def stored_train(ws: Path) -> tuple[StepCache, str, dict]:
    outputs = train_outputs(ws)
    steps = cache()
    key = steps.key(TRAIN, ARGV)
    steps.store(key, TRAIN, "run-1", outputs)
    return steps, key, outputs


def assert_inside(outputs: dict, ws: Path) -> None:
    for name in ("onnx_path", "classes_path", "run_dir"):
        path = Path(outputs[name])
        assert path.is_relative_to(ws.resolve()), (name, path, ws)
        assert path.exists(), (name, path)


@pytest.mark.parametrize("how", ["move", "copy"])
def test_moved_workspace_keeps_its_hits_inside_itself(workspace_env, tmp_path, how):
    old = tmp_path / "ws"
    _, key, _ = stored_train(old)
    new = tmp_path / "moved" / "ws"
    new.parent.mkdir()
    # "copy": the old workspace is still there, its files must not be the ones judged or used
    (shutil.move if how == "move" else shutil.copytree)(old, new)
    workspace_env(new)
    hit = cache().lookup(key)
    assert hit is not None, "a moved workspace lost its cache hit"
    assert_inside(hit["outputs"], new)
    assert hit["run_id"] == "run-1"
    assert get_registry().get(hit["outputs"]["model_id"]).onnx_path == hit["outputs"]["onnx_path"]


def test_paths_inside_the_workspace_are_stored_relative(workspace_env, tmp_path):
    ws = tmp_path / "ws"
    steps, key, outputs = stored_train(ws)
    entry = json.loads(steps.path.read_text())[key]
    assert str(ws) not in json.dumps(entry["outputs"])
    hit = steps.lookup(key)
    assert hit is not None and hit["outputs"] == outputs


def test_old_absolute_entry_outside_the_workspace_is_a_miss(workspace_env, tmp_path):
    """An entry written before paths were relative, pointing into another workspace."""
    old = tmp_path / "ws"
    outputs = train_outputs(old)
    new = workspace_env(tmp_path / "other")
    shutil.copytree(old / "registry", new / "registry")  # the id resolves here too
    steps = cache()
    key = steps.key(TRAIN, ARGV)
    steps.path.parent.mkdir(parents=True, exist_ok=True)
    steps.path.write_text(json.dumps({key: {"step": "train", "run_id": "r", "outputs": outputs}}))
    assert steps.lookup(key) is None
    assert "outside the workspace" in steps.out.getvalue()


def test_altered_registered_model_is_a_miss_and_the_entry_dropped(workspace_env, tmp_path):
    ws = tmp_path / "ws"
    steps, key, outputs = stored_train(ws)
    onnx = ws / "registry" / "files" / outputs["model_id"] / "model.onnx"
    assert Path(outputs["onnx_path"]) == onnx
    onnx.write_bytes(b"tampered")
    assert steps.lookup(key) is None  # so the executor runs train again
    said = steps.out.getvalue()
    assert said.count("\n") == 1 and said.startswith("train: not reusing")
    assert outputs["model_id"] in said and "sha256" in said
    assert key not in json.loads(steps.path.read_text())
    # the re-run registers a new model: its entry is reused by the next run
    rerun = train_outputs(ws)
    steps.store(key, TRAIN, "run-2", rerun)
    assert steps.lookup(key)["outputs"] == rerun


@pytest.mark.parametrize("damage", ["deleted", "stored file lost"])
def test_a_deleted_or_damaged_dataset_version_is_a_miss(workspace_env, tmp_path, damage):
    """A hit whose version had lost a stored file handed every later step a version they
    refuse; missed, the step runs again and repairs it."""
    ws = tmp_path / "ws"
    (ws / "src").mkdir()
    (ws / "src" / "a.txt").write_text("a")
    store = get_store()
    raw = store.create("ASL_raw", {"A/a.txt": ws / "src" / "a.txt"})
    ds = store.create("ASL", {"manifest.json": ws / "src" / "a.txt"}, parents=[raw.id])
    outputs = {
        "dataset_id": ds.id,
        "dataset_version": ds.version,
        "reused": False,
        "raw_dataset_id": raw.id,
        "raw_dataset_ids": [raw.id],
    }
    steps = cache()
    key = steps.key(PUBLISH, ARGV)
    steps.store(key, PUBLISH, "run-1", outputs)
    assert steps.lookup(key)["outputs"] == outputs
    if damage == "deleted":
        (ws / "datasets" / "versions" / f"{ds.id}.json").unlink()
    else:
        sha = ds.files[0].sha256
        (ws / "datasets" / "objects" / sha[:2] / sha).unlink()
    assert steps.lookup(key) is None
    assert (ds.id if damage == "deleted" else "was lost or altered") in steps.out.getvalue()
    assert key not in json.loads((runs_dir() / CACHE_NAME).read_text())
