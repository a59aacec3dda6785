"""Bad training input: a clear one-line error, and nothing that existed before is touched.

Every case is a real run on real images (data/sample) against a workspace that already holds a
finished training run and its registry record; the workspace is fingerprinted (every file's
size, mtime and sha256) before the bad run and compared after it. Two cases go
through ``tasks/train.py`` as subprocesses (exit status 1, ``train: error: ...`` on stderr);
they run side by side because most of their time is ClearML's offline close, not CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from asl_testkit.cli import lock_held_elsewhere
from asl_testkit.files import assert_one_line, assert_untouched, fingerprint
from asl_testkit.published import publish_sample, train_options
from asl_testkit.workspaces import offline_workspace

from asl_recognition.classes import CLASSES, write_class_file
from asl_recognition.image_size import MIN_IMAGE_SIZE, check_image_size
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA
from asl_recognition.registry.base import ModelIntegrityError
from asl_recognition.training.architectures import ARCHITECTURES, reads_images
from asl_recognition.training.data import load_split, open_published
from asl_recognition.training.errors import NonFiniteLossError, TrainingInputError
from asl_recognition.training.loop import LoopConfig, Trainer, check_resumable
from asl_recognition.training.models import (
    build_model,
    head_keys,
    load_weights,
    small_cnn,
)
from asl_recognition.training.run import run_training
from asl_recognition.training.run_inputs import prepare

FAST = {"model": "cnn", "batch_size": 32, "augment": "none", "external": "none", "epochs": 1}


@dataclass
class Prior:
    """A workspace with a published sample, one finished run and its registry record."""

    root: Path
    ws: Path
    dataset_id: str
    previous: Path
    model_id: str


@pytest.fixture(scope="module")
def prior(tmp_path_factory) -> Prior:
    root = tmp_path_factory.mktemp("inputs")
    ws = root / "ws"
    with offline_workspace(ws):
        dataset_id = publish_sample(root)
        previous = ws / "runs" / "previous"
        out = run_training(train_options(**FAST, max_steps=2, output_dir=str(previous)))
        yield Prior(root, ws, dataset_id, previous, out["model_id"])


def refused(prior: Prior, params: dict) -> str:
    """Train on the good sample unless ``params`` say otherwise; return the refusal message."""
    with pytest.raises(TrainingInputError) as info:
        run_training(train_options(**{**FAST, "dataset_version": prior.dataset_id, **params}))
    return str(info.value)


def _subprocess_env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(ws), ASL_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("ASL_STEP_OUTPUTS", None)
    return env


@pytest.mark.slow
def test_task_script_errors_are_one_line(prior: Prior, tmp_path) -> None:
    # (a) no dataset at all: a workspace holding only an earlier run and the registry
    bare = tmp_path / "bare_ws"
    for part in ("runs", "registry"):
        shutil.copytree(prior.ws / part, bare / part, copy_function=shutil.copy2)
    # (b) the project's class list in another order: same names, different indices
    swapped = list(CLASSES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    classes_file = tmp_path / "classes.txt"
    write_class_file(str(classes_file), swapped)
    cases = {
        "missing": (bare, ["--dataset-version", "latest"]),
        "classes": (
            prior.ws,
            ["--classes", str(classes_file), "--dataset-version", prior.dataset_id],
        ),
    }
    before = {name: fingerprint(ws) for name, (ws, _) in cases.items()}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "tasks/train.py", "--epochs", "1", "--external", "none", *argv],
            cwd=REPO_ROOT,
            env=_subprocess_env(ws),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (ws, argv) in cases.items()
    }
    results = {name: proc.communicate(timeout=300) for name, proc in procs.items()}

    for name, proc in procs.items():
        stdout, stderr = results[name]
        assert proc.returncode == 1, (name, stdout[-1000:], stderr[-1000:])
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert stderr.startswith("train: error: "), stderr
        # the failed task is kept for ClearML (its offline session), and nothing else
        ws = cases[name][0]
        sessions = (ws / "offline_sessions.jsonl").read_text().splitlines()
        assert [json.loads(line)["task"] for line in sessions] == ["train cnn"], sessions
        assert_untouched(ws, before[name], also_new=("offline_sessions.jsonl",))
    assert_one_line(results["missing"][1], "dataset ASL latest not found", "publish it first")
    assert_one_line(
        results["classes"][1], "class list differs from", str(classes_file), "different order"
    )


def test_empty_dataset(prior: Prior, tmp_path) -> None:
    empty_id = publish_sample(tmp_path, empty=True)
    before = fingerprint(prior.ws)
    message = refused(prior, {"dataset_version": empty_id, "output_dir": str(tmp_path / "run")})
    assert_one_line(message, "is empty", "no images in its train split", empty_id)
    assert_untouched(prior.ws, before)
    assert not (tmp_path / "run").exists()


def test_a_manifest_of_an_older_format_is_refused_before_training(prior: Prior, tmp_path) -> None:
    """No fallback reads a layout this project no longer writes: the user is told to publish
    again, in one line, before anything is trained."""
    from asl_recognition.store import get_store
    from asl_recognition.store.base import MANIFEST_FORMAT, MANIFEST_NAME

    current = open_published(publish_sample(tmp_path, per_class=5))
    old = tmp_path / "old" / MANIFEST_NAME
    old.parent.mkdir()
    old.write_text(json.dumps({k: v for k, v in current.manifest.items() if k != "format"}))
    files = {
        p.relative_to(current.root).as_posix(): p
        for split in ("train", "val", "test")
        for p in (current.root / split).rglob("*.jpg")
    }
    old_id = get_store().create("ASL", {**files, MANIFEST_NAME: old}).id
    before = fingerprint(prior.ws)
    message = refused(prior, {"dataset_version": old_id, "output_dir": str(tmp_path / "run")})
    assert_one_line(
        message, f"has manifest format none, not {MANIFEST_FORMAT}", "publish it again", old_id
    )
    assert_untouched(prior.ws, before)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "classes, manifest_classes, expected",
    [
        # a folder the manifest does not list
        (CLASSES[:3], CLASSES[:2], f"class folders ['{CLASSES[2]}'] missing from its manifest"),
        # a consistent dataset of 3 classes is not the project's 29
        (CLASSES[:3], None, "class list differs from the project's class list: missing ['D'"),
        # the manifest's index order differs from the project's: labels would be permuted
        (CLASSES, CLASSES[::-1], "same names, different order"),
    ],
    ids=["folder-not-in-manifest", "subset", "order"],
)
def test_class_list_mismatch(prior, tmp_path, classes, manifest_classes, expected) -> None:
    dataset_id = publish_sample(
        tmp_path, classes=list(classes), manifest_classes=manifest_classes, per_class=5
    )
    before = fingerprint(prior.ws)
    message = refused(prior, {"dataset_version": dataset_id, "output_dir": str(tmp_path / "run")})
    assert_one_line(message, expected)
    assert_untouched(prior.ws, before)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "model, size", [("resnet18", 16), ("mobilenet_v3_small", 24), ("cnn", 8), ("cnn", 4096)]
)
def test_image_size_the_model_cannot_take(prior: Prior, tmp_path, model, size) -> None:
    before = fingerprint(prior.ws)
    message = refused(
        prior, {"model": model, "image_size": size, "output_dir": str(tmp_path / "run")}
    )
    bound = "too large" if size > 1024 else "too small"
    assert_one_line(message, f"image size {size} is {bound} for {model}")
    assert_untouched(prior.ws, before)
    assert not (tmp_path / "run").exists()
    with pytest.raises(TrainingInputError):  # the same check guards build_model
        check_image_size(size, model, error=TrainingInputError)


def test_the_size_bounds_are_real() -> None:
    # every architecture has a bound (the shared check holds its own list of them) ...
    assert set(MIN_IMAGE_SIZE) == {name for name in ARCHITECTURES if reads_images(name)}
    # ... the smallest accepted size builds and runs (build_model does a forward pass) ...
    for model, low in MIN_IMAGE_SIZE.items():
        assert build_model(model, len(CLASSES), low) is not None
    # ... and below its bound the cnn's pooling has nothing left to pool
    with pytest.raises(RuntimeError, match="Output size is too small|output size"):
        small_cnn(len(CLASSES))(torch.zeros(2, 3, 8, 8))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(prior: Prior, tmp_path) -> None:
    # A real cause: lr 1e20 makes the first AdamW step push every weight to ~1e20: finite
    # weights, but every val output is NaN. Before, those weights were saved as epoch 1's
    # "good" checkpoint (and, with --epochs 1, exported and registered); now the run stops at
    # epoch 1's validation and saves nothing it could resume or export.
    run_dir = tmp_path / "nan"
    before = fingerprint(prior.ws)
    with pytest.raises(NonFiniteLossError) as info:
        run_training(
            train_options(
                **{**FAST, "dataset_version": prior.dataset_id, "epochs": 3, "max_steps": 1},
                lr=1e20,
                output_dir=str(run_dir),
            )
        )
    assert_one_line(
        str(info.value), "val loss became nan after epoch 1", "last good checkpoint: none"
    )
    assert_untouched(prior.ws, before)  # earlier run and registry untouched
    assert list((run_dir / "checkpoints").iterdir()) == []
    assert not (run_dir / "model.onnx").exists() and not (run_dir / "metrics.json").exists()


def test_nan_after_resume_leaves_the_checkpoints_byte_identical(prior: Prior, tmp_path) -> None:
    # Resume the finished run's copy, then let the learning rate diverge: the first step of
    # epoch 2 pushes the weights to ~1e20, the second step's loss is NaN. The checkpoints on
    # disk must be exactly the ones from before (nothing is saved mid-epoch).
    run_dir = tmp_path / "resumed"
    shutil.copytree(prior.previous, run_dir, copy_function=shutil.copy2)
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    assert set(before) == {"best.pt", "last.pt"}
    ds = open_published(prior.dataset_id)  # the module fixture's workspace
    train, val = (load_split(ds.root, s, ds.classes, 32) for s in ("train", "val"))
    options = train_options(epochs=2, batch_size=32, max_steps=3)
    config = LoopConfig.from_options(options, progress=False)
    meta = {"model_name": "cnn", "image_size": 32, "classes": ds.classes, **ds.identity()}
    model = build_model("cnn", len(ds.classes), 32)
    trainer = Trainer(model, train, val, ds.classes, config, run_dir, meta=meta)
    assert trainer.resume() == 1
    for group in trainer.optimizer.param_groups:
        group["lr"] = 1e20
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    last = run_dir / "checkpoints" / "last.pt"
    assert_one_line(str(info.value), "at epoch 2 step 2", f"last good checkpoint: {last}")
    assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == before


def test_nan_weights_file_stops_at_the_first_step(prior: Prior, tmp_path) -> None:
    good = build_model("cnn", len(CLASSES), 32).backbone.state_dict()
    nan_weights = tmp_path / "nan.pt"
    nan = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in good.items()
    }
    torch.save(nan, nan_weights)
    before = fingerprint(prior.ws)
    with pytest.raises(NonFiniteLossError) as info:
        run_training(
            train_options(
                **{**FAST, "dataset_version": prior.dataset_id, "weights": str(nan_weights)},
                output_dir=str(tmp_path / "run"),
            )
        )
    assert_one_line(
        str(info.value), "loss became nan at epoch 1 step 1", "last good checkpoint: none"
    )
    assert_untouched(prior.ws, before)
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


def test_unwritable_output_dir(prior: Prior, tmp_path) -> None:
    # Under a regular file no user (root included) can create a folder.
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    before = fingerprint(prior.ws)
    message = refused(prior, {"output_dir": str(blocker / "run")})
    assert_one_line(message, f"output dir {blocker / 'run'} is not writable")
    assert blocker.read_text() == "a file, not a folder"
    assert_untouched(prior.ws, before)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_dir(prior: Prior, tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = refused(prior, {"output_dir": str(locked / "run")})
    finally:
        locked.chmod(0o700)
    assert_one_line(message, "is not writable")
    assert list(locked.iterdir()) == []


def test_existing_run_is_never_overwritten(prior: Prior) -> None:
    before = fingerprint(prior.ws)
    message = refused(prior, {"output_dir": str(prior.previous)})
    assert_one_line(message, "already holds files", "nothing was overwritten")
    assert_untouched(prior.ws, before)


def test_resume_on_another_dataset_version_is_refused(prior: Prior, tmp_path) -> None:
    # The same images split again with another seed: a second real published version. Resuming
    # the first version's run on it would train on images that run used for val and test.
    other_id = publish_sample(tmp_path, split_seed=1)
    manifests = [
        json.loads((open_published(i).root / "manifest.json").read_text())
        for i in (prior.dataset_id, other_id)
    ]
    images = [sorted(e["source"] for s in m["splits"].values() for e in s) for m in manifests]
    train = [{e["source"] for e in m["splits"]["train"]} for m in manifests]
    assert images[0] == images[1] and train[0] != train[1]

    run_dir = tmp_path / "resumed"
    shutil.copytree(prior.previous, run_dir, copy_function=shutil.copy2)
    before, before_run = fingerprint(prior.ws), fingerprint(run_dir)
    message = refused(
        prior,
        {"dataset_version": other_id, "resume": True, "epochs": 2, "output_dir": str(run_dir)},
    )
    assert_one_line(message, f"({prior.dataset_id}), this run has dataset", f"({other_id})")
    assert message.endswith(f"resume with --dataset-version {prior.dataset_id})")
    assert fingerprint(run_dir) == before_run  # checkpoints, logs, ONNX: all as they were
    assert_untouched(prior.ws, before)  # no registry record either

    # the run record names its data, and the same version still resumes
    recorded = json.loads((prior.previous / "metrics.json").read_text())
    assert recorded["dataset_id"] == prior.dataset_id
    assert recorded["dataset_manifest_sha256"] == open_published(prior.dataset_id).manifest_sha256


def test_resume_refuses_a_checkpoint_with_another_split_manifest(prior: Prior) -> None:
    # the same dataset id with another manifest hash (a version rewritten in place)
    last = prior.previous / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    meta = dict(state["meta"], manifest_sha256="0" * 64)
    with pytest.raises(TrainingInputError) as info:
        check_resumable(last, state["classes"], meta)
    assert_one_line(str(info.value), "split manifest sha256", "refused")
    assert check_resumable(last, state["classes"], state["meta"])["epoch"] == 1


def _weights_file(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A weights file that cannot start a cnn, and the refusal it must get."""
    path = tmp_path / f"{kind}.pt"
    if kind == "missing":
        return path, "does not exist"
    if kind == "not-torch":
        shutil.copy(sorted((SAMPLE_DATA / "A").glob("*.jpg"))[0], path)  # a real photo
        return path, "is not a torch state dict"
    # a real resnet18 state dict: another architecture, nothing of the cnn fits
    torch.save(build_model("resnet18", len(CLASSES), 32).backbone.state_dict(), path)
    return path, "does not match the cnn architecture"


