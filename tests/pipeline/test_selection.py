"""Best-model selection against the real local registry with real records and files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from asl_testkit.cli import run_script
from asl_testkit.tiny_models import contract_onnx

from asl_recognition.classes import CLASSES
from asl_recognition.locks import exclusive
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.options import SelectBestOptions
from asl_recognition.pipeline.selection import confusion_matrix, decide, is_better, select_best
from asl_recognition.registry import PRODUCTION_TAG
from asl_recognition.registry.base import NewModel
from asl_recognition.registry.local import SELECT_LOCK_NAME, LocalModelRegistry


def criteria(model_id: str, mode: str = "max", holdout_tolerance: float | None = 0.0, **kw):
    """select_best's options as the task builds them (None tolerance: the holdout gate off)."""
    if "int8_tolerance" in kw:
        kw["prefer_int8"] = True
    gate = {
        "holdout_gate": holdout_tolerance is not None,
        "holdout_tolerance": holdout_tolerance or 0.0,
    }
    return SelectBestOptions(model_id=model_id, metric_mode=mode, **gate, **kw)


def tiny_model(folder: Path, classes: list[str] = CLASSES) -> tuple[str, str]:
    """A real ONNX file and class list that a Triton repository can be built from."""
    contract_onnx(folder / "model.onnx")
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return str(folder / "model.onnx"), str(folder / "classes.txt")


def register(registry, tmp_path: Path, name: str, **metrics) -> str:
    onnx_path, classes_path = tiny_model(tmp_path / "runs" / name)
    cm = [[5, 1], [0, 4]] if name != "no_cm" else None
    if cm:
        (tmp_path / "runs" / name / "metrics.json").write_text(
            json.dumps({"confusion_matrix": {"val": cm}})
        )
    params = {"run_dir": str(tmp_path / "runs" / name)}
    record = registry.register(NewModel("asl", onnx_path, classes_path, metrics, params))
    return record.id


@pytest.fixture()
def registry(tmp_path):
    return LocalModelRegistry(tmp_path / "registry")


def test_promote_versus_keep_both_directions(registry, tmp_path):
    first = register(registry, tmp_path, "m1", val_macro_f1=0.80)
    decision = select_best(registry, criteria(first))
    assert decision.promoted and decision.reason == "no production model yet"
    assert registry.production().id == first
    assert registry.get(first).published is True

    worse = register(registry, tmp_path, "m2", val_macro_f1=0.70)
    decision = select_best(registry, criteria(worse))
    assert not decision.promoted
    assert (decision.candidate_value, decision.previous_value) == (0.70, 0.80)
    assert decision.production_model_id == first
    assert registry.production().id == first
    assert PRODUCTION_TAG not in registry.get(worse).tags

    better = register(registry, tmp_path, "m3", val_macro_f1=0.91)
    decision = select_best(registry, criteria(better))
    assert decision.promoted and decision.production_model_id == better
    assert registry.production().id == better
    assert PRODUCTION_TAG not in registry.get(first).tags  # only one production model
    assert decision.as_dict()["previous_model_id"] == first

    tie = register(registry, tmp_path, "m4", val_macro_f1=0.91)
    assert not select_best(registry, criteria(tie)).promoted  # ties keep the serving model
    assert not select_best(registry, criteria(better)).promoted  # already production


def test_min_mode_and_other_metric(registry, tmp_path):
    a = register(registry, tmp_path, "a", val_loss=0.5, test_accuracy=0.9)
    b = register(registry, tmp_path, "b", val_loss=0.7, test_accuracy=0.95)
    select_best(registry, criteria(a, metric="val_loss", mode="min"))
    assert not select_best(registry, criteria(b, metric="val_loss", mode="min")).promoted
    assert select_best(registry, criteria(b, metric="test_accuracy", mode="max")).promoted
    assert is_better(0.1, 0.2, "min") and not is_better(0.1, 0.2, "max")
    with pytest.raises(ValueError, match="mode"):
        decide(registry, criteria(a, metric="val_loss", mode="lowest"))


