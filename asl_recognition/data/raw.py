"""Validate a source folder/zip and publish it, every file kept, as the ``ASL_raw`` dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asl_recognition.classes import CLASSES
from asl_recognition.data import reporting
from asl_recognition.data.rules import apply_rules, usability
from asl_recognition.data.scan import scan_source
from asl_recognition.data.validate import (
    class_counts_frame,
    files_frame,
    load_suite_config,
    run_gx,
)
from asl_recognition.paths import workspace
from asl_recognition.store import DatasetStore, get_store

RULES_VERSION = 1
FINGERPRINT_TAG = "fingerprint:"
Uploader = Callable[[str, Any], None]


def fingerprint(payload: Any) -> str:
    """A stable content hash; published versions are tagged with it so reruns reuse them."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _extract_dir(source: Path) -> Path:
    digest = hashlib.sha256()
    with open(source, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    target = workspace() / "extracted" / digest.hexdigest()[:16]
    shutil.rmtree(target, ignore_errors=True)
    return target


def build_report(table: Any, usable: bool, reason: str | None, per_class: dict, gx: dict) -> dict:
    quarantined = table[table["status"] == "quarantined"]
    normalised = [
        {"path": row.path, "fact": fact}
        for row in table[table["status"] == "valid"].itertuples()
        for fact in row.facts
    ]
    reasons = Counter(r.split(":", 1)[0] for r in quarantined["reason"])
    return {
        "summary": {
            "total": int(len(table)),
            "valid": int((table["status"] == "valid").sum()),
            "quarantined": int(len(quarantined)),
            "normalised": len({n["path"] for n in normalised}),
            "per_class": per_class,
            "quarantine_reasons": dict(sorted(reasons.items())),
        },
        "quarantined": [
            {"path": row.path, "reason": row.reason} for row in quarantined.itertuples()
        ],
        "normalised": normalised,
        # success: every GX expectation held on the raw scan (a clean source);
        # usable: after quarantine the dataset still has every class at or above the minimum.
        "success": bool(gx["success"]),
        "usable": usable,
        "unusable_reason": reason,
        "gx": gx,
    }


def validate_raw(
    source: str | Path,
    min_per_class: int | None = None,
    report_dir: str | Path | None = None,
    name: str = "ASL_raw",
    source_name: str | None = None,
    workers: int | None = None,
    store: DatasetStore | None = None,
    logger: Any = None,
    upload: Uploader | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scan, run the GX suites, quarantine, write report.json, publish ``name`` when usable.

    Returns the step outputs: raw_dataset_id ("" when unusable), report_path, success, usable,
    unusable_reason, valid, quarantined, reused.
    """
    source = Path(source).expanduser().resolve()
    report_dir = Path(report_dir or workspace() / "reports" / name).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {"classes": list(CLASSES)}
    if min_per_class is not None:
        overrides["min_per_class"] = int(min_per_class)
    config = load_suite_config(overrides=overrides)
    params = config["params"]

    extract_dir = _extract_dir(source) if source.is_file() else None
    scanned = scan_source(source, extract_dir, CLASSES, workers=workers, progress=progress)
    table = apply_rules(scanned.table, CLASSES, params["min_side"], params["max_side"])
    usable, reason, per_class = usability(table, CLASSES, params["min_per_class"])

    docs_dir = report_dir / "data_docs"
    shutil.rmtree(docs_dir, ignore_errors=True)
    frames = {
        "asl_raw_files": files_frame(table),
        "asl_raw_class_counts": class_counts_frame(table),
    }
    gx_summary, gx_full = run_gx(frames, config, docs_dir)

    report = build_report(table, usable, reason, per_class, gx_summary)
    report.update(
        source=str(source),
        source_name=source_name or source.name,
        data_root=scanned.data_root,
        params={k: v for k, v in params.items() if k != "convertible_modes"},
    )
    table_out = table.assign(facts=table["facts"].map(";".join))
    table_out.to_csv(report_dir / "scan.csv", index=False)
    (report_dir / "gx_results.json").write_text(json.dumps(gx_full, indent=1, default=str))
    histogram = reporting.class_histogram_png(
        {"valid": per_class}, report_dir / "class_histogram.png", f"{name}: valid images per class"
    )

    dataset_id, version, reused = "", "", False
    if usable:
        store = store or get_store()
        fp = fingerprint(
            {
                "files": sorted(zip(table["path"], table["sha256"].fillna(""))),
                "params": report["params"],
                "classes": list(CLASSES),
                "rules": RULES_VERSION,
            }
        )
        tag = FINGERPRINT_TAG + fp
        existing = store.find(name, [tag])
        if existing is not None:
            ds, reused = existing, True
        else:
            metadata = {
                "fingerprint": fp,
                "source": str(source),
                "source_name": report["source_name"],
                "data_root": scanned.data_root,
                "classes": list(CLASSES),
                "summary": report["summary"],
                "success": report["success"],
                "quarantined": report["quarantined"],
                "normalised": report["normalised"],
            }
            # every file is kept, except links: storing one would copy whatever it points at
            files = {
                rel: scanned.root / rel
                for rel, reason in zip(table["path"], table["reason"])
                if reason != "symlink"
            }
            ds = store.create(
                name,
                files,
                metadata=metadata,
                tags=[tag, "raw"],
                description=f"raw images from {report['source_name']}, every file kept",
            )
        dataset_id, version = ds.id, ds.version
    report.update(raw_dataset_id=dataset_id, raw_version=version, reused=reused)
    report_path = report_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=1, default=str))

    reporting.log_validation(logger, report, histogram)
    if upload is not None:
        upload("validation_report", report_path)
        upload("gx_results", report_dir / "gx_results.json")
        upload("gx_data_docs", docs_dir)
        upload("scan_table", report_dir / "scan.csv")
        upload("class_histogram", histogram)
    return {
        "raw_dataset_id": dataset_id,
        "raw_version": version,
        "reused": reused,
        "report_path": str(report_path),
        "success": report["success"],
        "usable": usable,
        "unusable_reason": reason,
        "valid": report["summary"]["valid"],
        "quarantined": report["summary"]["quarantined"],
    }
