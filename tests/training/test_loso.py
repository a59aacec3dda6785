"""Leave-one-source-out on a real published table: folds, the table, the scorer, the task.

The ASL_landmarks version is made by the package's own validate_raw + publish_dataset +
publish_landmarks from bundled photos (4 Kaggle frames per class from data/sample; the Massey
crops of data/external_sample, signers hand1, hand2, hand4 (held out) and hand5), so the groups
come from a manifest the data stage really writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from asl_testkit.cli import run_script
from asl_testkit.files import assert_one_line
from asl_testkit.images import kaggle_slice
from asl_testkit.workspaces import offline_workspace

from asl_recognition.classes import CLASSES
from asl_recognition.paths import REPO_ROOT
from asl_recognition.training import loso
from asl_recognition.training.evaluate import evaluate_groups
from asl_recognition.training.landmark_data import landmark_split
from asl_recognition.training.options import LosoOptions

EXTERNAL_SAMPLE = REPO_ROOT / "data" / "external_sample"
GROUPS = ["kaggle", "massey/hand1", "massey/hand2", "massey/hand4", "massey/hand5"]


@dataclass
class Table:
    ws: Path
    landmarks_id: str


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Table:
    pytest.importorskip("ai_edge_litert", reason="the hand landmark runtime is absent")
    from asl_recognition.data.landmarks import publish_landmarks
    from asl_recognition.data.publish import publish_dataset
    from asl_recognition.data.raw import validate_raw
    from asl_recognition.hands import ensure_models

    ensure_models()
    ws, src = tmp_path_factory.mktemp("ws"), tmp_path_factory.mktemp("src")
    kaggle = kaggle_slice(sample_dir, src / "kaggle", 0)
    with offline_workspace(ws):
        raw = validate_raw(
            [f"kaggle={kaggle}", f"massey={EXTERNAL_SAMPLE}"],
            min_per_class=1,
            report_dir=ws / "rep",
            progress=False,
        )
        publish_dataset(
            raw_version=[raw["raw_dataset_id"]],
            image_size=32,
            holdout_group=["massey:hand4"],
            progress=False,
        )
        yield Table(ws, publish_landmarks(progress=False)["landmarks_id"])


def options(tmp_path: Path, **values) -> LosoOptions:
    return LosoOptions(**{"epochs": 2, "output_dir": str(tmp_path / "report"), **values})


class Spy:
    """The real fold training, recording what each fold was given and the model it made."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, options, dataset, data, run_dir):
        threads = torch.get_num_threads()
        model = loso.fit_fold(options, dataset, data, run_dir)
        self.calls.append(
            {
                "options": options,
                "train": list(data.train.paths),
                "val": list(data.val.paths),
                "threads": threads,
            }
        )
        self.calls[-1]["model"] = model
        return model


def test_folds_never_see_the_left_out_group_and_train_as_the_recipe(table, tmp_path) -> None:
    from asl_recognition.data.landmarks import load_table

    spy = Spy()
    with offline_workspace(table.ws):
        out = loso.run_loso(options(tmp_path), fit=spy)
        rows, _ = load_table(table.landmarks_id)
    groups = loso.row_groups(rows, ["massey"])
    assert sorted(set(groups)) == GROUPS
    assert len(spy.calls) == len(GROUPS)
    report = json.loads((tmp_path / "report" / "loso.json").read_text())
    found = rows["hand_found"].astype(bool).to_numpy()
    for fold, call in zip(report["folds"], spy.calls):
        left_out = set(rows["path"][groups == fold["group"]])
        seen = set(call["train"]) | set(call["val"])
        assert not seen & left_out, fold["group"]
        # exactly the recipe's train rows of every other group: train split, hand found
        others = (groups != fold["group"]) & (rows["split"] == "train").to_numpy() & found
        assert sorted(call["train"]) == sorted(rows["path"][others])
        assert fold["images"] == len(left_out) and fold["train_rows"] == len(call["train"])
    # held-out rows (massey/hand4) are scored in their own fold and trained on in none
    holdout = set(rows["path"][rows["split"] == "holdout"])
    assert holdout and not any(holdout & set(c["train"]) for c in spy.calls)
    # the recipe's train step options, with --epochs over the recipe's 150
    trained = spy.calls[0]["options"]
    assert (trained.epochs, trained.label_smoothing, trained.keep, trained.patience) == (
        2,
        0.1,
        "last",
        0,
    )
    assert trained.model == "landmarks" and not trained.register
    assert out["worst_group"] in GROUPS and out["landmarks_id"] == table.landmarks_id