def test_quality_gate_refuses_a_regression_on_a_held_out_group(registry, tmp_path):
    hands = {"massey/hand4": {"accuracy": 0.70}, "massey/hand5": {"accuracy": 0.62}}
    first = register(registry, tmp_path, "g1", val_macro_f1=0.80, holdout=hands)
    assert select_best(registry, criteria(first)).promoted

    # better in distribution, but worse on hand5 by 0.05: kept out of production
    worse_hand5 = {"massey/hand4": {"accuracy": 0.75}, "massey/hand5": {"accuracy": 0.57}}
    second = register(registry, tmp_path, "g2", val_macro_f1=0.90, holdout=worse_hand5)
    decision = select_best(registry, criteria(second))
    assert not decision.promoted
    assert "massey/hand5 0.5700 < 0.6200" in decision.reason
    assert "hand4" not in decision.reason.split("groups:")[1]
    assert registry.production().id == first

    # the same model passes within a tolerance, or with the gate off
    assert decide(registry, criteria(second, holdout_tolerance=0.06)).promoted
    assert decide(registry, criteria(second, holdout_tolerance=None)).promoted

    # no regression on any group: promoted; a group only one model has is not compared
    fine = dict(worse_hand5, **{"massey/hand5": {"accuracy": 0.62}, "other/x": {"accuracy": 0.1}})
    third = register(registry, tmp_path, "g3", val_macro_f1=0.91, holdout=fine)
    assert select_best(registry, criteria(third)).promoted


def test_missing_metric_is_an_error_not_a_promotion(registry, tmp_path):
    model = register(registry, tmp_path, "m", test_accuracy=0.9)
    with pytest.raises(ValueError, match="no numeric metric 'val_macro_f1'"):
        select_best(registry, criteria(model))
    assert registry.production() is None


def test_confusion_matrix_read_defensively(registry, tmp_path):
    with_cm = registry.get(register(registry, tmp_path, "m1", val_macro_f1=0.5))
    assert confusion_matrix(with_cm) == [[5, 1], [0, 4]]
    without = registry.get(register(registry, tmp_path, "no_cm", val_macro_f1=0.5))
    assert confusion_matrix(without) is None
    inline = registry.get(
        registry.register(
            NewModel(
                "asl",
                with_cm.onnx_path,
                with_cm.classes_path,
                metrics={"val_macro_f1": 0.1, "test_confusion_matrix": [[1]]},
            )
        ).id
    )
    assert confusion_matrix(inline, "test_accuracy") == [[1]]


