"""The local executor on a tiny DAG of real step scripts (real subprocesses, no ClearML).

The scripts are small Python files written into a tmp repo: they append to a call log, record
outputs through ``$ASL_STEP_OUTPUTS`` as the task scripts do, and fail on request.
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from asl_recognition.pipeline.dag import Dag, PipelineParam, Step, to_cli
from asl_recognition.pipeline.local_executor import (
    STATE_NAME,
    LocalExecutor,
    StepFailed,
    choose_run,
)

STEP_SCRIPT = textwrap.dedent("""
    import argparse, json, os, sys, time
    from pathlib import Path
    name = Path(__file__).stem
    parser = argparse.ArgumentParser()
    parser.add_argument("--value")
    parser.add_argument("--size", type=int)
    parser.add_argument("--flag", action="store_true")
    args = parser.parse_args()
    with open(os.environ["CALL_LOG"], "a") as fh:
        fh.write(json.dumps({"step": name, "argv": sys.argv[1:], "t": time.time()}) + "\\n")
    print(f"{name}: working on {args.value}", flush=True)
    print(f"{name} progress 50%", file=sys.stderr, flush=True)
    if os.environ.get("FAIL_STEP") == name:
        print(f"{name}: cannot read dataset {args.value!r}: no such version", file=sys.stderr)
        sys.exit(3)
    if os.environ.get("NO_OUTPUT_STEP") == name:
        sys.exit(0)
    out = {"id": f"{name}-{args.value}-{args.size}", "flag": args.flag}
    Path(os.environ["ASL_STEP_OUTPUTS"]).write_text(json.dumps(out))
