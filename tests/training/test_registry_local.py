"""The local registry's files: hashed at registration and checked on every read (#19.4), named
relative to the workspace so it moves and copies whole (#19.5), ids checked by format (#19.17).

The moved workspace is the session's briefly trained CNN (asl_testkit.published), copied twice:
its registry, datasets and runs are the real ones training wrote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from asl_testkit.cli import run_script
from asl_testkit.files import assert_one_line
from asl_testkit.published import trained_model

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.paths import REPO_ROOT
from asl_recognition.registry import ModelIdError, ModelIntegrityError, NewModel, get_registry
from asl_recognition.registry.local import LocalModelRegistry


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.onnx").write_bytes(b"onnx bytes " * 100)
    write_class_file(str(run / "classes.txt"), list(CLASSES))
    (run / "baseline.json").write_text("{}")
    (run / "best.pt").write_bytes(b"checkpoint bytes")
    return {p.name: p for p in run.iterdir()}


def _new(files: dict[str, Path]) -> NewModel:
    return NewModel(
        "asl",
        str(files["model.onnx"]),
        str(files["classes.txt"]),
        baseline_path=str(files["baseline.json"]),
        checkpoint_path=str(files["best.pt"]),
    )


@pytest.mark.parametrize("name", ["model.onnx", "classes.txt", "baseline.json", "checkpoint.pt"])
def test_a_file_altered_after_registration_is_refused_on_every_read(files, tmp_path, name):
    registry = LocalModelRegistry(tmp_path / "registry")
    record = registry.promote(registry.register(_new(files)).id)
    assert registry.get(record.id).sha256.keys() == {"onnx", "classes", "baseline", "checkpoint"}
    assert registry.production().id == record.id
    altered = tmp_path / "registry" / "files" / record.id / name
    altered.chmod(0o644)
    altered.write_bytes(altered.read_bytes()[:-1] + b"!")  # same size, other bytes
    for read in (lambda: registry.get(record.id), registry.production):
        with pytest.raises(ModelIntegrityError) as info:
            read()
        assert_one_line(str(info.value), str(altered), "sha256 recorded at registration")
    altered.unlink()
    with pytest.raises(ModelIntegrityError, match=f"{name} cannot be read"):
        registry.get(record.id)


def test_a_record_without_hashes_is_refused(files, tmp_path) -> None:
    """Made before hashes were recorded: nothing to check its files against."""
    registry = LocalModelRegistry(tmp_path / "registry")
    record = registry.register(_new(files))
    path = tmp_path / "registry" / "records" / f"{record.id}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "sha256": {}}))
    with pytest.raises(ModelIntegrityError, match="register the model again"):
        registry.get(record.id)


def test_records_name_their_files_relative_to_the_registry(files, tmp_path) -> None:
    registry = LocalModelRegistry(tmp_path / "registry")
    record = registry.register(_new(files))
    stored = json.loads((tmp_path / "registry" / "records" / f"{record.id}.json").read_text())
    for key, name in (("onnx_path", "model.onnx"), ("checkpoint_path", "checkpoint.pt")):
        assert stored[key] == f"files/{record.id}/{name}"
        assert getattr(record, key) == str(tmp_path / "registry" / "files" / record.id / name)


@pytest.mark.parametrize("bad", ["../../x", "../records/x", "/etc/passwd", "x" * 32, "A" * 32])
def test_an_id_that_is_not_one_never_reaches_a_path(files, tmp_path, bad) -> None:
    registry = LocalModelRegistry(tmp_path / "ws" / "registry")
    planted = registry.register(_new(files)).to_dict()
    (tmp_path / "ws" / "x.json").write_text(json.dumps(planted))  # what ../../x would read
    with pytest.raises(ModelIdError) as info:
        registry.get(bad)
    assert_one_line(str(info.value), "is not a model id", "32 lowercase hex digits")


@pytest.mark.parametrize("bad", ["../../../escaped", "0123456789abcdef0123456789abcdef"])
def test_a_record_whose_id_is_not_its_file_name_is_one_line(files, tmp_path, bad) -> None:
    """The id inside a record names its files folder and where a promotion writes it: an edited
    ``../../../escaped`` made production a model outside the registry, and the next promotion
    a traceback writing outside it; a copied record served another model under its name."""
    registry = LocalModelRegistry(tmp_path / "ws" / "registry")
    kept = registry.promote(registry.register(_new(files)).id)
    shutil.copytree(tmp_path / "ws" / "registry" / "files" / kept.id, tmp_path / "escaped")
    forged = tmp_path / "ws" / "registry" / "records" / "fedcba9876543210fedcba9876543210.json"
    forged.write_text(json.dumps({**kept.to_dict(), "id": bad, "version": 2}))
    for read in (registry.production, lambda: registry.get(forged.stem)):
        with pytest.raises(ModelIntegrityError) as info:
            read()
        assert_one_line(str(info.value), str(forged), "is not its file name's 32 hex digits")


def _task_main(script: str):
    """A task script's ``main`` imported by path (one process: no 10 s interpreter start)."""
    spec = importlib.util.spec_from_file_location(f"task_{script}", REPO_ROOT / "tasks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_predict_refuses_a_path_as_model_id_and_a_tampered_model(
    tmp_path_factory, tmp_path, monkeypatch, capsys
) -> None:
    """``predict --model-id ../../x`` read any JSON file; a tampered model was run."""
    workspace, record = trained_model(tmp_path_factory)
    capsys.readouterr()  # the session's model may have been trained just now
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    monkeypatch.setenv("ASL_WORKSPACE", str(ws))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    planted = json.loads((ws / "registry" / "records" / f"{record.id}.json").read_text())
    (ws / "x.json").write_text(json.dumps({**planted, "id": "../../x"}))
    image = str(sorted((REPO_ROOT / "data" / "test_images").glob("*.jpg"))[0])
    predict = _task_main("predict.py")
    assert predict(["--image", image, "--model-id", "../../x", "--registry", "local"]) == 2
    assert_one_line(capsys.readouterr().err, "predict: error:", "is not a model id")

    onnx = ws / "registry" / "files" / record.id / "model.onnx"
    onnx.chmod(0o644)
    data = bytearray(onnx.read_bytes())
    data[-200] ^= 0xFF  # one weight byte
    onnx.write_bytes(bytes(data))
    assert predict(["--image", image, "--model-id", record.id, "--registry", "local"]) == 2
    assert_one_line(capsys.readouterr().err, "predict: error:", str(onnx), "sha256")


