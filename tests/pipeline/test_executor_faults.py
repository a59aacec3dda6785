"""The local executor where a run's inputs change under it: a dataset named ``latest``, a file
a path option names rewritten, a reused step's dataset gone, ``--from-step`` on a cached step,
and a run recorded by other code. Real step processes on a two-step DAG and a real local store.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.dag import Dag, Step, step_params
from asl_recognition.pipeline.local_executor import LocalExecutor, RunFromOtherCode, StepFailed
from asl_recognition.store.local import LocalDatasetStore

OPTIONS_MODULE = textwrap.dedent("""
    from dataclasses import dataclass
    from asl_recognition.options import option

    @dataclass
    class PickOptions:
        value: str = option("", "an ASL_raw id to pass on")
        photos: str | None = option(None, "a folder read", path=True)

    @dataclass
    class UseOptions:
        raw: str | None = option(None, "the ASL_raw id picked")
        weights: str | None = option(None, "a file read", path=True)
""")

STEP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sys.path[:0] = [str(Path(__file__).parent), REPO]
    from asl_recognition.options import parse
    import fault_options
    name = Path(__file__).stem
    args = parse(getattr(fault_options, name.capitalize() + "Options"), None)
    with open(os.environ["CALL_LOG"], "a") as fh:
        bound = {k: v for k, v in os.environ.items() if "TASK_ID" in k or "MASTER_ID" in k}
        fh.write(json.dumps({"step": name, "argv": sys.argv[1:], "task_env": bound}) + "\\n")
    if os.environ.get("FAIL_STEP") == name:
        print(f"{name}: failing on purpose", file=sys.stderr)
        sys.exit(3)
    out = {"raw_dataset_id": args.value} if name == "pick" else {"dataset_id": args.raw}
    Path(os.environ["ASL_STEP_OUTPUTS"]).write_text(json.dumps(out))
""").replace("REPO", repr(str(REPO_ROOT)))


def fault_dag(repo: Path) -> Dag:
    """The options module the step scripts import, imported here too (one declaration)."""
    spec = importlib.util.spec_from_file_location(
        "fault_options", repo / "steps" / "fault_options.py"
    )
    fault_options = importlib.util.module_from_spec(spec)
    sys.modules["fault_options"] = fault_options
    spec.loader.exec_module(fault_options)
    steps = (
        Step(
            "pick",
            "steps/pick.py",
            fault_options.PickOptions,
            wired={},
            outputs=("raw_dataset_id",),
            skip_when="raw_version",
            skip_outputs={"raw_dataset_id": "${pipeline.raw_version}"},
        ),
        Step(
            "use",
            "steps/use.py",
            fault_options.UseOptions,
            wired={"raw": "${pick.outputs.raw_dataset_id}"},
            outputs=("dataset_id",),
            cache=True,
        ),
    )
    from asl_recognition.pipeline.dag import PipelineParam

    raw = PipelineParam("raw_version", "", "an existing ASL_raw version/id")
    return Dag(name="faults", project="T", params=(raw, *step_params(steps)), steps=steps)


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "steps").mkdir(parents=True)
    (root / "steps" / "fault_options.py").write_text(OPTIONS_MODULE)
    for name in ("pick", "use"):
        (root / "steps" / f"{name}.py").write_text(STEP_SCRIPT)
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    monkeypatch.setenv("CALL_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAIL_STEP", raising=False)
    yield root
    sys.modules.pop("fault_options", None)


def raw_version(tmp_path: Path, text: str) -> str:
    source = tmp_path / f"{text}.txt"
    source.write_text(text)
    store = LocalDatasetStore(tmp_path / "ws" / "datasets")
    return store.create("ASL_raw", {"a.txt": source}).id


def run(repo: Path, tmp_path: Path, params: dict, **kwargs) -> tuple[LocalExecutor, str]:
    out, from_step = io.StringIO(), kwargs.pop("from_step", None)
    executor = LocalExecutor(
        fault_dag(repo), params, root=tmp_path / "runs", repo_root=repo, out=out, **kwargs
    )
    executor.run(from_step=from_step)
    return executor, out.getvalue()


def ran(tmp_path: Path, step: str) -> list[list[str]]:
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    return [c["argv"] for c in map(json.loads, lines) if c["step"] == step]


def test_latest_is_read_as_the_newest_id_at_each_run(repo, tmp_path):
    """``raw_version=latest`` had keyed the cache as the text ``latest``: after newer raw data,
    the next run reused the result of the old."""
    first = raw_version(tmp_path, "old")
    _, said = run(repo, tmp_path, {"raw_version": "latest"})
    newer = raw_version(tmp_path, "new")
    executor, said = run(repo, tmp_path, {"raw_version": "latest"})
    assert ran(tmp_path, "use") == [["--raw=" + first], ["--raw=" + newer]]
    assert executor.outputs()["use"] == {"dataset_id": newer}
    with pytest.raises(StepFailed, match="no dataset ASL_raw version 9.9.9"):
        run(repo, tmp_path, {"raw_version": "9.9.9"})


def test_a_file_a_path_option_reads_is_keyed_by_what_it_holds(repo, tmp_path):
    raw = raw_version(tmp_path, "raw")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"real weights")
    params = {"raw_version": raw, "use/weights": str(weights)}
    run(repo, tmp_path, params)
    _, said = run(repo, tmp_path, params)
    assert "use: cached" in said  # the same bytes: reused
    weights.write_bytes(b"zeroed weights")  # same name, other contents
    _, said = run(repo, tmp_path, params)
    assert "use: cached" not in said and len(ran(tmp_path, "use")) == 2


