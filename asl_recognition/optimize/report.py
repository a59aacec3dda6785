"""The comparison report: fp32 vs INT8 vs optimised as JSON, Markdown, a ClearML table and plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

VARIANT_ORDER = ("fp32", "int8", "optimized")


def _samples(report: dict[str, Any]) -> str:
    return "landmark rows" if report.get("contract") == "landmarks" else "images"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100.0 * value:.1f}%"


def triton_column(report: dict[str, Any]) -> str:
    served = report.get("triton", {}).get("variants") or {}
    concurrency = next(iter(served.values()), {}).get("concurrency", "")
    return f"triton_images_per_s_c{concurrency}" if concurrency else "triton_images_per_s"


def triton_images_per_second(report: dict[str, Any], name: str) -> float | str:
    """The served figure, or why there is none (skipped)."""
    triton = report.get("triton") or {"skipped": "not measured"}
    if "skipped" in triton:
        return "skipped"
    return triton["variants"][name]["images_per_second"]


def _contract_lines(report: dict[str, Any]) -> list[str]:
    """What was fed, what Triton served, and what was not quantised."""
    triton = report.get("triton") or {"skipped": "not measured"}
    if "skipped" in triton:
        served = f"Triton images/s: skipped ({triton['skipped']})."
    else:
        first = next(iter(triton["variants"].values()))
        served = (
            f"Triton images/s: the {triton['model']} served by the local tritonserver (CPU), "
            f"{first['requests']} one-sample requests per variant from the test split, "
            f"{first['concurrency']} in flight. Served top-1 agreeing with the same variant in "
            "onnxruntime / with fp32 in onnxruntime: "
            + ", ".join(
                f"{n} {_pct(v['top1_agreement_onnxruntime'])} / {_pct(v['top1_agreement_fp32'])}"
                for n, v in triton["variants"].items()
            )
            + "."
        )
    lines = [served, ""]
    if report.get("contract") == "landmarks":
        lines += [
            "Landmark classifier: samples are ASL_landmarks rows (63 features + hand_found), "
            "INT8 calibrated on TRAIN rows with a hand. Only this classifier is quantised: the "
            "hand-landmark network in front of it is a TFLite model run by LiteRT, to which "
            "onnxruntime's static quantisation does not apply.",
            "",
        ]
    return lines


def comparison_table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per variant: size, accuracy (test, val, held out), latency and its ratio."""
    rows = []
    batches = [str(b) for b in report["batch_sizes"]]
    for name in VARIANT_ORDER:
        variant = report["variants"].get(name)
        if variant is None:
            continue
        row: dict[str, Any] = {
            "variant": name,
            "model_id": variant.get("model_id") or "",
            "size_kb": round(variant["size_bytes"] / 1024.0, 1),
            "test_accuracy": round(variant["test"]["accuracy"], 4),
            "val_accuracy": round(variant["val"]["accuracy"], 4),
            "holdout_accuracy": (
                None
                if variant["holdout_accuracy"] is None
                else round(variant["holdout_accuracy"], 4)
            ),
            "top1_agreement_fp32": round(variant["agreement"]["top1_agreement"], 4),
            "load_ms": round(variant["load_ms"], 1),
        }
        for b in batches:
            row[f"ms_per_image_b{b}"] = round(report["latency"][name][b]["ms_per_image"], 4)
            row[f"ratio_b{b}"] = report["latency_ratio"][name][b]
        row[triton_column(report)] = triton_images_per_second(report, name)
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    """A pipe table without the optional ``tabulate`` dependency."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in frame.values
    ]
    return "\n".join([header, rule, *body])


def _profile_lines(title: str, profile: dict[str, Any] | None, key: str) -> list[str]:
    if not profile:
        return []
    total = profile.get("total_ms", profile.get("request_ms"))
    lines = [f"### {title} (batch {profile['batch']}, {total} ms)", ""]
    for row in profile["top"]:
        lines.append(f"- `{row['op']}`: {row[key]} ms ({_pct(row['share'])})")
    lines.append(f"\nTrace: `{Path(profile['trace']).name}`\n")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """report.md: what was compared, on what, the table, and the profiles' top costs."""
    parent = report["model"]
    calibration = report["calibration"]
    groups = report["variants"]["fp32"]["holdout"]
    lines = [
        f"# Optimised variants of {parent['name']} v{parent['version']} ({parent['id']})",
        "",
        f"Dataset {report['dataset_id']}; test split {report['test_images']} {_samples(report)}; "
        f"INT8 calibrated on {calibration['count']} TRAIN {_samples(report)} "
        f"(seed {calibration['seed']}, from {calibration.get('source') or report['dataset_id']}). "
        f"Latency: onnxruntime {report['onnxruntime']} CPU, {report['cpu_count']} cores visible, "
        f"median of {report['rounds']} interleaved rounds; no GPU was used.",
        "",
        _markdown(comparison_table(report)),
        "",
        "ratio: median ms/image over fp32's at the same batch size. Every variant is loaded with "
        "onnxruntime's default optimisation, so `optimized` saves the optimisation work at load "
        "time rather than per image; load_ms is one load each (a few ms here: noise-level).",
        "",
        *_contract_lines(report),
    ]
    if groups:
        lines += ["Held-out groups (accuracy):", ""]
        for name in VARIANT_ORDER:
            held = report["variants"].get(name, {}).get("holdout") or {}
            shown = ", ".join(
                f"{g} {_pct(r['accuracy'])} ({r['images']})" for g, r in held.items()
            )
            lines.append(f"- {name}: {shown}")
        lines.append("")
    lines += ["## Profiles", ""]
    lines += _profile_lines(
        "One training step (torch.profiler)", report.get("train_profile"), "self_ms"
    )
    lines += _profile_lines(
        "One served request (onnxruntime)", report.get("request_profile"), "ms"
    )
    return "\n".join(lines) + "\n"


