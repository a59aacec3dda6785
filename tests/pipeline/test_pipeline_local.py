"""The local executor on a tiny DAG of real step scripts (real subprocesses, no ClearML).

The scripts are small Python files written into a tmp repo: they append to a call log, record
outputs through ``$ASL_STEP_OUTPUTS`` as the task scripts do, and fail on request.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import sys
import textwrap
import types
from pathlib import Path

import pytest

from asl_recognition.options import specs
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.dag import ASL_DAG, Dag, PipelineParam, Step, step_params
from asl_recognition.pipeline.local_executor import LocalExecutor, StepFailed, step_argv
from asl_recognition.pipeline.options import PipelineRunOptions
from asl_recognition.pipeline.runs import STATE_NAME, choose_run

# The steps' options, declared once as the real tasks declare theirs: the executor builds the
# command line from these classes and the step scripts parse it with them.
OPTIONS_MODULE = textwrap.dedent("""
    from dataclasses import dataclass
    from asl_recognition.options import option

    @dataclass
    class AOptions:
        value: str = option("src0", "input")
        size: int = option(8, "a size", low=1)

    @dataclass
    class BOptions:
        value: str | None = option(None, "step_a's id")
        size: int = option(8, "a size", low=1)
        flag: bool = option(False, "a switch")

    @dataclass
    class COptions:
        value: str | None = option(None, "step_b's id")
""")

STEP_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    sys.path[:0] = [str(Path(__file__).parent), REPO]
    from asl_recognition.options import parse
    import tiny_options
    name = Path(__file__).stem
    args = parse(getattr(tiny_options, name[-1].upper() + "Options"), None)
    with open(os.environ["CALL_LOG"], "a") as fh:
        fh.write(json.dumps({"step": name, "argv": sys.argv[1:], "t": time.time()}) + "\\n")
    print(f"{name}: working on {args.value}", flush=True)
    print(f"{name} progress 50%", file=sys.stderr, flush=True)
    if os.environ.get("FAIL_STEP") == name:
        print(f"{name}: cannot read dataset {args.value!r}: no such version", file=sys.stderr)
        sys.exit(3)
    if os.environ.get("NO_OUTPUT_STEP") == name:
        sys.exit(0)
    out = {"id": f"{name}-{args.value}-{getattr(args, 'size', None)}"}
    out["flag"] = getattr(args, "flag", None)
    Path(os.environ["ASL_STEP_OUTPUTS"]).write_text(json.dumps(out))
""").replace("REPO", repr(str(REPO_ROOT)))


def load_options(repo: Path) -> types.ModuleType:
    """The options module the step scripts import, imported here too (one declaration)."""
    spec = importlib.util.spec_from_file_location(
        "tiny_options", repo / "steps" / "tiny_options.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_options"] = module
    spec.loader.exec_module(module)
    return module


def tiny_dag(repo: Path) -> Dag:
    opts = load_options(repo)
    steps = (
        Step(
            "step_a",
            "steps/step_a.py",
            opts.AOptions,
            wired={},
            outputs=("id",),
            skip_when="skip_a_with",
            skip_outputs={"id": "${pipeline.skip_a_with}"},
        ),
        Step(
            "step_b",
            "steps/step_b.py",
            opts.BOptions,
            wired={"value": "${step_a.outputs.id}"},
            outputs=("id", "flag"),
            cache=True,
        ),
        Step(
            "step_c",
            "steps/step_c.py",
            opts.COptions,
            wired={"value": "${step_b.outputs.id}"},
            outputs=("id",),
        ),
    )
    skip = PipelineParam("skip_a_with", "", "skip step a, using this id")
    return Dag(name="tiny", project="T", params=(skip, *step_params(steps)), steps=steps)


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "steps").mkdir(parents=True)
    (root / "steps" / "tiny_options.py").write_text(OPTIONS_MODULE)
    for name in ("step_a", "step_b", "step_c"):
        (root / "steps" / f"{name}.py").write_text(STEP_SCRIPT)
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("CALL_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAIL_STEP", raising=False)
    yield root
    sys.modules.pop("tiny_options", None)


def calls(tmp_path: Path) -> list[dict]:
    log = tmp_path / "calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def make(repo: Path, tmp_path: Path, **kwargs) -> LocalExecutor:
    kwargs.setdefault("out", io.StringIO())
    kwargs.setdefault("err", io.StringIO())
    return LocalExecutor(
        tiny_dag(repo), kwargs.pop("params", {}), root=tmp_path / "runs", repo_root=repo, **kwargs
    )