def run_task(tmp_path: Path, model_id: str) -> tuple[dict, str]:
    outputs = tmp_path / f"outputs-{model_id}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(tmp_path), ASL_STEP_OUTPUTS=str(outputs), HOME=str(tmp_path))
    result = run_script("tasks/select_best.py", "--model-id", model_id, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(outputs.read_text()), result.stdout


@pytest.mark.slow
def test_select_best_task_offline_session_logs_decision(tmp_path):
    registry = LocalModelRegistry(tmp_path / "registry")
    first = register(registry, tmp_path, "m1", val_macro_f1=0.8)
    worse = register(registry, tmp_path, "m2", val_macro_f1=0.6)
    outputs, stdout = run_task(tmp_path, first)
    assert outputs == {"production_model_id": first, "promoted": True}
    outputs, stdout = run_task(tmp_path, worse)
    assert outputs == {"production_model_id": first, "promoted": False}
    assert "KEPT" in stdout
    sessions = [
        json.loads(line) for line in (tmp_path / "offline_sessions.jsonl").read_text().splitlines()
    ]
    assert len(sessions) == 2
    with zipfile.ZipFile(sessions[-1]["zip"]) as zf:
        names = zf.namelist()
        task = json.loads(zf.read(next(n for n in names if n.endswith("task.json"))))
        events = "".join(
            zf.read(n).decode() for n in names if n.endswith(("metrics.jsonl", "log.jsonl"))
        )
        metrics = [
            event
            for line in zf.read(next(n for n in names if n.endswith("metrics.jsonl"))).splitlines()
            for event in json.loads(line)
        ]
    hyper = task["hyperparams"]
    assert hyper["Args"]["model_id"]["value"] == worse
    assert hyper["Outputs"]["promoted"]["value"] == "False"
    assert "decision" in json.dumps(task["execution"]["artifacts"])
    assert "does not beat production" in events
    plots = {m["variant"] for m in metrics if m.get("metric") == "confusion matrix"}
    assert plots == {f"candidate {worse}", f"previous production {first}"}  # both matrices
    values = {m["variant"]: m["value"] for m in metrics if m["type"] == "training_stats_scalar"}
    assert values == {"val_macro_f1 (candidate)": 0.6, "val_macro_f1 (production)": 0.8}


def register_int8(registry, tmp_path: Path, parent_id: str, name: str, **metrics) -> str:
    """A variant record as tasks/optimize_model.py registers it (variant/parent in params)."""
    onnx_path, classes_path = tiny_model(tmp_path / "runs" / name)
    params = {"variant": "int8", "parent": parent_id}
    model = NewModel("asl", onnx_path, classes_path, metrics, params, parent_id=parent_id)
    return registry.register(model).id


def test_prefer_int8_serves_a_variant_only_within_tolerance(registry, tmp_path):
    fp32 = register(registry, tmp_path, "fp32", val_macro_f1=0.8, holdout_accuracy=0.70)
    lossy = register_int8(
        registry, tmp_path, fp32, "lossy", val_macro_f1=0.8, holdout_accuracy=0.6
    )
    # too lossy: the fp32 model itself is promoted
    decision = select_best(registry, criteria(fp32, int8_tolerance=0.01))
    assert decision.production_model_id == fp32 and registry.production().id == fp32
    assert lossy != fp32
    close = register(registry, tmp_path, "fp32b", val_macro_f1=0.9, holdout_accuracy=0.72)
    good = register_int8(
        registry, tmp_path, close, "good", val_macro_f1=0.9, holdout_accuracy=0.715
    )
    decision = select_best(registry, criteria(close, int8_tolerance=0.01))
    assert decision.promoted and "INT8 variant" in decision.reason
    assert decision.production_model_id == good and registry.production().id == good
    # the flag off (None): the fp32 model, even with a good variant
    third = register(registry, tmp_path, "fp32c", val_macro_f1=0.95, holdout_accuracy=0.75)
    register_int8(registry, tmp_path, third, "good2", val_macro_f1=0.95, holdout_accuracy=0.75)
    assert select_best(registry, criteria(third)).production_model_id == third


def test_min_worst_heldout_keeps_a_candidate_below_the_floor(registry, tmp_path):
    """The worst-source floor: a better metric and no per-group regression is not enough."""
    old = {"roboflow": {"accuracy": 0.60}, "webcam": {"accuracy": 0.85}}
    first = register(registry, tmp_path, "w1", val_macro_f1=0.80, holdout=old)
    assert select_best(registry, criteria(first)).promoted

    # better everywhere than production, but its worst group (roboflow) is under 0.7
    new = {"roboflow": {"accuracy": 0.65}, "webcam": {"accuracy": 0.92}}
    second = register(registry, tmp_path, "w2", val_macro_f1=0.90, holdout=new)
    decision = select_best(registry, criteria(second, min_worst_heldout=0.7))
    assert not decision.promoted
    assert decision.reason == (
        "its worst held-out group roboflow 0.6500 < --min-worst-heldout 0.7; kept"
    )
    assert registry.production().id == first
    # at or under the floor's value it passes; 0 (the default) switches it off
    assert decide(registry, criteria(second, min_worst_heldout=0.65)).promoted
    assert decide(registry, criteria(second)).promoted


def test_min_worst_heldout_refuses_a_first_model_or_one_without_scores(registry, tmp_path):
    """No production to keep: the refusal is a one-line error, never a silent promotion."""
    low = register(registry, tmp_path, "f1", val_macro_f1=0.9, holdout={"webcam": 0.5})
    with pytest.raises(ValueError, match=r"not promoted: its worst held-out group webcam 0.5000"):
        select_best(registry, criteria(low, min_worst_heldout=0.9))
    bare = register(registry, tmp_path, "f2", val_macro_f1=0.9)
    with pytest.raises(ValueError, match="no held-out group scores"):
        select_best(registry, criteria(bare, min_worst_heldout=0.9))
    assert registry.production() is None


def test_rank_by_worst_holdout_accuracy(registry, tmp_path):
    """--metric worst_holdout_accuracy: the lowest group decides, not the mean of groups."""
    steady = {"roboflow": {"accuracy": 0.80}, "webcam": {"accuracy": 0.82}}
    first = register(registry, tmp_path, "r1", val_macro_f1=0.5, holdout=steady)
    assert select_best(registry, criteria(first, metric="worst_holdout_accuracy")).promoted
    # a higher mean (0.87) bought with a worse worst group (0.78): kept
    uneven = {"roboflow": {"accuracy": 0.78}, "webcam": {"accuracy": 0.96}}
    second = register(registry, tmp_path, "r2", val_macro_f1=0.9, holdout=uneven)
    decision = decide(
        registry, criteria(second, metric="worst_holdout_accuracy", holdout_tolerance=None)
    )
    assert not decision.promoted
    assert (decision.candidate_value, decision.previous_value) == (0.78, 0.80)


def test_select_best_task_refuses_below_the_floor_in_one_line(tmp_path):
    """The option is declared once (SelectBestOptions) and reaches the task's command line."""
    registry = LocalModelRegistry(tmp_path / "registry")
    low = register(registry, tmp_path, "t1", val_macro_f1=0.9, holdout={"roboflow": 0.69})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(tmp_path), HOME=str(tmp_path))
    argv = ("tasks/select_best.py", "--model-id", low, "--min-worst-heldout", "0.95")
    result = run_script(*argv, env=env, timeout=240)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert lines == [
        f"select_best: error: model {low} not promoted: its worst held-out group roboflow "
        "0.6900 < --min-worst-heldout 0.95"
    ], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert registry.production() is None


