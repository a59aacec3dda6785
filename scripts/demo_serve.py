"""`make run`, steps 2-4: serve the production model, classify the bundled test images, and
say where everything the pipeline produced lives.

    python scripts/demo_serve.py [--images DIR] [--keep-serving] [--http-port N ...]

Runs after ``pipelines/asl_pipeline.py --mode local-executor --config configs/run.yaml``.
Starts the real local ``tritonserver`` on the Triton repository the pipeline built from the
production model, runs
``triton/client/client.py`` on ``data/test_images``, stops the server, then prints the locations
of every artifact, report, ClearML offline session and model, and how to import the sessions
into a ClearML server.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.netutil import free_port  # noqa: E402
from asl_recognition.options import build_parser as build_options_parser  # noqa: E402
from asl_recognition.options import option, parse  # noqa: E402
from asl_recognition.paths import REPO_ROOT, SAMPLE_TEST_IMAGES, workspace  # noqa: E402
from asl_recognition.pipeline.runs import list_runs  # noqa: E402
from asl_recognition.web.demo import pipeline_repository  # noqa: E402

CLIENT = REPO_ROOT / "triton" / "client" / "client.py"
LINE_RE = re.compile(r"^(?P<path>.+?): (?P<label>\S+) (?P<prob>[0-9.]+)")
# A landmark classifier's client line when the photo has no hand: the answer is "nothing".
NO_HAND_RE = re.compile(r"^(?P<path>.+?): (?P<label>no hand found)$")
DESCRIPTION = __doc__.split("\n\n")[0]


@dataclass(frozen=True)
class DemoOptions:
    """What ``make run`` serves and classifies."""

    images: str = option(str(SAMPLE_TEST_IMAGES), "folder of images to classify")
    repo: str | None = option(None, "Triton repository (default: the pipeline's)")
    http_port: int = option(0, "0: any free port", low=0, high=65535)
    grpc_port: int = option(0, "0: any free port", low=0, high=65535)
    metrics_port: int = option(0, "0: any free port", low=0, high=65535)
    keep_serving: bool = option(
        False, "leave the server running after classifying (Ctrl-C stops it)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line, generated from :class:`DemoOptions` (also for the README table)."""
    return build_options_parser(DemoOptions, DESCRIPTION)


def last_completed_run() -> dict[str, Any] | None:
    runs = [s for s in list_runs() if s.get("status") == "completed"]
    return runs[-1] if runs else None


def step_outputs(run: dict[str, Any] | None, step: str) -> dict[str, Any]:
    if not run:
        return {}
    return run.get("steps", {}).get(step, {}).get("outputs", {}) or {}


def true_label(path: str) -> str | None:
    """``A_test.jpg`` -> ``A``; ``nothing_test.jpg`` -> ``nothing`` (Kaggle test-set names)."""
    stem = Path(path).stem
    return stem.rsplit("_test", 1)[0] if stem.endswith("_test") else None


