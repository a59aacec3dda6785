"""INT8 and graph-optimised variants of a real (briefly trained) CNN, and the optimize task.

The model is trained here on the bundled real frames (data/sample) through the training code
itself, registered in a temporary local registry, then quantised, optimised, scored, timed and
registered again by ``tasks/optimize_model.py`` run as a subprocess with ``--model-id`` only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from asl_recognition.options import from_mapping
from asl_recognition.paths import REPO_ROOT


def _test_images(record, count: int = 64) -> np.ndarray:
    from asl_recognition.training.data import load_split, open_published

    dataset = open_published(record.dataset_id)
    split = load_split(dataset.root, "test", dataset.classes, 32)
    return split.images.numpy()[:count], split


def test_int8_variant_is_quantised_and_answers_like_fp32(trained, tmp_path) -> None:
    import onnx

    from asl_recognition.optimize.measure import open_session, run_probabilities
    from asl_recognition.optimize.variants import quantize_int8, sample_calibration

    workspace, record = trained
    images, _ = _test_images(record)
    calibration = sample_calibration(images, [f"img{i}" for i in range(len(images))], 40, seed=1)
    assert len(calibration.paths) == 40 and calibration.as_dict()["split"] == "train"
    target = tmp_path / "model.int8.onnx"
    settings = quantize_int8(record.onnx_path, target, calibration)
    assert settings["format"] == "QDQ" and settings["per_channel"] is True

    graph = onnx.load(str(target)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8_weights, "no int8 weight tensors in the quantised graph"

    fp32 = run_probabilities(open_session(record.onnx_path)[0], images)
    int8 = run_probabilities(open_session(target)[0], images)
    assert int8.shape == fp32.shape == (len(images), 29)
    np.testing.assert_allclose(int8.sum(1), 1.0, atol=1e-3)
    diff = np.abs(int8 - fp32).max()
    agree = (int8.argmax(1) == fp32.argmax(1)).mean()
    assert len(set(fp32.argmax(1))) >= 2  # the model does tell images apart
    assert diff < 0.2  # quantised, so not equal, yet close
    assert agree >= 0.8


def test_optimized_graph_loads_without_reoptimising_and_matches(trained, tmp_path) -> None:
    import onnxruntime as ort

    from asl_recognition.optimize.measure import open_session, run_probabilities
    from asl_recognition.optimize.variants import optimize_graph

    workspace, record = trained
    images, _ = _test_images(record, 16)
    target = tmp_path / "model.optimized.onnx"
    optimize_graph(record.onnx_path, target, "extended")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(target), opts, providers=["CPUExecutionProvider"])
    fp32 = run_probabilities(open_session(record.onnx_path)[0], images)
    np.testing.assert_allclose(run_probabilities(plain, images), fp32, atol=1e-5)


def test_bad_model_ids_are_refused_with_one_line(trained) -> None:
    from asl_recognition.optimize.options import OptimizeOptions
    from asl_recognition.optimize.run import run_optimize
    from asl_recognition.optimize.variants import OptimizeError
    from asl_recognition.registry import get_registry

    workspace, _ = trained
    before = len(get_registry("local").list("asl"))
    for model_id, expected in (("0" * 32, "no model with id"), ("production", "no production")):
        opts = from_mapping(OptimizeOptions, {"model_id": model_id, "registry": "local"})
        with pytest.raises(OptimizeError, match=expected) as info:
            run_optimize(opts)
        assert "\n" not in str(info.value)
    assert len(get_registry("local").list("asl")) == before
    assert not (workspace / "optimize").exists()


TASK = [sys.executable, "tasks/optimize_model.py"]


def _session_events(workspace: Path) -> tuple[dict, list[dict]]:
    line = (workspace / "offline_sessions.jsonl").read_text().splitlines()[-1]
    with zipfile.ZipFile(json.loads(line)["zip"]) as zf:
        task = json.loads(zf.read("task.json"))
        events = []
        for text in zf.read("metrics.jsonl").decode().splitlines():
            if text.strip():
                item = json.loads(text)
                events.extend(item if isinstance(item, list) else [item])
    return task, events


@pytest.mark.server
def run_task(command: list[str], workspace: Path, *args: str) -> subprocess.CompletedProcess:
    """The optimize task on ``workspace``, offline, as a process; it must exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(workspace), ASL_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("ASL_STEP_OUTPUTS", None)
    proc = subprocess.run(
        [*command, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_optimize_task_reports_registers_and_logs(trained) -> None:
    from asl_recognition.registry.local import LocalModelRegistry

    workspace, record = trained
    run_task(TASK, workspace, "--model-id", record.id, "--triton-requests", "16", "--rounds", "5")
    report_path = next((workspace / "optimize").glob("*/report.json"))
    report = json.loads(report_path.read_text())
    assert set(report["variants"]) == {"fp32", "int8", "optimized"}
    int8 = report["variants"]["int8"]
    assert int8["size_bytes"] < report["variants"]["fp32"]["size_bytes"]
    assert 0.0 <= int8["test"]["accuracy"] <= 1.0
    assert set(int8["holdout"]) == {"massey/hand4"}
    assert int8["details"]["calibration"]["count"] == len(int8["details"]["calibration"]["paths"])
    assert all(p.startswith("train/") for p in int8["details"]["calibration"]["paths"])
    choice = int8["details"]["quantization"]["per_channel_choice"]
    kept_per_channel = choice["val_accuracy_per_channel"] >= choice["val_accuracy_per_tensor"]
    assert int8["details"]["quantization"]["per_channel"] is kept_per_channel
    assert not list(report_path.parent.glob(".int8-*"))  # the trial that lost is gone
    for name in report["variants"]:
        for batch in ("1", "32"):
            assert report["latency"][name][batch]["ms_per_image"] > 0
    assert report["latency_ratio"]["fp32"] == {"1": 1.0, "32": 1.0}
    served = report["triton"]["variants"]
    for name in report["variants"]:  # served by tritonserver, answering as onnxruntime does
        assert served[name]["images_per_second"] > 0 and served[name]["requests"] == 16
        assert served[name]["concurrency"] == 8
        assert served[name]["top1_agreement_onnxruntime"] == 1.0
    markdown = (report_path.parent / "report.md").read_text()
    assert "| int8 |" in markdown and "training step" in markdown and "served request" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| variant"))
    assert header.rstrip(" |").endswith("triton_images_per_s_c8")
    int8_row = next(line for line in markdown.splitlines() if line.startswith("| int8 |"))
    assert float(int8_row.rstrip(" |").rsplit("|", 1)[1]) == served["int8"]["images_per_second"]
    for trace in (report["train_profile"]["trace"], report["request_profile"]["trace"]):
        assert json.loads(Path(trace).read_text())  # Chrome trace JSON

    registry = LocalModelRegistry(workspace / "registry")
    for name in ("int8", "optimized"):
        variant = registry.get(report["variants"][name]["model_id"])
        assert variant.parent_id == record.id and variant.tags == [name]  # native lineage
        assert variant.params["variant"] == name and variant.params["parent"] == record.id
        assert variant.metrics["triton_images_per_second"] == served[name]["images_per_second"]
        assert variant.metrics["test_accuracy"] == report["variants"][name]["test"]["accuracy"]
        assert Path(variant.onnx_path).is_file() and variant.dataset_id == record.dataset_id

    task, events = _session_events(workspace)
    outputs = task["hyperparams"]["Outputs"]
    assert outputs["int8_model_id"]["value"] == report["variants"]["int8"]["model_id"]
    titles = {(e.get("type"), e.get("metric")) for e in events}
    assert ("plot", "fp32 vs int8 vs optimized") in titles  # the table
    assert ("training_debug_image", "fp32 vs int8 vs optimized") in titles  # the bar plot


def python_without(distribution: str, root: Path) -> Path:
    """A venv whose site-packages links every installed distribution but ``distribution``: the
    agent's install (requirements.txt only) without a 5 GB fresh torch install per run."""
    import importlib.metadata
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    own = {path.parts[0] for path in importlib.metadata.distribution(distribution).files}
    source = Path(sysconfig.get_paths()["purelib"])
    target = Path(
        subprocess.check_output(
            [
                str(root / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            text=True,
        ).strip()
    )
    for entry in source.iterdir():
        if entry.name not in own:
            (target / entry.name).symlink_to(entry)
    return root / "bin" / "python"


def test_optimize_task_on_a_python_without_tritonserver_skips_only_the_served_figure(
    trained, tmp_path
) -> None:
    """An agent installs requirements.txt, not requirements-serving.txt: with the default
    --triton-requests the task still quantises, reports and registers, and says why the served
    images/s is missing (it used to fail after all that work)."""
    from asl_recognition.registry.local import LocalModelRegistry

    python = python_without("nvidia-pytriton", tmp_path / "agent-venv")
    probe = "import importlib.util as u; print(u.find_spec('pytriton'), u.find_spec('torch'))"
    found = subprocess.check_output([str(python), "-c", probe], text=True).split()
    assert found[0] == "None" and found[1] != "None"  # serving wheel gone, the rest there
    workspace, record = trained
    out_dir = tmp_path / "report"
    task = [str(python), "-u", "tasks/optimize_model.py", "--model-id", record.id]
    options = ["--rounds", "2", "--batch-sizes", "1", "--no-profile", "--output-dir", str(out_dir)]
    proc = run_task(task, workspace, *options)
    assert "Triton images/s skipped: nvidia-pytriton is not installed" in proc.stdout
    report = json.loads((out_dir / "report.json").read_text())
    assert report["triton"] == {
        "skipped": "no local tritonserver: nvidia-pytriton is not installed "
        "(pip install -r requirements-serving.txt)"
    }
    assert "Triton images/s: skipped (no local tritonserver" in (out_dir / "report.md").read_text()
    registry = LocalModelRegistry(workspace / "registry")
    for name in ("int8", "optimized"):
        variant = registry.get(report["variants"][name]["model_id"])
        assert variant.parent_id == record.id and "triton_images_per_second" not in variant.metrics


def test_int8_bench_measures_both_side_by_side(trained, tmp_path, monkeypatch) -> None:
    import importlib

    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    bench = importlib.import_module("bench_int8")
    _, record = trained
    out = tmp_path / "bench_int8.json"
    argv = ["--model-id", record.id, "--rounds", "3", "--registry", "local", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["ratio"]) == {"1", "32"} and all(r > 0 for r in result["ratio"].values())
    assert result["latency"]["int8"]["1"]["rounds"] == 3
    assert set(result["goal_met"]) == {"latency", "accuracy"}
    assert "| 32 |" in result["markdown"]
    assert bench.main(["--model-id", "production", "--registry", "local", "--out", str(out)]) == 2


def test_two_runs_cannot_share_one_output_dir(trained, tmp_path) -> None:
    """Both found the folder empty, then each wrote the other's variants and report."""
    from asl_recognition.optimize.options import OptimizeOptions
    from asl_recognition.optimize.run import load_inputs
    from asl_recognition.optimize.variants import OptimizeError
    from asl_recognition.registry.local import LocalModelRegistry

    workspace, record = trained
    registry = LocalModelRegistry(workspace / "registry")
    opts = OptimizeOptions(model_id=record.id, output_dir=str(tmp_path / "out"))
    assert load_inputs(registry, opts).out_dir == tmp_path / "out"
    with pytest.raises(OptimizeError, match="out"):
        load_inputs(registry, opts)