def test_table_has_one_row_per_group_then_mean_and_worst(table, tmp_path) -> None:
    with offline_workspace(table.ws):
        loso.run_loso(options(tmp_path, groups=["massey/hand5", "kaggle"]), fit=Spy())
    out = tmp_path / "report"
    report = json.loads((out / "loso.json").read_text())
    assert [f["group"] for f in report["folds"]] == ["kaggle", "massey/hand5"]
    for fold in report["folds"]:
        assert 0 <= fold["accuracy"] <= 1 and 0 <= fold["hand_found_rate"] <= 1
        assert len(fold["worst_classes"]) <= 3
        rates = [w["correct"] / w["images"] for w in fold["worst_classes"]]
        assert rates == sorted(rates)
    summary = report["summary"]
    accuracies = [f["accuracy"] for f in report["folds"]]
    assert summary["mean_accuracy"] == pytest.approx(np.mean(accuracies))
    assert summary["worst_accuracy"] == min(accuracies)
    lines = [line for line in (out / "loso.md").read_text().splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 2 + 2  # header, one row per group, mean, worst
    assert lines[-2].startswith("| **mean of 2 groups**")
    assert lines[-1].startswith(f"| **worst: {summary['worst_group']}**")
    for name in ("loso_accuracy.png", "confusion-kaggle.png", "confusion-massey_hand5.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_scores_are_the_shared_per_group_scorer(table, tmp_path) -> None:
    """The fold's figures equal ``evaluate_groups`` (training's held-out scorer) on its rows."""
    from asl_recognition.data.landmarks import load_table

    spy = Spy()
    with offline_workspace(table.ws):
        loso.run_loso(options(tmp_path, groups=["massey/hand1"]), fit=spy)
        rows, _ = load_table(table.landmarks_id)
    (fold,) = json.loads((tmp_path / "report" / "loso.json").read_text())["folds"]
    part = rows[loso.row_groups(rows, ["massey"]) == "massey/hand1"].assign(split="all")
    split = landmark_split(part, "all", list(CLASSES))
    expected = evaluate_groups(spy.calls[0]["model"], split, ["g"] * len(split), list(CLASSES))
    assert fold["accuracy"] == expected["g"]["accuracy"]
    assert fold["confusion_matrix"] == expected["g"]["confusion_matrix"]
    hands = part["hand_found"].astype(bool)
    assert fold["hand_found_rate"] == pytest.approx(hands.mean())
    matrix = np.asarray(fold["confusion_matrix"])
    assert int(np.trace(matrix)) == round(fold["accuracy"] * len(part))


def test_one_torch_thread_while_folds_train_then_restored(table, tmp_path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    spy = Spy()
    try:
        with offline_workspace(table.ws):
            loso.run_loso(options(tmp_path, groups=["massey/hand1"]), fit=spy)
        assert [call["threads"] for call in spy.calls] == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_task_writes_the_report_and_refuses_an_unknown_group(table, tmp_path) -> None:
    env = {**os.environ, "ASL_WORKSPACE": str(table.ws), "ASL_OFFLINE": "1"}
    for key in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY"):
        env.pop(key, None)
    task = REPO_ROOT / "tasks" / "loso_report.py"
    proc = run_script(
        task, "--epochs", "1", "--groups", "massey/hand5", "--output-dir", tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| **worst: massey/hand5**" in proc.stdout
    assert (tmp_path / "loso.md").is_file() and (tmp_path / "fold-massey_hand5.log").is_file()
    proc = run_script(task, "--groups", "webcam", "--output-dir", tmp_path / "x", env=env)
    assert proc.returncode == 1
    assert_one_line(proc.stderr.strip().splitlines()[-1], "loso_report: error:", "webcam")
    assert not (tmp_path / "x").exists()


def test_runs_without_a_folder_write_one_each(table) -> None:
    """Two runs on one version (two agents, or a rerun) never write into one report folder."""
    with offline_workspace(table.ws):
        first = loso.run_loso(LosoOptions(epochs=1, groups=["massey/hand5"]), fit=Spy())
        second = loso.run_loso(LosoOptions(epochs=1, groups=["massey/hand1"]), fit=Spy())
    folders = [Path(out["report"]).parent for out in (first, second)]
    assert folders[0] != folders[1]
    assert {f.parent for f in folders} == {table.ws / "reports" / "loso" / table.landmarks_id}
    for folder, group in zip(folders, ["massey/hand5", "massey/hand1"]):
        report = json.loads((folder / "loso.json").read_text())
        assert [f["group"] for f in report["folds"]] == [group]
        assert [p.name for p in folder.glob("fold-*.log")] == [report["folds"][0]["log"]]


def test_a_folder_another_run_writes_in_is_refused_untouched(table, tmp_path) -> None:
    from asl_recognition.locks import FileLock
    from asl_recognition.training.errors import TrainingInputError

    out = tmp_path / "report"
    out.mkdir()
    (out / "loso.md").write_text("the other run's report\n")
    spy = Spy()
    with FileLock(out / ".loso.lock"), offline_workspace(table.ws):  # a real flock, held
        with pytest.raises(TrainingInputError) as refused:
            loso.run_loso(options(tmp_path, groups=["massey/hand1"]), fit=spy)
    assert_one_line(str(refused.value), "--output-dir", "another leave-one-source-out report")
    assert f"pid {os.getpid()}" in str(refused.value)
    assert spy.calls == [] and (out / "loso.md").read_text() == "the other run's report\n"
    assert sorted(p.name for p in out.iterdir()) == [".loso.lock", "loso.md"]


def test_a_reused_folder_shows_one_report_not_a_mix(table, tmp_path) -> None:
    """A rerun into a chosen folder replaces the earlier report; one that fails midway leaves
    its own fold logs and no table, never the earlier table beside its logs."""

    folds = []

    def fails_on_the_second_fold(options, dataset, data, run_dir):
        folds.append(run_dir)
        if len(folds) == 2:
            raise RuntimeError("a fold that fails")
        return loso.fit_fold(options, dataset, data, run_dir)

    with offline_workspace(table.ws):
        loso.run_loso(options(tmp_path, groups=["massey/hand5", "massey/hand1"]), fit=Spy())
        loso.run_loso(options(tmp_path, groups=["massey/hand1"]), fit=Spy())
        out = tmp_path / "report"
        assert sorted(p.name for p in out.glob("confusion-*.png")) == [
            "confusion-massey_hand1.png"
        ]
        assert sorted(p.name for p in out.glob("fold-*.log")) == ["fold-massey_hand1.log"]
        report = json.loads((out / "loso.json").read_text())
        assert [f["group"] for f in report["folds"]] == ["massey/hand1"]
        with pytest.raises(RuntimeError, match="a fold that fails"):
            loso.run_loso(
                options(tmp_path, groups=["massey/hand5", "massey/hand1"]),
                fit=fails_on_the_second_fold,
            )
    assert sorted(p.name for p in out.iterdir()) == [
        ".loso.lock",
        "fold-massey_hand1.log",
        "fold-massey_hand5.log",
    ]


def test_the_folder_stays_locked_until_clearml_has_sent_the_images(table, tmp_path) -> None:
    """ClearML sends logged images from their files in the background: the report's lock is
    held until a waiting flush, so a second run into the folder cannot clear them first."""
    from unittest.mock import Mock

    from asl_recognition.locks import FileLock

    flushes = []

    def flush(wait: bool = False) -> bool:
        probe = FileLock(tmp_path / "report" / ".loso.lock")
        flushes.append((wait, not probe.acquire(timeout=0)))
        probe.release()
        return True

    ctx = Mock(name="mock_ctx")
    ctx.logger.flush.side_effect = flush
    with offline_workspace(table.ws):
        loso.run_loso(options(tmp_path, groups=["massey/hand1"]), ctx=ctx, fit=Spy())
    assert flushes == [(True, True)]  # waited for, with the folder still locked
    assert ctx.logger.report_image.call_count == 2  # the bar chart and the fold's matrix


def _republished(table: Table, tmp_path: Path, change) -> str:
    """A new ASL_landmarks version of the same ASL version whose table bytes are ``change``d."""
    from asl_recognition.data.landmarks import TABLE
    from asl_recognition.store import get_store

    with offline_workspace(table.ws):
        store = get_store()
        version = store.get(dataset_id=table.landmarks_id)
        (tmp_path / TABLE).write_bytes(change(store.local_file(version, TABLE).read_bytes()))
        return store.create(
            "ASL_landmarks",
            {TABLE: tmp_path / TABLE},
            parents=version.parents,
            metadata=version.metadata,
            tags=["landmarks"],
        ).id


def _unknown_class(data: bytes) -> bytes:
    head, *rows = data.decode().splitlines(keepends=True)
    cells = rows[-1].split(",")
    cells[head.split(",").index("class")] = "AA"
    return (head + "".join(rows[:-1]) + ",".join(cells)).encode()


def _degenerate_hand(data: bytes) -> bytes:
    head, *rows = data.decode().splitlines(keepends=True)
    names = head.rstrip("\n").split(",")
    index = next(
        i for i, r in enumerate(rows) if r.split(",")[names.index("hand_found")] == "True"
    )
    cells = rows[index].rstrip("\n").split(",")
    for i, name in enumerate(names):
        cells[i] = "0.5" if name.startswith("lm") else cells[i]
    rows[index] = ",".join(cells) + "\n"
    return (head + "".join(rows)).encode()


@pytest.mark.parametrize(
    "change, said",
    [
        (_unknown_class, "labels rows 'AA', which is no class"),
        (_degenerate_hand, "landmarks are degenerate"),
        (lambda data: data.replace(b"kaggle", b"\xffkaggle"), "is not a readable landmark table"),
    ],
)
def test_the_task_refuses_a_malformed_table_in_one_line(table, tmp_path, change, said) -> None:
    """The train step checks its table (``table_problem``); the report read it unchecked: a
    class no model has, a hand no landmarker measures, a table not in UTF-8 were tracebacks."""
    landmarks_id = _republished(table, tmp_path, change)
    env = {**os.environ, "ASL_WORKSPACE": str(table.ws), "ASL_OFFLINE": "1"}
    for key in ("CLEARML_API_HOST", "CLEARML_API_ACCESS_KEY"):
        env.pop(key, None)
    task = REPO_ROOT / "tasks" / "loso_report.py"
    out = tmp_path / "report"
    proc = run_script(task, "--landmarks-version", landmarks_id, "--output-dir", out, env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert_one_line(proc.stderr.strip().splitlines()[-1], "loso_report: error:", said)
    assert not (out / "loso.md").exists()