def test_a_moved_or_copied_workspace_reads_and_serves_its_own_files(
    tmp_path_factory, tmp_path, monkeypatch
) -> None:
    from asl_recognition.serving.repository import build_repository
    from asl_recognition.serving.sources import model_files

    workspace, record = trained_model(tmp_path_factory)
    first, copy, moved = tmp_path / "first", tmp_path / "copy", tmp_path / "elsewhere" / "ws"
    shutil.copytree(workspace, first)
    shutil.copytree(first, copy)
    shutil.rmtree(first)  # the copy must not need the workspace it was copied from
    monkeypatch.setenv("ASL_OFFLINE", "1")
    for ws in (copy, moved):
        if ws == moved:
            moved.parent.mkdir()
            os.rename(copy, moved)
        monkeypatch.setenv("ASL_WORKSPACE", str(ws))
        registry = get_registry("local")
        registry.promote(record.id)
        onnx, classes = model_files(model_id="production", registry=registry)
        assert onnx == ws / "registry" / "files" / record.id / "model.onnx"
        assert Path(registry.get(record.id).checkpoint_path).is_relative_to(ws)
        info = build_repository(onnx, classes, ws / "triton_repo")
        assert info["model_name"] == "asl"
        assert (ws / "triton_repo" / "asl_onnx").is_dir()


@pytest.mark.parametrize(
    "script", ["tasks/build_triton_repo.py", "tasks/optimize_model.py", "tasks/select_best.py"]
)
def test_an_unknown_model_id_is_one_line_in_every_task_that_takes_one(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "ASL_"))}
    env.update(ASL_WORKSPACE=str(tmp_path / "ws"), HOME=str(tmp_path))
    unknown = "0123456789abcdef0123456789abcdef"
    result = run_script(script, "--model-id", unknown, env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last == f"{Path(script).stem}: error: no model with id {unknown} in {tmp_path}/ws/registry"
    )


