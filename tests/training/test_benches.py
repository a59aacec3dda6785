"""Smoke runs of the two throughput benches on the bundled real sample (tiny settings).

They run as the Makefile runs them (``python bench/x.py``), so the CLI, the JSON and the
Markdown table are all exercised; the figures themselves are only checked to be sane.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from asl_testkit.cli import run_script

from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA


def _bench(script: str, out: Path, *argv: str) -> tuple[dict, str]:
    if not any(SAMPLE_DATA.glob("*/*.jpg")):
        pytest.skip(f"{SAMPLE_DATA} holds no images")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = run_script(
        f"bench/{script}",
        "--source",
        str(SAMPLE_DATA),
        "--out",
        str(out),
        *argv,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_bench_train_smoke(tmp_path) -> None:
    result, stdout = _bench(
        "bench_train.py",
        tmp_path / "train.json",
        *("--image-size", "32", "--batch-size", "32", "--steps", "2", "--rounds", "2"),
    )
    assert result["config"]["images"] == 580 and result["config"]["steps"] == 2
    for key in ("project_images_per_s", "bare_images_per_s", "compute_only_images_per_s"):
        assert result[key] > 0, key
    runs = result["runs"]
    assert len(runs["project"]) == len(runs["bare"]) == 2
    ratios = sorted(p / b for p, b in zip(runs["project"], runs["bare"]))
    assert result["ratio"] == pytest.approx(sum(ratios) / 2) and result["ratio"] > 0
    assert result["cpu_ratio"] > 0
    for preset in ("none", "light"):
        share = result["data_loading"][preset]["share"]
        assert 0 < share < 1, preset
    assert "| project `Trainer.train_epoch` |" in stdout and "Ratio project / bare" in stdout


def test_bench_train_landmarks_smoke(tmp_path) -> None:
    """The landmark model: Trainer.fit against a bare loop on rows measured from real photos."""
    pytest.importorskip("ai_edge_litert", reason="the hand landmark runtime is absent")
    photos = tmp_path / "photos"
    for folder in sorted(p for p in SAMPLE_DATA.iterdir() if p.is_dir()):
        (photos / folder.name).mkdir(parents=True)
        for path in sorted(folder.glob("*.jpg"))[:2]:
            shutil.copy(path, photos / folder.name / path.name)
    out = tmp_path / "train_landmarks.json"
    argv = ("--model", "landmarks", "--source", str(photos), "--out", str(out))
    sizes = ("--epochs", "3", "--rounds", "2", "--batch-size", "16")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = run_script("bench/bench_train.py", *argv, *sizes, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    config = result["config"]
    assert config["model"] == "landmarks" and config["epochs"] == 3 and config["threads"] == 1
    # 58 photos: every 4th is val, the others with a hand are train
    assert config["val_rows"] == 14 and 0 < config["train_rows"] <= 44
    seconds = result["seconds"]
    assert len(seconds["project"]) == len(seconds["bare"]) == 2
    ratios = sorted(b / p for p, b in zip(seconds["project"], seconds["bare"]))
    assert result["ratio"] == pytest.approx(sum(ratios) / 2) and result["ratio"] > 0
    assert result["cpu_ratio"] > 0 and result["default_threads_seconds"] > 0
    assert "| project `Trainer.fit` (1 thread" in proc.stdout
    assert "| bare torch loop (1 thread, same batch augmentation)" in proc.stdout
    assert "Ratio project / bare (speed): **" in proc.stdout


def test_bench_validate_smoke(tmp_path) -> None:
    result, stdout = _bench(
        "bench_validate.py", tmp_path / "validate.json", "--rounds", "1", "--workers", "1"
    )
    files = len([p for p in SAMPLE_DATA.rglob("*") if p.is_file()])
    assert result["config"]["files"] == files and result["config"]["workers"] == 1
    assert result["scan_files_per_s"] > 0 and result["bare_files_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["scan_files_per_s"] / result["bare_files_per_s"]
    )
    steps = result["breakdown_ms_per_file"]
    assert set(steps) == {"sha256", "header", "decode_rgb", "phash", "bare_pillow"}
    assert all(v > 0 for v in steps.values())
    assert result["gx"]["suites_s"] > 0 and result["gx"]["success"] is True
    assert "| project scan" in stdout and "Ratio scan / bare" in stdout


def test_batch_augmentation_runs_on_one_thread_and_restores_the_count(tmp_path) -> None:
    """The data-loading fix the bench measured: per-image transforms on one intra-op thread."""
    import torch
    from asl_testkit.published import train_options

    from asl_recognition.training.data import TensorSplit
    from asl_recognition.training.loop import LoopConfig, Trainer
    from asl_recognition.training.models import build_model

    seen: list[int] = []

    def recording_transform(image: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return image

    split = TensorSplit(torch.zeros(8, 3, 16, 16, dtype=torch.uint8), torch.arange(8) % 2)
    config = LoopConfig.from_options(train_options(batch_size=4), progress=False)
    trainer = Trainer(
        build_model("cnn", 2, 16), split, split, ["a", "b"], config, tmp_path, recording_transform
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batches = list(trainer.batches(1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(batches) == 2 and seen == [1] * 8