@pytest.mark.parametrize("kind", ["missing", "not-torch", "other-architecture"])
def test_bad_weights_leave_no_run_folder(prior: Prior, tmp_path, kind) -> None:
    weights, expected = _weights_file(tmp_path, kind)
    before = fingerprint(prior.ws)
    message = refused(prior, {"weights": str(weights), "output_dir": str(tmp_path / "run")})
    assert_one_line(message, f"weights file {weights}", expected)
    assert not (tmp_path / "run").exists()
    assert_untouched(prior.ws, before)


def test_weights_may_differ_only_in_the_class_head(tmp_path) -> None:
    # a cnn trained on 5 classes starts a 29-class cnn: every layer but the head is loaded
    five = build_model("cnn", 5, 32).backbone
    torch.save(five.state_dict(), tmp_path / "five.pt")
    target = build_model("cnn", len(CLASSES), 32).backbone
    loaded = load_weights(target, tmp_path / "five.pt", "cnn")
    assert (
        loaded == len(target.state_dict()) - len(head_keys(target)) == len(five.state_dict()) - 2
    )
    for key, tensor in five.state_dict().items():
        if key not in head_keys(target):
            assert torch.equal(target.state_dict()[key], tensor), key
    # a cnn of other widths shares only shapeless counters with it: refused, not half-loaded
    torch.save(small_cnn(len(CLASSES), (8, 16, 32, 64)).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(TrainingInputError, match="does not match the cnn architecture"):
        load_weights(target, tmp_path / "narrow.pt", "cnn")


def test_prepare_checks_every_input_and_writes_nothing(prior: Prior, tmp_path) -> None:
    run_dir = tmp_path / "run"
    before = fingerprint(prior.ws)
    plan = prepare(
        train_options(**FAST, dataset_version=prior.dataset_id, output_dir=str(run_dir))
    )
    assert not run_dir.exists() and plan.run_dir == run_dir.resolve()
    assert_untouched(prior.ws, before)
    manifest = open_published(prior.dataset_id).root / "manifest.json"
    assert plan.meta["dataset_id"] == prior.dataset_id
    assert plan.meta["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert (plan.image_size, plan.external, plan.checkpoint, plan.start_epoch) == (
        32,
        None,
        None,
        0,
    )


def test_a_run_folder_another_run_holds_is_refused(prior: Prior, tmp_path) -> None:
    """A ``--resume`` while the run still trained, or one ``--output-dir`` given to two runs,
    trained both in one folder: each loaded the other's best.pt, and one registered the other's
    weights under its own options and history. The holder here is another process."""
    resumed = tmp_path / "resumed"
    shutil.copytree(prior.previous, resumed, copy_function=shutil.copy2)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for run_dir, resume in ((resumed, True), (fresh, False)):
        with lock_held_elsewhere(run_dir / ".train.lock") as holder:
            before = fingerprint(run_dir)
            message = refused(prior, {"resume": resume, "epochs": 2, "output_dir": str(run_dir)})
            assert_one_line(message, f"in use by another training run (pid {holder.pid})")
            assert fingerprint(run_dir) == before
    out = run_training(
        train_options(**{**FAST, "epochs": 2}, dataset_version=prior.dataset_id, resume=True,
                      max_steps=2, output_dir=str(resumed), register=False)
    )  # fmt: skip
    assert out["run_dir"] == str(resumed.resolve())


def test_a_refused_new_run_leaves_no_folder(prior: Prior, tmp_path) -> None:
    """A refusal after the folder was made (a registry that cannot be read) removes it again,
    so the same --output-dir is not refused as already holding files."""
    records = prior.ws / "registry" / "records"
    bad = records / ("f" * 32 + ".json")
    bad.write_text("[1]")
    options = train_options(
        **FAST, dataset_version=prior.dataset_id, output_dir=str(tmp_path / "new")
    )
    try:
        with pytest.raises(ModelIntegrityError, match="is not a readable record"):
            run_training(options)
    finally:
        bad.unlink()
    assert not (tmp_path / "new").exists()


def _saved_like(prior: Prior, tmp_path: Path, **changes) -> Path:
    state = torch.load(prior.previous / "checkpoints" / "last.pt", weights_only=True)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    path = tmp_path / "last.pt"
    torch.save(state, path)
    return path


class _Payload:
    """What a replaced checkpoint can carry: pickled code, run by a full unpickling."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "change, said",
    [
        ({"optimizer": None}, "lacks optimizer"),
        ({"epoch": -5}, "has epoch -5"),
        ({"epoch": "abc"}, "has epoch 'abc'"),
        ({"meta": "<landmarks_id>"}, "was trained with landmarks_id"),
        ({"extra": "<payload>"}, "is not a readable checkpoint"),
    ],
)
def test_a_checkpoint_that_is_not_resumable_is_one_line(prior: Prior, tmp_path, change, said):
    """Before: KeyError and ValueError tracebacks, a negative epoch resumed (history rows
    -4..410), a checkpoint of another hand table resumed and registered as trained on it, and
    the full unpickling of a replaced file ran its code (here: touching a file)."""
    state = torch.load(prior.previous / "checkpoints" / "last.pt", weights_only=True)
    marker = tmp_path / "ran"
    if change.get("meta") == "<landmarks_id>":
        change = {"meta": {**state["meta"], "landmarks_id": "0" * 32}}
    if change.get("extra") == "<payload>":
        change = {"extra": _Payload(marker)}
    path = _saved_like(prior, tmp_path, **change)
    with pytest.raises(TrainingInputError) as info:
        check_resumable(path, state["classes"], state["meta"])
    assert_one_line(str(info.value), said)
    assert not marker.exists()


def test_resume_with_another_learning_rate_is_refused(prior: Prior) -> None:
    """The optimizer's state brings its learning rate back: --lr 0.5 trained at 5e-4 and was
    registered as trained at 0.5."""
    last = prior.previous / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    saved = state["config"]["lr"]
    with pytest.raises(TrainingInputError) as info:
        check_resumable(last, state["classes"], state["meta"], lr=saved * 10)
    assert_one_line(str(info.value), f"--lr {saved:g}", "would be recorded but not used")
    assert check_resumable(last, state["classes"], state["meta"], lr=saved)["epoch"] == 1


def test_a_checkpoint_written_before_the_rng_became_tensors_still_resumes(prior: Prior, tmp_path):
    """Its numpy RNG keys are an array, which ``weights_only=True`` refused: a run interrupted
    before the upgrade could not be resumed (and the message carried torch's terminal codes)."""
    import numpy as np

    from asl_recognition.training.checkpoints import restore_rng

    state = torch.load(prior.previous / "checkpoints" / "last.pt", weights_only=True)
    np.random.seed(7)
    legacy = np.random.get_state()
    state["rng"] = {**state["rng"], "numpy": legacy}
    old = tmp_path / "last.pt"
    torch.save(state, old)
    shutil.copy2(prior.previous / "checkpoints" / "best.pt", tmp_path / "best.pt")
    loaded = check_resumable(old, state["classes"], state["meta"])
    np.random.seed(0)
    restore_rng(loaded["rng"])
    np.random.seed(7)
    expected = np.random.rand(3)
    restore_rng(loaded["rng"])
    assert np.array_equal(np.random.rand(3), expected)


@pytest.mark.parametrize("typed", ["None", "NONE", " none "])
def test_external_none_typed_in_the_web_ui_skips_the_external_check(
    prior: Prior, tmp_path, typed: str
) -> None:
    """``Args/external`` = ``None`` (the web UI's text, any case) means what ``none`` means:
    no external check. It had been read as empty, so the default folder was scored and an
    external accuracy registered while the task showed ``None``."""
    options = {**FAST, "external": typed, "output_dir": str(tmp_path / "run")}
    plan = prepare(train_options(**options, dataset_version=prior.dataset_id))
    assert plan.external is None


def test_an_external_folder_that_is_not_there_is_refused(prior: Prior, tmp_path) -> None:
    """A mistyped ``--external`` (or a folder the agent's machine lacks, or a storage URL) had
    trained to the end, exit 0, with "external accuracy n/a": the check asked for never ran."""
    for missing in (tmp_path / "roboflow_chek", "s3://bucket/photos"):
        message = refused(prior, {"external": str(missing)})
        assert_one_line(message, f"--external {missing}: no such folder", "none to skip")