@pytest.mark.parametrize(
    "text",
    ["null", "[1]", '"a string"', '{"id": ', "<tags null>", "<version null>", "<baseline_path 5>"],
)
def test_a_record_that_is_no_json_object_is_one_line_and_leaves_no_copies(files, tmp_path, text):
    """``null`` or ``[1]`` ended in an AttributeError traceback; a failed registration left its
    copied files under files/<id> with no record naming them."""
    registry = LocalModelRegistry(tmp_path / "registry")
    kept = registry.register(_new(files))
    bad = tmp_path / "registry" / "records" / "0123456789abcdef0123456789abcdef.json"
    if text.startswith("<"):  # a copy of a real record, one field of the wrong type
        field, value = text[1:-1].split()
        data = json.loads((bad.parent / f"{kept.id}.json").read_text())
        text = json.dumps({**data, "id": bad.stem, field: json.loads(value)})
    bad.write_text(text)
    for read in (registry.list, registry.production):
        with pytest.raises(ModelIntegrityError) as info:
            read()
        assert_one_line(str(info.value), str(bad), "is not a readable record")
    with pytest.raises(ModelIntegrityError):
        registry.register(_new(files))
    assert sorted(p.name for p in (tmp_path / "registry" / "files").iterdir()) == [kept.id]


def test_train_refuses_an_unreadable_registry_before_it_trains(tmp_path) -> None:
    """Before, the whole training ran, then registration died in a traceback, leaving the
    model's copied files in the registry with no record."""
    from asl_testkit.published import publish_sample
    from asl_testkit.workspaces import offline_workspace

    ws = tmp_path / "ws"
    with offline_workspace(ws):
        dataset_id = publish_sample(tmp_path, per_class=4)
    records = ws / "registry" / "records"
    records.mkdir(parents=True)
    (records / "0123456789abcdef0123456789abcdef.json").write_text('{"id": ')
    env = dict(os.environ, ASL_WORKSPACE=str(ws), ASL_OFFLINE="1")
    proc = run_script("tasks/train.py", "--dataset-version", dataset_id, "--epochs", "1", env=env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "is not a readable record" in last, proc.stderr[-3000:]
    assert "run dir:" not in proc.stdout  # refused before the training started
    assert list((ws / "registry" / "files").iterdir()) == []


KILLED_REGISTRATION = """
import os, signal, sys
import asl_recognition.registry.local as local
from asl_recognition.registry import NewModel
def die(*args, **kwargs):
    print(os.getpid(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[2] == "copied":
    local.sha256_file = die  # the files copied, none hashed yet
else:
    local.LocalModelRegistry._write = die  # the folder renamed into place, no record yet
registry = local.LocalModelRegistry(sys.argv[1])
registry.register(NewModel("asl", sys.argv[3], sys.argv[4]))
"""


@pytest.mark.parametrize("moment", ["copied", "renamed"])
def test_a_registration_killed_mid_way_leaves_no_files_that_no_record_names(
    files, tmp_path, moment
) -> None:
    """kill -9 during registration had left model files in the registry that no record named
    (found by review). The next registry start removes a dead writer's copies; the next
    registration removes a folder renamed into place whose record was never written."""
    root = tmp_path / "registry"
    kept = LocalModelRegistry(root).register(_new(files))  # a registered model stays whole
    proc = run_script(
        "-c", KILLED_REGISTRATION, str(root), moment, str(files["model.onnx"]),
        str(files["classes.txt"]), env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    left = {p.name for p in (root / "files").iterdir()} - {kept.id}
    assert len(left) == 1 and not list((root / "records").glob(".*"))
    live = root / "files" / f".{'a' * 32}.tmp{os.getpid()}"  # a writer still running: untouched
    live.mkdir()
    registry = LocalModelRegistry(root)
    if moment == "renamed":
        (orphan,) = left
        assert len(orphan) == 32 and (root / "files" / orphan / "model.onnx").is_file()
        assert (root / "files" / orphan).exists()  # no registration yet: nothing removed
    new = registry.register(_new(files))
    assert {p.name for p in (root / "files").iterdir()} == {kept.id, new.id, live.name}
    assert {r.id for r in registry.list()} == {kept.id, new.id}
    assert registry.get(kept.id).version == 1 and registry.get(new.id).version == 2
