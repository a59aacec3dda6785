"""The two task scripts as a ClearML agent runs them (subprocesses, offline ClearML sessions)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import zipfile
from pathlib import Path
from unittest import mock

import pytest
from asl_testkit.cli import run_script
from asl_testkit.task_harness import (
    load_task_module,
    make_mock_task,
    patch_task_init,
    recorded_outputs,
)

from asl_recognition.classes import CLASSES
from asl_recognition.data.options import PublishDatasetOptions, ValidateRawOptions
from asl_recognition.options import build_parser
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA

OPTIONS = {"validate_raw": ValidateRawOptions, "publish_dataset": PublishDatasetOptions}
TASKS = list(OPTIONS)


def _run(script: str, args: list[str], env: dict[str, str], timeout: int = 240):
    return run_script(f"tasks/{script}.py", *args, env=env, timeout=timeout)


def _session(workspace: Path, task: str) -> tuple[dict, dict[str, bytes]]:
    """(task.json, {member name: bytes}) of the newest offline session zip of ``task``."""
    lines = (workspace / "offline_sessions.jsonl").read_text().splitlines()
    record = [json.loads(line) for line in lines if json.loads(line)["task"] == task][-1]
    with zipfile.ZipFile(record["zip"]) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    return json.loads(members["task.json"]), members


def _metrics(members: dict[str, bytes]) -> set[tuple[str, str]]:
    events = [e for line in members["metrics.jsonl"].splitlines() for e in json.loads(line)]
    return {(e["type"], e["metric"]) for e in events}


@pytest.mark.parametrize("script", TASKS)
def test_help_documents_every_option(script: str, task_env: dict[str, str]) -> None:
    spec = importlib.util.spec_from_file_location(script, REPO_ROOT / "tasks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    options_class = OPTIONS[script]
    assert getattr(module, options_class.__name__) is options_class  # the script parses it
    parser = build_parser(options_class, "")
    result = _run(script, ["--help"], task_env, timeout=60)
    assert result.returncode == 0, result.stderr
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and len(action.help) > 10, action.dest
        for option in action.option_strings:
            assert option in result.stdout, option


def _slice(sample_dir: Path, target: Path, per_class: int, skip: str = "") -> Path:
    """``per_class`` real frames of each class (but ``skip``) from data/sample."""
    for cls in CLASSES:
        if cls != skip:
            (target / cls).mkdir(parents=True)
            for src in sorted((sample_dir / cls).glob("*.jpg"))[:per_class]:
                shutil.copyfile(src, target / cls / src.name)
    return target


@pytest.mark.slow
def test_tasks_record_params_artifacts_outputs_and_lineage(
    task_env: dict[str, str], asl_workspace: Path, sample_dir: Path, tmp_path: Path
) -> None:
    source = _slice(sample_dir, tmp_path / "slice", 5)
    outputs = asl_workspace / "validate_outputs.json"
    result = _run(
        "validate_raw",
        ["--source", str(source), "--min-per-class", "5", "--source-name", "kaggle-slice"],
        {**task_env, "ASL_STEP_OUTPUTS": str(outputs)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads(outputs.read_text())
    assert set(recorded) == {"raw_dataset_id", "report_path", "success", "valid", "quarantined"}
    assert (recorded["valid"], recorded["quarantined"], recorded["success"]) == (145, 0, True)
    report = json.loads(Path(recorded["report_path"]).read_text())
    assert report["raw_dataset_id"] == recorded["raw_dataset_id"]

    task, members = _session(asl_workspace, "validate_raw")
    args = task["hyperparams"]["Args"]
    # list options are connected as JSON text (typed again by the options class on the way back)
    assert json.loads(args["source"]["value"]) == [str(source)]
    assert args["min_per_class"]["value"] == "5"
    assert args["source_name"]["value"] == "kaggle-slice"
    assert task["hyperparams"]["Outputs"]["raw_dataset_id"]["value"] == recorded["raw_dataset_id"]
    artifacts = {a["key"]: a for a in task["execution"]["artifacts"]}
    assert set(artifacts) >= {
        "validation_report",
        "gx_results",
        "gx_data_docs",
        "scan_table",
        "class_histogram",
    }
    (report_member,) = [n for n in members if n.endswith("validation_report/report.json")]
    assert json.loads(members[report_member])["summary"] == report["summary"]
    (docs,) = [n for n in members if n.endswith("gx_data_docs/data_docs.zip")]
    assert members[docs][:2] == b"PK"
    assert {"validation summary", "class histogram"} <= {m for _, m in _metrics(members)}

    outputs = asl_workspace / "publish_outputs.json"
    result = _run(
        "publish_dataset",
        [
            "--raw-version",
            recorded["raw_dataset_id"],
            "--seed",
            "3",
            "--split",
            "0.6",
            "0.2",
            "0.2",
        ],
        {**task_env, "ASL_STEP_OUTPUTS": str(outputs)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    published = json.loads(outputs.read_text())
    assert set(published) == {"dataset_id", "dataset_version", "reused"}
    assert published["reused"] is False and published["dataset_version"] == "1.0.0"
    task, members = _session(asl_workspace, "publish_dataset")
    args = task["hyperparams"]["Args"]
    assert args["seed"]["value"] == "3" and args["group_by"]["value"] == "frame"
    assert json.loads(args["split"]["value"]) == [0.6, 0.2, 0.2]
    assert task["hyperparams"]["Outputs"]["dataset_id"]["value"] == published["dataset_id"]
    assert "manifest" in {a["key"] for a in task["execution"]["artifacts"]}
    metrics = {m for _, m in _metrics(members)}
    assert {"class histogram per split", "split sizes", "preview"} <= metrics

    from asl_recognition.store import get_store  # the same workspace the tasks wrote to

    ds = get_store().get(dataset_id=published["dataset_id"])
    assert ds.parents == [recorded["raw_dataset_id"]] and ds.name == "ASL"
    assert ds.metadata["options"]["split"] == [0.6, 0.2, 0.2]


@pytest.mark.slow
def test_unusable_source_exits_non_zero_with_one_line_reason(
    task_env: dict[str, str], tmp_path: Path, sample_dir: Path
) -> None:
    source = _slice(sample_dir, tmp_path / "no_space", 2, skip="space")
    result = _run("validate_raw", ["--source", str(source), "--min-per-class", "2"], task_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "unusable dataset: class(es) missing: space"


def _stored_empty_source(mapping, name=None):
    """An agent's ``connect``: the task's stored Args, where the controller left source empty."""
    return {**mapping, "source": ""}


@pytest.mark.parametrize(
    "connect", [None, _stored_empty_source], ids=["standalone", "under-the-controller"]
)
def test_validate_raw_defaults_its_source_where_it_runs(
    connect, tmp_path: Path, monkeypatch
) -> None:
    """The default source (``$ASL_RAW``, else data/sample) is applied after ``connect``: the task
    records the empty value, never this machine's absolute path, and an empty ``Args/source``
    from the controller gets the default instead of "no --source given"."""
    import asl_recognition.data.raw as raw

    module = load_task_module("validate_raw")
    seen = []

    def validated(settings, logger, upload):
        seen.append(list(settings.source))
        return {
            "usable": True,
            "raw_dataset_id": "raw-1",
            "report_path": str(tmp_path / "report.json"),
            "success": True,
            "valid": 1,
            "quarantined": 0,
        }

    # the real signature, no scan: what the task hands over is the point here
    mock_validate_raw = mock.create_autospec(raw.validate_raw, side_effect=validated)
    monkeypatch.setattr(raw, "validate_raw", mock_validate_raw)
    monkeypatch.delenv("ASL_RAW", raising=False)
    mock_task = make_mock_task(tmp_path, connect)
    patch_task_init(monkeypatch, mock_task, tmp_path, offline=False)

    assert module.main([]) == 0

    connected = mock_task.connect.call_args.args[0]
    assert mock_task.connect.call_args.kwargs == {"name": "Args"}
    assert connected["source"] == "[]"  # recorded: "the default", whatever runs it
    assert str(REPO_ROOT) not in json.dumps(connected)
    assert seen == [[str(SAMPLE_DATA)]]  # resolved where it runs
    assert recorded_outputs(mock_task)["raw_dataset_id"] == "raw-1"

    monkeypatch.setenv("ASL_RAW", f"kaggle={tmp_path / 'k'},massey={tmp_path / 'm'}")
    assert module.main([]) == 0
    assert seen[-1] == [f"kaggle={tmp_path / 'k'}", f"massey={tmp_path / 'm'}"]