KILLED_AT_THE_FIRST_RECORD_WRITE = """
import os, signal, sys
from asl_recognition.registry.local import LocalModelRegistry
replace = os.replace
def replace_then_die(src, dst):
    replace(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 between the two records of a promotion
os.replace = replace_then_die
LocalModelRegistry(sys.argv[1]).promote(sys.argv[2])
"""


def test_a_promotion_killed_midway_leaves_a_production_model(registry, tmp_path):
    """A promotion writes two records; killed between them, a model is still in production
    (the old or the new one), and the next promotion leaves exactly one."""
    old = register(registry, tmp_path, "old", val_macro_f1=0.5)
    new = register(registry, tmp_path, "new", val_macro_f1=0.9)
    registry.promote(old)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_THE_FIRST_RECORD_WRITE, str(registry.root), new],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert registry.production() is not None
    registry.promote(new)
    tagged = [r.id for r in registry.list("asl") if PRODUCTION_TAG in r.tags]
    assert tagged == [new]


def _started_select(tmp_path: Path, model_id: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(tmp_path), HOME=str(tmp_path), ASL_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "tasks/select_best.py", "--model-id", model_id],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _opened(proc: subprocess.Popen, *paths: Path) -> None:
    """Wait until ``proc`` holds one of ``paths`` open (it waits for that lock)."""
    wanted = {str(p) for p in paths}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if wanted & {os.readlink(fd) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()}:
                return
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"select_best never reached {wanted}: {proc.communicate()[1][-2000:]}")


def test_two_selections_at_once_leave_the_better_model_in_production(registry, tmp_path):
    """Two pipelines' select_best at once: X (0.9) waits to promote while Y (0.8) starts.
    Both had compared with the old production (0.5), both promoted, and the last one won."""
    old = register(registry, tmp_path, "old", val_macro_f1=0.5)
    better = register(registry, tmp_path, "better", val_macro_f1=0.9)
    good = register(registry, tmp_path, "good", val_macro_f1=0.8)
    registry.promote(old)
    with exclusive(registry.lock):  # the records' lock: X stops inside promote
        first = _started_select(tmp_path, better)
        _opened(first, registry.lock)
        second = _started_select(tmp_path, good)
        _opened(second, registry.lock, registry.root / SELECT_LOCK_NAME)
    out_first, err_first = first.communicate(timeout=180)
    out_second, err_second = second.communicate(timeout=180)
    assert first.returncode == 0 and second.returncode == 0, err_first[-2000:] + err_second
    assert "select_best: PROMOTED" in out_first
    assert "select_best: KEPT" in out_second, out_second  # compared with 0.9, not 0.5
    assert registry.production().id == better


def test_a_production_model_whose_files_are_lost_still_gives_way_to_a_better_one(
    registry, tmp_path
):
    """The comparison reads only production's metrics, but reading production checked its
    files: with its weights lost or altered, every later selection was refused, and a new
    model, the remedy, never got in. A worse one is still kept out."""
    first = register(registry, tmp_path, "m1", val_macro_f1=0.80)
    select_best(registry, criteria(first))
    weights = tmp_path / "registry" / "files" / first / "model.onnx"
    weights.chmod(0o644)
    weights.write_bytes(b"altered")
    worse = register(registry, tmp_path, "m2", val_macro_f1=0.70)
    decision = select_best(registry, criteria(worse))
    assert not decision.promoted and decision.previous_value == 0.80
    better = register(registry, tmp_path, "m3", val_macro_f1=0.90)
    assert select_best(registry, criteria(better)).promoted
    assert registry.production().id == better


