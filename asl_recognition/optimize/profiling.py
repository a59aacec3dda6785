"""Where the time goes: one training step (torch.profiler) and one served request (onnxruntime).

Both write the tool's own trace file (Chrome trace JSON, opened in chrome://tracing or Perfetto)
and return the few most expensive operators, which the optimisation report lists.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TOP = 8


def profile_training_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, out_dir: Path
) -> dict[str, Any]:
    """One AdamW step (forward, loss, backward, update) after one unprofiled warm-up step."""
    from torch.profiler import ProfilerActivity, profile

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), labels).backward()
        optimizer.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    trace = out_dir / "train_step_trace.json"
    prof.export_chrome_trace(str(trace))
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_us = sum(e.self_cpu_time_total for e in rows) or 1.0
    return {
        "trace": str(trace),
        "batch": int(len(images)),
        "total_ms": round(total_us / 1000.0, 3),
        "top": [
            {
                "op": e.key,
                "self_ms": round(e.self_cpu_time_total / 1000.0, 3),
                "share": round(e.self_cpu_time_total / total_us, 3),
                "calls": int(e.count),
            }
            for e in rows[:TOP]
        ],
    }


def _node_costs(events: list[dict[str, Any]]) -> tuple[dict[str, float], float]:
    """Microseconds per operator type over the profiled run, and the run's own duration."""
    costs: dict[str, float] = defaultdict(float)
    run_us = 0.0
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            costs[event.get("args", {}).get("op_name", "?")] += float(event.get("dur", 0))
        elif event.get("cat") == "Session" and event.get("name") == "model_run":
            run_us = float(event.get("dur", 0))
    return costs, run_us


def profile_request(
    onnx_path: str | Path,
    images: np.ndarray,
    out_dir: Path,
    feeds: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """onnxruntime's own profile of one request of ``images`` (samples made the graph's inputs
    by ``feeds``; default: the first input) after a warm-up request."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(out_dir / "ort_request")
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    if feeds is not None:
        feed = feeds(images)
    else:
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(images)}
    session.run([output], feed)
    session.run([output], feed)
    written = Path(session.end_profiling())
    trace = out_dir / "ort_request_trace.json"
    shutil.move(str(written), trace)
    events = json.loads(trace.read_text())
    # the last model_run is the measured request; the first one warmed the session up
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last_start = float(runs[-1]["ts"]) if runs else 0.0
    costs, run_us = _node_costs([e for e in events if float(e.get("ts", 0)) >= last_start])
    total = sum(costs.values()) or 1.0
    ranked = sorted(costs.items(), key=lambda item: item[1], reverse=True)
    return {
        "trace": str(trace),
        "batch": int(len(images)),
        "request_ms": round(run_us / 1000.0, 3),
        "top": [
            {"op": op, "ms": round(us / 1000.0, 3), "share": round(us / total, 3)}
            for op, us in ranked[:TOP]
        ],
    }
