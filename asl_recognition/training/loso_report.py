"""The leave-one-source-out report: the table, its summary, the figures and the ClearML log.

Split from :mod:`asl_recognition.training.loso` (which trains and scores the folds) so that each
reads at once; the report is one dict, ``loso.run_loso`` builds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from asl_recognition.store.base import atomic_write_text

REPORT = "loso"


def summarise(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over groups (each weighs the same), pooled over rows, and the worst group."""
    images = sum(f["images"] for f in folds)
    worst = min(folds, key=lambda f: f["accuracy"])
    given = [f["accuracy_given_hand"] for f in folds if f["accuracy_given_hand"] is not None]
    return {
        "groups": len(folds),
        "mean_accuracy": float(np.mean([f["accuracy"] for f in folds])),
        "pooled_accuracy": sum(f["accuracy"] * f["images"] for f in folds) / max(1, images),
        "mean_hand_found_rate": float(np.mean([f["hand_found_rate"] for f in folds])),
        "mean_accuracy_given_hand": float(np.mean(given)) if given else None,
        "worst_group": worst["group"],
        "worst_accuracy": worst["accuracy"],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_table(report: dict[str, Any]) -> str:
    """The table the README and the model card show: one row per group, then mean and worst."""
    lines = [
        "| left out | images | accuracy | hand found | accuracy given a hand | worst classes "
        "(correct/images) | trained on rows |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for f in report["folds"]:
        worst = worst_classes(f)
        lines.append(
            f"| {f['group']} | {f['images']} | {_pct(f['accuracy'])} | "
            f"{_pct(f['hand_found_rate'])} | {_pct(f['accuracy_given_hand'])} | {worst} | "
            f"{f['train_rows']} |"
        )
    s = report["summary"]
    lines.append(
        f"| **mean of {s['groups']} groups** | | **{_pct(s['mean_accuracy'])}** | "
        f"{_pct(s['mean_hand_found_rate'])} | {_pct(s['mean_accuracy_given_hand'])} | | |"
    )
    lines.append(f"| **worst: {s['worst_group']}** | | **{_pct(s['worst_accuracy'])}** | | | | |")
    return "\n".join(lines) + "\n"


def worst_classes(fold: dict[str, Any]) -> str:
    """``T 0/200, V 0/200, Z 0/200``: a fold's weakest classes, correct of images."""
    return ", ".join(f"{w['class']} {w['correct']}/{w['images']}" for w in fold["worst_classes"])


def markdown_report(report: dict[str, Any]) -> str:
    """The report file (the recipe's model card for generalisation): what was run, the table."""
    t = report["train_options"]
    return (
        f"# Leave-one-source-out: ASL_landmarks {report['landmarks_version']} "
        f"({report['landmarks_id']})\n\n"
        f"Each row: the landmark MLP trained with the train step of `{report['recipe']}` "
        f"({t['epochs']} epochs, label smoothing {t['label_smoothing']}, keep {t['keep']}, "
        f"augment {t['augment']}, seed {t['seed']}) on the train split of every other group, "
        "scored on every row of the left-out group (a missed hand counts as wrong). Pooled "
        f"accuracy over all {sum(f['images'] for f in report['folds'])} rows: "
        f"{_pct(report['summary']['pooled_accuracy'])}; {report['seconds']} s in all, "
        f"{report['threads']} torch thread(s).\n\n" + markdown_table(report)
    )


def plot_accuracy(report: dict[str, Any], out: Path) -> Path:
    """Bars of accuracy (and accuracy given a hand) per left-out group, the mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = report["folds"]
    names = [f["group"] for f in folds]
    x = np.arange(len(folds))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(folds) + 2), 4))
    ax.bar(x - 0.2, [f["accuracy"] for f in folds], 0.4, label="accuracy")
    given = [f["accuracy_given_hand"] or 0.0 for f in folds]
    ax.bar(x + 0.2, given, 0.4, label="accuracy given a hand", color="tab:green")
    ax.axhline(report["summary"]["mean_accuracy"], color="black", linestyle="--", label="mean")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1.15)  # head room for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("share correct")
    ax.set_title("leave-one-source-out: accuracy on the left-out group")
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_confusions(report: dict[str, Any], classes: list[str], out_dir: Path) -> list[Path]:
    """One row-normalised confusion matrix per fold (the matrices are already counted)."""
    import matplotlib.pyplot as plt

    from asl_recognition.training.plots import confusion_matrix_figure

    paths = []
    for fold in report["folds"]:
        matrix = np.asarray(fold["confusion_matrix"])
        figure = confusion_matrix_figure(matrix, classes, f"left out: {fold['group']}")
        path = out_dir / f"confusion-{fold['log'][len('fold-') : -len('.log')]}.png"
        figure.savefig(path)
        plt.close(figure)
        paths.append(path)
    return paths


def write_report(report: dict[str, Any], classes: list[str], out_dir: Path) -> list[Path]:
    """loso.json, loso.md, the bar chart and the confusion matrices, written atomically."""
    files = []
    for name, text in (
        (f"{REPORT}.json", json.dumps(report, indent=1)),
        (f"{REPORT}.md", markdown_report(report)),
    ):
        files.append(atomic_write_text(out_dir / name, text))
    files.append(plot_accuracy(report, out_dir / f"{REPORT}_accuracy.png"))
    return files + plot_confusions(report, classes, out_dir)


def clear_report(out_dir: Path) -> None:
    """An earlier report's files, before a new one is made in its folder (a chosen
    --output-dir reused): a run that fails or is killed midway then leaves its own fold logs
    and no table, never a mix of two reports."""
    for pattern in (f"{REPORT}.*", f"{REPORT}_*.png", "confusion-*.png", "fold-*.log"):
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)


def log_report(ctx: Any, report: dict[str, Any], files: list[Path]) -> None:
    """Single values, the table, the bar chart and each fold's confusion matrix in ClearML."""
    logger, summary = ctx.logger, report["summary"]
    for key in ("mean_accuracy", "worst_accuracy", "pooled_accuracy", "mean_hand_found_rate"):
        logger.report_single_value(f"loso {key}", float(summary[key]))
    for fold in report["folds"]:
        for key in ("accuracy", "hand_found_rate", "accuracy_given_hand"):
            if fold[key] is not None:
                logger.report_scalar(f"loso {key}", fold["group"], float(fold[key]), 0)
    header = ["left out", "images", "accuracy", "hand found", "accuracy given a hand", "worst"]
    rows = [header] + [
        [
            f["group"],
            f["images"],
            _pct(f["accuracy"]),
            _pct(f["hand_found_rate"]),
            _pct(f["accuracy_given_hand"]),
            worst_classes(f),
        ]
        for f in report["folds"]
    ]
    logger.report_table(title="leave-one-source-out", series="folds", iteration=0, table_plot=rows)
    for path in files:
        if path.suffix == ".png":
            logger.report_image(
                title="leave-one-source-out", series=path.stem, local_path=str(path)
            )
        else:
            ctx.upload_artifact(path.name, str(path))
    logger.flush(wait=True)  # the images are sent from the report's files: before they may change