def test_a_model_that_ties_a_production_model_whose_files_are_altered_replaces_it(
    registry, tmp_path
):
    """Production's weights altered: the pipeline trained the same recipe again, which scored
    the same, and the tie kept production, whose every build was refused, run after run."""
    first = register(registry, tmp_path, "m1", val_macro_f1=0.80)
    select_best(registry, criteria(first))
    twin = register(registry, tmp_path, "m2", val_macro_f1=0.80)
    assert not select_best(registry, criteria(twin)).promoted  # intact: a tie keeps it
    weights = tmp_path / "registry" / "files" / first / "model.onnx"
    weights.chmod(0o644)
    weights.write_bytes(b"altered")
    decision = select_best(registry, criteria(twin))
    assert decision.promoted and "which cannot be served" in decision.reason
    assert registry.production().id == twin


def test_a_model_its_build_would_refuse_is_not_promoted(registry, tmp_path):
    """A class list that disagrees with the ONNX output width (28 names, 29 outputs): select_best
    promoted it on its metrics, demoting the served model, and every build of production (the
    pipeline's, make serve's) then refused it; nothing offered a way back."""
    served = register(registry, tmp_path, "served", val_macro_f1=0.80)
    assert select_best(registry, criteria(served)).promoted
    onnx_path, classes_path = tiny_model(tmp_path / "runs" / "bad", CLASSES[:-1])
    record = registry.register(NewModel("asl", onnx_path, classes_path, {"val_macro_f1": 0.99}))
    with pytest.raises(ValueError, match="not promoted: it cannot be served: .*has 28 names"):
        select_best(registry, criteria(record.id))
    assert registry.production().id == served


def test_a_damaged_int8_variant_is_passed_over_for_an_older_one_or_the_model(registry, tmp_path):
    """A variant whose file was damaged used to stop select_best --prefer-int8 altogether."""
    fp32 = register(registry, tmp_path, "fp32", val_macro_f1=0.8, holdout_accuracy=0.70)
    older = register_int8(registry, tmp_path, fp32, "older", holdout_accuracy=0.70)
    newer = register_int8(registry, tmp_path, fp32, "newer", holdout_accuracy=0.70)
    damaged = Path(registry.get(newer).onnx_path)
    damaged.write_bytes(damaged.read_bytes()[:100])
    decision = select_best(registry, criteria(fp32, int8_tolerance=0.01))
    assert decision.production_model_id == older and registry.production().id == older
    assert f"INT8 variant passed over: model {newer} not promoted: it cannot be served" in (
        decision.reason
    )
    second = register(registry, tmp_path, "fp32b", val_macro_f1=0.9, holdout_accuracy=0.71)
    bad = register_int8(registry, tmp_path, second, "bad", holdout_accuracy=0.71)
    Path(registry.get(bad).onnx_path).write_bytes(b"not a model")  # none left: the model
    decision = select_best(registry, criteria(second, int8_tolerance=0.01))
    assert decision.production_model_id == second and "passed over" in decision.reason


def test_an_int8_variant_is_compared_with_its_model_on_the_same_photos(registry, tmp_path):
    """A variant registered with test accuracy only is compared with the model's test accuracy,
    not its held-out one (0.90 on the test split had passed as within 0.01 of 0.70 held out)."""
    fp32 = register(
        registry, tmp_path, "fp32", val_macro_f1=0.8, holdout_accuracy=0.70, test_accuracy=0.99
    )
    register_int8(registry, tmp_path, fp32, "worse", test_accuracy=0.90)
    decision = select_best(registry, criteria(fp32, int8_tolerance=0.01))
    assert decision.production_model_id == fp32 and "INT8" not in decision.reason
    second = register(
        registry, tmp_path, "fp32b", val_macro_f1=0.9, holdout_accuracy=0.90, test_accuracy=0.80
    )
    close = register_int8(registry, tmp_path, second, "close", test_accuracy=0.795)
    decision = select_best(registry, criteria(second, int8_tolerance=0.01))
    assert decision.production_model_id == close  # 0.795 against 0.80, not against 0.90