def test_dag_params_refs_parents_and_argv(repo):
    dag = tiny_dag(repo)
    dag.validate()
    assert [p.name for p in dag.params] == [
        "skip_a_with",
        "step_a/value",
        "step_a/size",
        "step_b/size",
        "step_b/flag",
    ]  # wired options (step_b/value, step_c/value) are not parameters
    assert dag.step("step_b").parents == ("step_a",)
    assert dag.descendants("step_b") == ["step_b", "step_c"]
    step_b = dag.step("step_b")
    # wired values always, others only when they differ from the declared default
    assert step_argv(step_b, {"value": "x", "size": 8, "flag": False}) == ["--value=x"]
    assert step_argv(step_b, {"value": "x", "size": "16", "flag": "True"}) == [
        "--value=x",
        "--size=16",
        "--flag",
    ]
    opts = load_options(repo)
    bad = Dag(
        "x", "p", (), (Step("s", "s.py", opts.COptions, {"value": "${nope.outputs.id}"}, ("id",)),)
    )
    with pytest.raises(ValueError, match="not an earlier step"):
        bad.validate()
    with pytest.raises(ValueError, match="unknown pipeline parameter 'step_a/value'"):
        Dag("x", "p", (), dag.steps).validate()


def test_run_passes_outputs_by_id_and_streams_progress(repo, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    params = {"step_a/value": "raw1", "step_b/flag": True, "step_b/size": 16}
    executor = make(repo, tmp_path, params=params, out=out, err=err)
    state = executor.run()
    assert state["status"] == "completed"
    seen = calls(tmp_path)
    assert [c["step"] for c in seen] == ["step_a", "step_b", "step_c"]
    assert seen[0]["argv"] == ["--value=raw1"]
    assert seen[1]["argv"] == ["--value=step_a-raw1-8", "--size=16", "--flag"]
    assert seen[2]["argv"] == ["--value=step_b-step_a-raw1-8-16"]
    assert state["steps"]["step_b"]["outputs"]["flag"] is True  # typed by the script's parse
    assert state["steps"]["step_c"]["outputs"]["id"] == "step_c-step_b-step_a-raw1-8-16-None"
    text = out.getvalue()
    for n, name in enumerate(["step_a", "step_b", "step_c"], 1):
        assert f"==> [{n}/3] {name}" in text
        assert f"{name}: working on" in text  # the step's own stdout is streamed
    assert "step_b progress 50%" in err.getvalue()
    saved = json.loads((executor.run_dir / STATE_NAME).read_text())
    assert saved["status"] == "completed"
    assert (executor.run_dir / "step_b" / "stdout.log").read_text().startswith("step_b: working")


def test_unknown_parameter_is_refused(repo, tmp_path):
    with pytest.raises(ValueError, match="unknown pipeline parameters: step_c/value"):
        make(repo, tmp_path, params={"step_c/value": "x"})


def test_failed_step_stops_with_its_own_error_then_resume_reuses_completed(
    repo, tmp_path, monkeypatch
):
    monkeypatch.setenv("FAIL_STEP", "step_b")
    first = make(repo, tmp_path, params={"step_a/value": "raw1"})
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
    run_id, params, resuming, lock = choose_run(
        tiny_dag(repo), first.params, root=tmp_path / "runs"
    )
    assert (run_id, resuming) == (first.run_id, True)
    out = io.StringIO()
    second = make(repo, tmp_path, params=params, run_id=run_id, out=out, lock=lock)
    state = second.run()
    assert state["status"] == "completed"
    assert [c["step"] for c in calls(tmp_path)] == ["step_a", "step_b", "step_b", "step_c"]
    assert state["steps"]["step_a"]["ended"] == a_ended  # reused, not re-run
    assert state["steps"]["step_b"]["attempts"] == 2
    assert "==> [1/3] step_a: reused" in out.getvalue()

    # A finished run is not resumed: the next invocation starts a new run id.
    run_id2, _, resuming2, _ = choose_run(tiny_dag(repo), first.params, root=tmp_path / "runs")
    assert run_id2 != first.run_id and not resuming2


def test_resume_runs_a_step_reading_live_state_again(repo, tmp_path, monkeypatch):
    """select_best and build_triton_repo read the registry's production model: a run resumed
    after another run promoted a model must decide again, not build what it chose before."""
    steps = list(tiny_dag(repo).steps)
    steps[1] = dataclasses.replace(steps[1], cache=False, rerun_on_resume=True)
    dag = dataclasses.replace(tiny_dag(repo), steps=tuple(steps))
    monkeypatch.setenv("FAIL_STEP", "step_c")
    first = LocalExecutor(dag, {}, root=tmp_path / "runs", repo_root=repo, out=io.StringIO())
    with pytest.raises(StepFailed):
        first.run()
    monkeypatch.delenv("FAIL_STEP")
    run_id, params, resuming, lock = choose_run(dag, first.params, root=tmp_path / "runs")
    assert resuming
    out = io.StringIO()
    again = LocalExecutor(
        dag, params, root=tmp_path / "runs", repo_root=repo, run_id=run_id, out=out, lock=lock
    )
    assert again.run()["status"] == "completed"
    ran = [c["step"] for c in calls(tmp_path)]
    assert ran == ["step_a", "step_b", "step_c", "step_b", "step_c"]  # step_a reused, b again
    assert "step_b: run again (it reads the registry's current state)" in out.getvalue()


def test_the_asl_steps_reading_the_production_model_run_again_on_resume() -> None:
    again = {step.name for step in ASL_DAG.steps if step.rerun_on_resume}
    assert again == {"select_best", "build_triton_repo"}


def test_missing_required_output_fails_the_producing_step(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_OUTPUT_STEP", "step_a")
    with pytest.raises(StepFailed, match="recorded no output id"):
        make(repo, tmp_path).run()


def test_cacheable_step_reused_across_runs_until_script_or_args_change(repo, tmp_path):
    make(repo, tmp_path, params={"step_a/value": "raw1"}).run()
    out = io.StringIO()
    state = make(repo, tmp_path, params={"step_a/value": "raw1"}, out=out).run()
    assert state["steps"]["step_b"]["status"] == "cached"
    assert [c["step"] for c in calls(tmp_path)].count("step_b") == 1
    assert [c["step"] for c in calls(tmp_path)].count("step_a") == 2  # not cacheable
    (repo / "steps" / "step_b.py").write_text(STEP_SCRIPT + "\n# edited\n")
    state = make(repo, tmp_path, params={"step_a/value": "raw1"}).run()
    assert state["steps"]["step_b"]["status"] == "completed"
    state = make(repo, tmp_path, params={"step_a/value": "raw1"}, use_cache=False).run()
    assert [c["step"] for c in calls(tmp_path)].count("step_b") == 3
    # another option value of the cached step itself is another cache entry
    make(repo, tmp_path, params={"step_a/value": "raw1", "step_b/size": 9}).run()
    assert [c["step"] for c in calls(tmp_path)].count("step_b") == 4


def test_skip_when_and_from_step(repo, tmp_path):
    executor = make(repo, tmp_path, params={"skip_a_with": "given-id"})
    state = executor.run()
    assert state["steps"]["step_a"]["status"] == "skipped"
    assert calls(tmp_path)[0]["argv"][:1] == ["--value=given-id"]
    again = make(repo, tmp_path, run_id=executor.run_id)
    again.run(from_step="step_c")
    assert [c["step"] for c in calls(tmp_path)] == ["step_b", "step_c", "step_c"]


def test_cli_help_lists_the_run_options_and_overrides():
    import subprocess

    result = subprocess.run(
        [sys.executable, "pipelines/asl_pipeline.py", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    for spec in specs(PipelineRunOptions):
        assert spec.flag in result.stdout
    assert "{auto,local-executor,local,queue,dry-run}" in result.stdout
    assert "step.option=value" in result.stdout


def test_pipeline_paths_stay_portable(tmp_path) -> None:
    """Paths in the repo stay relative (an agent has them); others are refused for an agent."""
    import asl_pipeline

    sample = str(REPO_ROOT / "data" / "sample")
    assert asl_pipeline.localise(sample, remote=False) == "data/sample"
    assert asl_pipeline.localise(sample, remote=True) == "data/sample"
    assert asl_pipeline.localise(str(tmp_path), remote=False) == str(tmp_path)
    assert asl_pipeline.localise(f"kaggle={sample}", remote=True) == "kaggle=data/sample"
    for url in ("s3://bucket/raw", "kaggle=https://files.example.com/raw.zip"):
        with pytest.raises(asl_pipeline.PathError, match="storage URL, and no step downloads"):
            asl_pipeline.localise(url, remote=True)
    with pytest.raises(asl_pipeline.PathError, match="outside the repository"):
        asl_pipeline.localise(f"massey={tmp_path}", remote=True)
    # inside the repo but not in the commit an agent clones (test-artifacts/ is ignored)
    ignored = REPO_ROOT / "test-artifacts" / f"raw-{tmp_path.name}"
    assert (
        asl_pipeline.localise(str(ignored), remote=False)
        == ignored.relative_to(REPO_ROOT).as_posix()
    )
    with pytest.raises(asl_pipeline.PathError, match="git does not track it"):
        asl_pipeline.localise(f"kaggle={ignored}", remote=True)
    # a folder a step writes need not be in the commit
    assert asl_pipeline.localise("workspace/runs", remote=True, written=True) == "workspace/runs"
    values = {
        "validate_raw/source": [f"kaggle={sample}", f"massey={tmp_path}/m"],
        "train/epochs": 3,
        "train/external": "none",
    }
    assert asl_pipeline.localise_paths(values, ASL_DAG, remote=False) == {
        "validate_raw/source": ["kaggle=data/sample", f"massey={tmp_path}/m"],
        "train/epochs": 3,
        "train/external": "none",
    }
    # the list is exactly what validate_raw's --source accepts
    from asl_recognition.data.sources import parse_sources

    merged = asl_pipeline.localise_paths(values, ASL_DAG, remote=False)["validate_raw/source"]
    assert [s.name for s in parse_sources(merged)] == ["kaggle", "massey"]