def classify(images: str, http_url: str) -> tuple[int, list[str]]:
    """Run the client, echo its lines, and return its exit code and output lines."""
    command = [sys.executable, str(CLIENT), "--dir", images, "--url", http_url, "--top-k", "2"]
    print(f"$ {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode, result.stdout.splitlines()


def accuracy_line(lines: list[str]) -> str:
    scored = correct = 0
    for line in lines:
        match = LINE_RE.match(line) or NO_HAND_RE.match(line)
        truth = true_label(match.group("path")) if match else None
        if truth:
            label = match.group("label")
            scored += 1
            correct += ("nothing" if label == "no hand found" else label) == truth
    if not scored:
        return "no labelled test images (names like A_test.jpg) to score"
    return (
        f"test images classified correctly: {correct}/{scored} "
        "(Kaggle test frames: same signer and background as training, a smoke test)"
    )


def dataset_lines(dataset_id: str | None, label: str) -> list[str]:
    if not dataset_id:
        return []
    try:
        from asl_recognition.store import get_store

        store = get_store()
        ds = store.get(dataset_id=str(dataset_id))
        where = store.local_copy(ds)
        return [
            f"{label:<22} {ds.name} v{ds.version} id {ds.id}, {len(ds.files)} files",
            f"{'':<22} {where}",
        ]
    except Exception as exc:  # the summary must not fail on a store detail
        return [f"{label:<22} id {dataset_id} ({exc})"]


def sessions() -> list[dict[str, Any]]:
    path = workspace() / "offline_sessions.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def import_command(ws: Path) -> str:
    """Finds this workspace's sessions even once it is moved or copied (offline_import)."""
    return (
        f"ASL_WORKSPACE={shlex.quote(str(ws))} .venv/bin/python -m asl_recognition.offline_import"
    )


def print_locations(run: dict[str, Any] | None, production: Any, repo: Path, log: Path) -> None:
    ws = workspace()
    validate = step_outputs(run, "validate_raw")
    publish = step_outputs(run, "publish_dataset")
    train = step_outputs(run, "train")
    select = step_outputs(run, "select_best")
    lines = ["", "=== Where everything is ===", f"{'workspace':<22} {ws}"]
    if run:
        lines += [
            f"{'pipeline run':<22} {run['run_id']} ({run.get('duration_s', '?')} s)",
            f"{'':<22} {ws / 'pipeline_runs' / run['run_id'] / 'state.json'}"
            " (per-step stdout/stderr logs beside it)",
        ]
    if validate.get("report_path"):
        lines.append(
            f"{'validation report':<22} {validate['report_path']} "
            f"(valid {validate.get('valid')}, quarantined {validate.get('quarantined')})"
        )
    lines += dataset_lines(validate.get("raw_dataset_id"), "raw dataset")
    lines += dataset_lines(publish.get("dataset_id"), "split dataset")
    if train:
        lines.append(f"{'training run':<22} {train.get('run_dir')}")
        lines.append(f"{'':<22} onnx {train.get('onnx_path')}")
        metrics = ", ".join(
            f"{k} {float(train[k]):.3f}"
            for k in ("val_macro_f1", "test_accuracy", "test_macro_f1", "external_accuracy")
            if isinstance(train.get(k), (int, float))
        )
        lines.append(f"{'':<22} {metrics}")
    if select:
        lines.append(
            f"{'selection':<22} promoted={select.get('promoted')} "
            f"production={select.get('production_model_id')}"
        )
    if production is not None:
        lines += [
            f"{'production model':<22} {production.name} v{production.version} "
            f"id {production.id}",
            f"{'':<22} {production.onnx_path}",
            f"{'':<22} {production.classes_path}",
            f"{'model registry':<22} {ws / 'registry'}",
        ]
    lines += [f"{'triton repository':<22} {repo}", f"{'triton server log':<22} {log}"]
    rows = sessions()
    lines.append(f"{'ClearML sessions':<22} {len(rows)} offline session zip(s):")
    lines += [f"  {r.get('project', '')}/{r.get('task', '')}: {r.get('zip')}" for r in rows]
    lines += [
        "",
        "To import the sessions into a ClearML server: configure it (`clearml-init`, or",
        "CLEARML_API_HOST / CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY), then run:",
        f"  {import_command(ws)}",
        "Each import prints the new task id; the tasks then show their parameters, scalars,",
        "plots and artifacts in the web UI. With a server configured, the pipeline itself runs",
        "as a ClearML PipelineController: python pipelines/asl_pipeline.py --mode queue "
        "--config configs/run.yaml",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    options = parse(DemoOptions, argv, DESCRIPTION)
    from asl_recognition.registry import get_registry
    from asl_recognition.serving.triton_server import TritonServer, TritonServerError

    run = last_completed_run()
    production = get_registry().production()
    if production is None:
        print(
            "demo_serve: no production model in the registry; run the pipeline first "
            "(python pipelines/asl_pipeline.py)",
            file=sys.stderr,
        )
        return 2
    repo = Path(options.repo) if options.repo else pipeline_repository()
    if not (repo / "asl").is_dir() and not any(repo.glob("*/config.pbtxt")):
        print(f"demo_serve: no Triton repository at {repo}", file=sys.stderr)
        return 2
    ports = [
        p or free_port() for p in (options.http_port, options.grpc_port, options.metrics_port)
    ]
    log = workspace() / "triton_demo.log"
    server = TritonServer(
        repo,
        http_port=ports[0],
        grpc_port=ports[1],
        metrics_port=ports[2],
        model_control_mode="none",
        log_path=log,
        die_with_parent=True,  # started by this main thread: a kill -9 takes it along
    )
    print(f"Starting Triton on {server.http_url} (HTTP), repository {repo}", flush=True)
    code = 0
    try:
        server.start()
        server.wait_ready(timeout=120)
        print(f"Triton ready: production model {production.id} (v{production.version})")
        code, lines = classify(options.images, server.http_url)
        print(accuracy_line(lines))
        if options.keep_serving:
            print(f"Serving on {server.http_url}; Ctrl-C stops it", flush=True)
            server.process.wait()
    except TritonServerError as exc:
        print(f"demo_serve: Triton failed: {exc}", file=sys.stderr)
        code = 3
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print_locations(run, production, repo, log)
    return code


if __name__ == "__main__":
    sys.exit(main())