def test_from_step_runs_a_cached_step_again(repo, tmp_path):
    raw = raw_version(tmp_path, "raw")
    executor, _ = run(repo, tmp_path, {"raw_version": raw})
    _, said = run(repo, tmp_path, {}, run_id=executor.run_id, from_step="use")
    assert "use: cached" not in said and len(ran(tmp_path, "use")) == 2


def test_a_resumed_run_runs_again_a_step_whose_dataset_is_gone(repo, tmp_path, monkeypatch):
    """A resume had reused the step and failed on the missing dataset every time it was
    re-run, as the failure line advised."""
    picked = raw_version(tmp_path, "raw")
    monkeypatch.setenv("FAIL_STEP", "use")
    executor = LocalExecutor(
        fault_dag(repo), {"pick/value": picked}, root=tmp_path / "runs", repo_root=repo,
        out=io.StringIO(),
    )  # fmt: skip
    with pytest.raises(StepFailed):
        executor.run()
    (tmp_path / "ws" / "datasets" / "versions" / f"{picked}.json").unlink()  # removed meanwhile
    monkeypatch.delenv("FAIL_STEP")
    _, said = run(repo, tmp_path, {}, run_id=executor.run_id)
    assert f"pick: run again, with the steps after it (no dataset with id {picked}" in said
    assert len(ran(tmp_path, "pick")) == 2


def test_a_resumed_run_runs_again_a_step_whose_folder_changed(repo, tmp_path, monkeypatch):
    """A resume had reused validate_raw's ASL_raw after the folder it read was edited (photos
    removed after a failed or interrupted run): the model was trained and served on them."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"a photo")
    params = {"pick/value": raw_version(tmp_path, "raw"), "pick/photos": str(photos)}
    monkeypatch.setenv("FAIL_STEP", "use")
    executor = LocalExecutor(
        fault_dag(repo), params, root=tmp_path / "runs", repo_root=repo, out=io.StringIO()
    )
    with pytest.raises(StepFailed):
        executor.run()
    with pytest.raises(StepFailed):  # the folder as it was: reused
        run(repo, tmp_path, {}, run_id=executor.run_id)
    assert len(ran(tmp_path, "pick")) == 1
    (photos / "a.jpg").unlink()  # edited before the next resume
    monkeypatch.delenv("FAIL_STEP")
    _, said = run(repo, tmp_path, {}, run_id=executor.run_id)
    assert "pick: run again, with the steps after it (a file or folder its path" in said
    assert len(ran(tmp_path, "pick")) == 2


def test_steps_never_inherit_the_task_binding_of_the_runners_shell(repo, tmp_path, monkeypatch):
    """Run offline (``ASL_OFFLINE=1``) from a shell an agent or clearml-session started, every
    step attached to the offline session of that task id: the second step read the first's
    parameters and failed ("the task's Args parameters name no option: ...")."""
    for name in ("CLEARML_TASK_ID", "TRAINS_TASK_ID"):
        monkeypatch.setenv(name, "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("CLEARML_PROC_MASTER_ID", "1:0123456789abcdef0123456789abcdef")
    run(repo, tmp_path, {"pick/value": raw_version(tmp_path, "raw")})
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c["step"] for c in calls] == ["pick", "use"]
    assert all(c["task_env"] == {} for c in calls)


def test_a_run_recorded_by_other_code_is_refused_in_one_line(repo, tmp_path):
    executor, _ = run(repo, tmp_path, {"raw_version": raw_version(tmp_path, "raw")})
    state_path = executor.state_path
    state = json.loads(state_path.read_text())
    state["params"]["use/kind"] = "from older code"
    state_path.write_text(json.dumps(state))
    with pytest.raises(RunFromOtherCode, match="parameters use/kind differ"):
        LocalExecutor(
            fault_dag(repo), state["params"], run_id=executor.run_id, root=tmp_path / "runs",
            repo_root=repo,
        )  # fmt: skip


def test_an_empty_path_option_is_keyed_by_the_folder_it_defaults_to_here() -> None:
    """train's ``external`` reads ../shared's Massey hands when present, else a bundled slice:
    the cache key names the one read on this machine, and what it holds."""
    from asl_recognition.pipeline.dag import ASL_DAG
    from asl_recognition.pipeline.step_cache import _read_paths
    from asl_recognition.training.options import default_external

    read = _read_paths(ASL_DAG.step("train"), {"external": None}, REPO_ROOT)
    assert read == [REPO_ROOT / default_external()]
    assert _read_paths(ASL_DAG.step("train"), {"external": "none"}, REPO_ROOT) == []


def test_several_references_and_another_raw_dataset_name_are_pinned(repo, tmp_path):
    """``raw_version=ID1,latest`` merges several versions, and ``publish_dataset.raw_name``
    names another raw dataset: each reference is read in that dataset."""
    from asl_recognition.pipeline.step_cache import pinned_references

    first = raw_version(tmp_path, "old")
    newest = raw_version(tmp_path, "new")
    source = tmp_path / "mine.txt"
    source.write_text("mine")
    mine = LocalDatasetStore(tmp_path / "ws" / "datasets").create("MyRaw", {"a.txt": source}).id
    _, said = run(repo, tmp_path, {"raw_version": f"{first},latest"})
    assert ran(tmp_path, "use") == [[f"--raw={first},{newest}"]]
    pinned = pinned_references({"raw_dataset_id": "latest"}, {"raw_dataset_id": "MyRaw"})
    assert pinned == {"raw_dataset_id": mine}