""")


def tiny_dag() -> Dag:
    return Dag(
        name="tiny",
        project="T",
        params=(
            PipelineParam("source", "src0", "input"),
            PipelineParam("size", 8, "a size", int),
            PipelineParam("skip_a_with", "", "skip step a, using this id"),
        ),
        steps=(
            Step(
                "step_a",
                "steps/step_a.py",
                {"value": "${pipeline.source}", "size": "${pipeline.size}"},
                outputs=("id",),
                skip_when="skip_a_with",
                skip_outputs={"id": "${pipeline.skip_a_with}"},
            ),
            Step(
                "step_b",
                "steps/step_b.py",
                {"value": "${step_a.outputs.id}", "size": "${pipeline.size}", "flag": True},
                outputs=("id", "flag"),
                cache=True,
            ),
            Step("step_c", "steps/step_c.py", {"value": "${step_b.outputs.id}"}, outputs=("id",)),
        ),
    )


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "steps").mkdir(parents=True)
    for name in ("step_a", "step_b", "step_c"):
        (root / "steps" / f"{name}.py").write_text(STEP_SCRIPT)
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("CALL_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAIL_STEP", raising=False)
    return root


def calls(tmp_path: Path) -> list[dict]:
    log = tmp_path / "calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def make(repo: Path, tmp_path: Path, **kwargs) -> LocalExecutor:
    kwargs.setdefault("out", io.StringIO())
    kwargs.setdefault("err", io.StringIO())
    return LocalExecutor(
        tiny_dag(), kwargs.pop("params", {}), root=tmp_path / "runs", repo_root=repo, **kwargs
    )


def test_dag_refs_parents_and_cli():
    dag = tiny_dag()
    dag.validate()
    assert dag.step("step_b").parents == ("step_a",)
    assert dag.descendants("step_b") == ["step_b", "step_c"]
    assert to_cli({"image_size": 64, "flag": True, "off": False, "none": None, "e": ""}) == [
        "--image-size",
        "64",
        "--flag",
    ]
    bad = Dag("x", "p", (), (Step("s", "s.py", {"v": "${nope.outputs.id}"}, ("id",)),))
    with pytest.raises(ValueError, match="not an earlier step"):
        bad.validate()


def test_run_passes_outputs_by_id_and_streams_progress(repo, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    executor = make(repo, tmp_path, params={"source": "raw1"}, out=out, err=err)
    state = executor.run()
    assert state["status"] == "completed"
    seen = calls(tmp_path)
    assert [c["step"] for c in seen] == ["step_a", "step_b", "step_c"]
    assert seen[1]["argv"] == ["--value", "step_a-raw1-8", "--size", "8", "--flag"]
    assert seen[2]["argv"] == ["--value", "step_b-step_a-raw1-8-8"]
    assert state["steps"]["step_c"]["outputs"]["id"] == "step_c-step_b-step_a-raw1-8-8-None"
    text = out.getvalue()
    for n, name in enumerate(["step_a", "step_b", "step_c"], 1):
        assert f"==> [{n}/3] {name}" in text
        assert f"{name}: working on" in text  # the step's own stdout is streamed
    assert "step_b progress 50%" in err.getvalue()
    saved = json.loads((executor.run_dir / STATE_NAME).read_text())
    assert saved["status"] == "completed"
    assert (executor.run_dir / "step_b" / "stdout.log").read_text().startswith("step_b: working")


def test_failed_step_stops_with_its_own_error_then_resume_reuses_completed(
    repo, tmp_path, monkeypatch
):
    monkeypatch.setenv("FAIL_STEP", "step_b")
    first = make(repo, tmp_path, params={"source": "raw1"})
    with pytest.raises(StepFailed) as failure:
        first.run()
    assert failure.value.step == "step_b"
    assert failure.value.returncode == 3
    assert failure.value.error == "step_b: cannot read dataset 'step_a-raw1-8': no such version"
    assert "step_b progress 50%" in failure.value.tail
    assert [c["step"] for c in calls(tmp_path)] == ["step_a", "step_b"]  # step_c never ran
    state = json.loads(first.state_path.read_text())
    assert state["status"] == "failed"
    assert state["steps"]["step_a"]["status"] == "completed"
    assert state["steps"]["step_b"]["status"] == "failed"
    assert state["steps"]["step_c"]["status"] == "pending"
    a_ended = state["steps"]["step_a"]["ended"]

    # Re-running with the same parameters picks the unfinished run and resumes at step_b.
    monkeypatch.delenv("FAIL_STEP")
    run_id, params, resuming = choose_run(tiny_dag(), first.params, root=tmp_path / "runs")
    assert (run_id, resuming) == (first.run_id, True)
    out = io.StringIO()
    second = make(repo, tmp_path, params=params, run_id=run_id, out=out)
    state = second.run()
    assert state["status"] == "completed"
    assert [c["step"] for c in calls(tmp_path)] == ["step_a", "step_b", "step_b", "step_c"]
    assert state["steps"]["step_a"]["ended"] == a_ended  # reused, not re-run
    assert state["steps"]["step_b"]["attempts"] == 2
    assert "==> [1/3] step_a: reused" in out.getvalue()

    # A finished run is not resumed: the next invocation starts a new run id.
    run_id2, _, resuming2 = choose_run(tiny_dag(), first.params, root=tmp_path / "runs")
    assert run_id2 != first.run_id and not resuming2


def test_missing_required_output_fails_the_producing_step(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_OUTPUT_STEP", "step_a")
    with pytest.raises(StepFailed, match="recorded no output id"):
        make(repo, tmp_path).run()


def test_cacheable_step_reused_across_runs_until_script_or_args_change(repo, tmp_path):
    make(repo, tmp_path, params={"source": "raw1"}).run()
    out = io.StringIO()
    state = make(repo, tmp_path, params={"source": "raw1"}, out=out).run()
    assert state["steps"]["step_b"]["status"] == "cached"
    assert [c["step"] for c in calls(tmp_path)].count("step_b") == 1
    assert [c["step"] for c in calls(tmp_path)].count("step_a") == 2  # not cacheable
    (repo / "steps" / "step_b.py").write_text(STEP_SCRIPT + "\n# edited\n")
    state = make(repo, tmp_path, params={"source": "raw1"}).run()
    assert state["steps"]["step_b"]["status"] == "completed"
    state = make(repo, tmp_path, params={"source": "raw1"}, use_cache=False).run()
    assert [c["step"] for c in calls(tmp_path)].count("step_b") == 3


def test_skip_when_and_from_step(repo, tmp_path):
    executor = make(repo, tmp_path, params={"skip_a_with": "given-id"})
    state = executor.run()
    assert state["steps"]["step_a"]["status"] == "skipped"
    assert calls(tmp_path)[0]["argv"][:2] == ["--value", "given-id"]
    again = make(repo, tmp_path, run_id=executor.run_id)
    again.run(from_step="step_c")
    assert [c["step"] for c in calls(tmp_path)] == ["step_b", "step_c", "step_c"]


def test_cli_help_lists_every_pipeline_parameter():
    import subprocess

    from asl_recognition.paths import REPO_ROOT
    from asl_recognition.pipeline.dag import ASL_DAG

    result = subprocess.run(
        [sys.executable, "pipelines/asl_pipeline.py", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for param in ASL_DAG.params:
        assert "--" + param.name.replace("_", "-") in result.stdout
    for option in ("--local-executor", "--queue", "--local", "--step-queue", "--run-id"):
        assert option in result.stdout


def test_pipeline_paths_stay_portable_and_sources_merge(tmp_path) -> None:
    """Paths in the repo stay relative (an agent has them); several sources become one list."""
    from asl_recognition.paths import REPO_ROOT

    sys.path.insert(0, str(REPO_ROOT / "pipelines"))
    import asl_pipeline

    assert asl_pipeline.localise(str(REPO_ROOT / "data" / "sample")) == "data/sample"
    assert asl_pipeline.localise(str(tmp_path)) == str(tmp_path)
    assert asl_pipeline.source_list("data/sample") == "data/sample"
    merged = json.loads(asl_pipeline.source_list(f"kaggle=data/sample,massey={tmp_path}/m"))
    assert merged == ["kaggle=data/sample", f"massey={tmp_path}/m"]
    # the JSON list is exactly what validate_raw's --source accepts
    from asl_recognition.data.sources import parse_sources

    specs = parse_sources(json.dumps(merged))
    assert [s.name for s in specs] == ["kaggle", "massey"]