def figure(report: dict[str, Any]) -> Any:
    """Bars: ms/image per batch size, test accuracy and Triton images/s, one colour each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in VARIANT_ORDER if n in report["variants"]]
    batches = [str(b) for b in report["batch_sizes"]]
    fig, (left, right, served) = plt.subplots(1, 3, figsize=(14, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(batches))]
        left.bar(
            xs, [report["latency"][name][b]["ms_per_image"] for b in batches], width, label=name
        )
        right.bar(i, report["variants"][name]["test"]["accuracy"], 0.6, label=name)
        rate = triton_images_per_second(report, name)
        served.bar(i, 0.0 if rate == "skipped" else rate, 0.6, label=name)
    left.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(batches))])
    left.set_xticklabels([f"batch {b}" for b in batches])
    left.set_ylabel("ms / image (median)")
    left.legend()
    right.set_xticks(range(len(names)))
    right.set_xticklabels(names)
    right.set_ylabel("test accuracy")
    right.set_ylim(0, 1)
    served.set_xticks(range(len(names)))
    served.set_xticklabels(names)
    served.set_ylabel(triton_column(report).replace("_", " "))
    if "skipped" in (report.get("triton") or {"skipped": ""}):
        served.set_title("Triton: skipped")
    fig.tight_layout()
    return fig


def write(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and comparison.png in ``out_dir``, each written then renamed."""
    paths = {
        "json": out_dir / "report.json",
        "md": out_dir / "report.md",
        "png": out_dir / "comparison.png",
    }
    texts = {"json": json.dumps(report, indent=2, default=float), "md": markdown(report)}
    for key, text in texts.items():
        tmp = paths[key].with_name(f".{paths[key].name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, paths[key])
    fig = figure(report)
    fig.savefig(paths["png"], dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def log_clearml(logger: Any, report: dict[str, Any]) -> None:
    """The table and the bar plot on the task (offline they go into the session zip)."""
    logger.report_table(
        title="fp32 vs int8 vs optimized",
        series="comparison",
        iteration=0,
        table_plot=comparison_table(report),
    )
    fig = figure(report)
    logger.report_matplotlib_figure(
        title="fp32 vs int8 vs optimized",
        series="latency and accuracy",
        figure=fig,
        iteration=0,
        report_image=True,
    )
    import matplotlib.pyplot as plt

    plt.close(fig)
    for name, per_batch in report["latency_ratio"].items():
        for batch, ratio in per_batch.items():
            if name != "fp32":
                logger.report_single_value(f"{name}_latency_ratio_b{batch}", float(ratio))
    for name in report["variants"]:
        rate = triton_images_per_second(report, name)
        if rate != "skipped":
            logger.report_single_value(f"{name}_triton_images_per_second", float(rate))
