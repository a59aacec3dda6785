"""Per-group metrics: every held-out signer is scored on its own in the run summary (issue 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from asl_testkit.published import publish_sample, train_options

from asl_recognition.paths import REPO_ROOT
from asl_recognition.training.run import run_training


def test_each_held_out_signer_is_scored_separately(workspace_env, tmp_path, capsys) -> None:
    publish_sample(tmp_path, holdout_hands=("hand4", "hand5"))
    run_dir = tmp_path / "run"
    params = {"model": "cnn", "batch_size": 32, "augment": "none", "epochs": 1}
    params.update(output_dir=str(run_dir), external=str(REPO_ROOT / "data" / "external_sample"))
    out = run_training(train_options(**params))
    metrics = json.loads((run_dir / "metrics.json").read_text())

    expected = {
        hand: len(list((REPO_ROOT / "data" / "external_sample").glob(f"*/{hand}_*")))
        for hand in ("hand4", "hand5")
    }
    groups = metrics["holdout"]
    assert set(groups) == {"massey/hand4", "massey/hand5"}
    for hand, n in expected.items():
        group = groups[f"massey/{hand}"]
        assert group["images"] == n > 0
        assert 0.0 <= group["accuracy"] <= 1.0 and 0.0 <= group["macro_f1"] <= 1.0
        cm = np.asarray(group["confusion_matrix"])
        assert cm.sum() == n  # its own confusion matrix, only its own images
        assert group["accuracy"] == pytest.approx(np.trace(cm) / n)
    total = sum(expected.values())
    weighted = sum(g["accuracy"] * g["images"] for g in groups.values()) / total
    assert metrics["holdout_accuracy"] == pytest.approx(weighted)
    assert out["holdout_accuracy"] == pytest.approx(weighted)
    assert metrics["holdout_min_group_accuracy"] == min(g["accuracy"] for g in groups.values())

    # next to the in-distribution figures in the printed summary
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    for hand in expected:
        assert f"held-out group massey/{hand}: accuracy" in printed

    # TensorBoard has one scalar and one matrix figure per group; the registry keeps the scores
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    for hand in expected:
        assert f"holdout/massey/{hand}/accuracy" in events.Tags()["scalars"]
        assert f"confusion_matrix/holdout massey/{hand}" in events.Tags()["images"]
    from asl_recognition.registry import get_registry

    record = get_registry().get(out["model_id"])
    assert record.metrics["holdout"]["massey/hand4"]["accuracy"] == pytest.approx(
        groups["massey/hand4"]["accuracy"]
    )


def test_no_holdout_split_means_no_group_metrics(workspace_env, tmp_path) -> None:
    publish_sample(tmp_path, per_class=10)
    run_dir = tmp_path / "run"
    run_training(
        train_options(model="cnn", epochs=1, augment="none", output_dir=str(run_dir), external="")
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["holdout"] == {} and metrics["holdout_accuracy"] is None
