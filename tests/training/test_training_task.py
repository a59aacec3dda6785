"""``python tasks/train.py`` end to end: the offline ClearML session holds what a server would.

One subprocess on purpose: ClearML allows one ``Task.init`` per process, and closing an offline
session costs ~11 s. The session zip is read back as a user (or ``import_offline_session``)
would read it: ``task.json`` (parameters, artifacts, outputs) and ``metrics.jsonl`` (scalars).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from asl_testkit.cli import run_script

from asl_recognition.classes import CLASSES
from asl_recognition.paths import REPO_ROOT

ARGS = {
    "--epochs": "1",
    "--max-steps": "2",
    "--batch-size": "32",
    "--augment": "none",
    "--seed": "7",
    "--external": "data/external_sample",
}


def _subprocess_env(workspace: Path) -> dict[str, str]:
    """The subprocess environment: tmp workspace, offline, no inherited ClearML server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(workspace), ASL_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("ASL_STEP_OUTPUTS", None)
    return env


def _events(text: str) -> list[dict]:
    """metrics.jsonl lines hold either one event or a JSON list of events."""
    out: list[dict] = []
    for line in text.splitlines():
        if line.strip():
            item = json.loads(line)
            out.extend(item if isinstance(item, list) else [item])
    return out


@pytest.mark.slow
def test_train_task_fills_the_offline_clearml_session(published, workspace_env) -> None:
    argv = [x for pair in ARGS.items() for x in pair]
    proc = run_script("tasks/train.py", *argv, env=_subprocess_env(workspace_env), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    sessions = [
        json.loads(line)
        for line in (workspace_env / "offline_sessions.jsonl").read_text().splitlines()
    ]
    assert len(sessions) == 1
    assert sessions[0]["task"] == "train cnn" and sessions[0]["project"] == "ASL"
    with zipfile.ZipFile(sessions[0]["zip"]) as zf:
        names = zf.namelist()
        task = json.loads(zf.read("task.json"))
        events = _events(zf.read("metrics.jsonl").decode())
        artifact_files = {
            Path(n).name: zf.read(n) for n in names if "/artifacts/" in n and not n.endswith("/")
        }

    assert task["type"] == "training" and task["project_name"] == "ASL"

    # parameters: every option connected under Args, with the values passed on the command line
    args = {k: v["value"] for k, v in task["hyperparams"]["Args"].items()}
    for option, value in ARGS.items():
        assert args[option[2:].replace("-", "_")] == value, option
    assert args["model"] == "cnn" and args["dataset_version"] == "latest"

    # outputs for the next pipeline step, matching the registry record
    outputs = {k: v["value"] for k, v in task["hyperparams"]["Outputs"].items()}
    from asl_recognition.registry import get_registry

    record = get_registry("local").get(outputs["model_id"])
    assert outputs["onnx_path"] == record.onnx_path
    assert float(outputs["test_accuracy"]) == pytest.approx(record.metrics["test_accuracy"])
    assert Path(outputs["run_dir"]).is_dir()

    # scalars captured from TensorBoard (title/series = tag halves) at epoch 1
    scalars = {
        (e["metric"], e["variant"]): e["value"]
        for e in events
        if e.get("type") == "training_stats_scalar"
    }
    for key in ("loss", "accuracy", "macro_f1", "lr"):
        for split in ("train", "val"):
            assert (key, split) in scalars, (key, split)
    assert scalars[("lr", "train")] == pytest.approx(2e-3)
    run_metrics = json.loads((Path(outputs["run_dir"]) / "metrics.json").read_text())
    assert scalars[("loss", "train")] == pytest.approx(
        run_metrics["history"][0]["train_loss"], rel=1e-5
    )
    assert ("Summary", "test_accuracy") in scalars
    plots = {(e["metric"], e["variant"]) for e in events if e.get("type") == "plot"}
    assert ("confusion matrix", "test") in plots
    assert ("per-class precision/recall/F1", "val") in plots

    # artifacts: listed in task.json and their bytes inside the session
    listed = {a["key"] for a in task["execution"]["artifacts"]}
    assert {"model.onnx", "classes.txt", "metrics.json", "baseline.json"} <= listed
    assert artifact_files["classes.txt"].decode() == "\n".join(CLASSES) + "\n"
    assert artifact_files["model.onnx"] == Path(record.onnx_path).read_bytes()
    assert json.loads(artifact_files["metrics.json"])["epochs_run"] == 1
