"""Validate one or several source folders/zips and publish them, every file kept, as ``ASL_raw``.

Several sources merge into ONE raw version: each file is stored under ``<source name>/<path in
the source>`` and each scan row carries a ``source`` column, so the report, the class histograms
and later the splits can be broken down per source. A single source keeps the plain layout
(``<CLASS>/<file>``, no prefix) so existing versions and pipelines read the same.

Runs may overlap (two agents on one workspace): each extracts its zips into a folder of its own,
removed when it ends, and writes its report into ``reports/<name>/<run>/``, so neither wipes nor
overwrites what the other reads (:mod:`asl_recognition.data.run_folders`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asl_recognition.classes import CLASSES
from asl_recognition.data import reporting
from asl_recognition.data.options import ValidateRawOptions
from asl_recognition.data.rules import (
    UNSTORABLE,
    apply_rules,
    usability,
)
from asl_recognition.data.run_folders import run_report_dir, run_scratch
from asl_recognition.data.scan import scan_source
from asl_recognition.data.sources import SourceSpec, SourceSpecError, parse_sources
from asl_recognition.data.validate import (
    class_counts_frame,
    files_frame,
    load_suite_config,
    run_gx,
)
from asl_recognition.hashing import sha256_file
from asl_recognition.options import settle
from asl_recognition.store import DatasetStore, DatasetVersion, get_store
from asl_recognition.store.base import atomic_output, atomic_write_text

RULES_VERSION = 1
FINGERPRINT_TAG = "fingerprint:"
Uploader = Callable[[str, Any], None]


def fingerprint(payload: Any) -> str:
    """A stable content hash; published versions are tagged with it so reruns reuse them."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _extract_dir(scratch: Path, source: Path, name: str = "") -> Path:
    # the source name too: two sources made from the same zip must not share (and wipe) a folder
    return scratch / (sha256_file(source)[:16] + (f"-{name}" if name else ""))


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


def _specs(source: Any, source_name: str | None) -> list[SourceSpec]:
    """``source`` as specs; ``source_name`` renames a single source (the older option)."""
    specs = parse_sources(str(source) if isinstance(source, Path) else source)
    if source_name:
        if len(specs) > 1:
            raise SourceSpecError("--source-name names a single source; use NAME=PATH for several")
        specs = parse_sources(f"{source_name}={specs[0].path}")
    return specs


def _scan_all(
    specs: list[SourceSpec], workers: int | None, progress: bool, scratch: Path
) -> tuple[Any, list]:
    """One merged table (paths prefixed with the source name when there are several); zips are
    extracted under ``scratch``, which must outlive the publish that copies from it."""
    import pandas as pd

    tables, sources = [], []
    multi = len(specs) > 1
    for spec in specs:
        path = spec.path.resolve()
        if not path.exists():
            raise FileNotFoundError(f"source {spec.name}: {path} does not exist")
        extract_dir = (
            _extract_dir(scratch, path, spec.name if multi else "") if path.is_file() else None
        )
        scanned = scan_source(path, extract_dir, CLASSES, workers=workers, progress=progress)
        prefix = f"{spec.name}/" if multi else ""
        table = scanned.table.copy()
        table["path"] = prefix + table["path"]
        table.insert(1, "source", spec.name)
        tables.append(table)
        data_root = (prefix + scanned.data_root).rstrip("/") if multi else scanned.data_root
        sources.append(
            {
                "name": spec.name,
                "source": str(path),
                "prefix": prefix,
                "data_root": data_root,
                "root": scanned.root,
            }
        )
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    for col in ("width", "height", "bytes", "exif_orientation"):
        table[col] = table[col].astype("Int64")
    return table, sources


def per_source_summary(table: Any, classes: list[str]) -> dict[str, dict[str, Any]]:
    """The report's per-source table: files, valid, quarantined and valid images per class."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(table["source"]):
        rows = table[table["source"] == name]
        valid = rows[rows["status"] == "valid"]
        per_class = {c: int((valid["class"] == c).sum()) for c in classes}
        reasons = Counter(
            r.split(":", 1)[0] for r in rows.loc[rows["status"] != "valid", "reason"]
        )
        out[name] = {
            "total": int(len(rows)),
            "valid": int(len(valid)),
            "quarantined": int((rows["status"] == "quarantined").sum()),
            "classes_present": sum(1 for n in per_class.values() if n),
            "classes_missing": [c for c, n in per_class.items() if n == 0],
            "per_class": per_class,
            "quarantine_reasons": dict(sorted(reasons.items())),
        }
    return out


def suite_config(min_per_class: int | None, source_names: Sequence[str]) -> dict[str, Any]:
    """The GX suites with this run's classes, minimum, and the declared source names."""
    overrides: dict[str, Any] = {"classes": list(CLASSES)}
    if min_per_class is not None:
        overrides["min_per_class"] = int(min_per_class)
    config = load_suite_config(overrides=overrides)
    config["suites"]["asl_raw_files"]["expectations"].append(
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "source", "value_set": list(source_names)},
            "meta": {"why": "every row is tagged with one of the declared sources"},
        }
    )
    return config


def run_suites(table: Any, config: dict[str, Any], docs_dir: Path) -> tuple[dict, dict]:
    """GX on the file table and the class counts; Data Docs rebuilt in ``docs_dir``."""
    shutil.rmtree(docs_dir, ignore_errors=True)
    frames = {
        "asl_raw_files": files_frame(table),
        "asl_raw_class_counts": class_counts_frame(table),
    }
    return run_gx(frames, config, docs_dir)


def full_report(
    table: Any, sources: list[dict], verdict: tuple, gx: dict, params: dict[str, Any]
) -> dict[str, Any]:
    """report.json's content: the summary, then where the files came from and the params."""
    report = build_report(table, *verdict, gx)
    single = len(sources) == 1
    report.update(
        source=sources[0]["source"] if single else [s["source"] for s in sources],
        source_name=sources[0]["name"] if single else "+".join(s["name"] for s in sources),
        data_root=sources[0]["data_root"] if single else "",
        sources=[{k: v for k, v in s.items() if k != "root"} for s in sources],
        per_source=per_source_summary(table, list(CLASSES)),
        params={k: v for k, v in params.items() if k != "convertible_modes"},
    )
    return report


def write_artifacts(
    report_dir: Path, table: Any, gx_full: dict, report: dict, name: str
) -> tuple[Path, Path]:
    """scan.csv, gx_results.json and the two class histograms; returns the histogram paths."""
    with atomic_output(report_dir / "scan.csv") as tmp:
        table.assign(facts=table["facts"].map(";".join)).to_csv(tmp, index=False)
    atomic_write_text(report_dir / "gx_results.json", json.dumps(gx_full, indent=1, default=str))
    histogram = reporting.class_histogram_png(
        {"valid": report["summary"]["per_class"]},
        report_dir / "class_histogram.png",
        f"{name}: valid images per class",
    )
    per_source_png = reporting.class_histogram_png(
        {n: s["per_class"] for n, s in report["per_source"].items()},
        report_dir / "class_histogram_per_source.png",
        f"{name}: valid images per class and source",
    )
    return histogram, per_source_png


def _raw_metadata(fp: str, report: dict[str, Any], table: Any) -> dict[str, Any]:
    valid = table[table["status"] == "valid"]
    return {
        "fingerprint": fp,
        **{k: report[k] for k in ("source", "source_name", "data_root", "sources")},
        "classes": list(CLASSES),
        "summary": report["summary"],
        "per_source": {
            n: {k: v for k, v in s.items() if k != "per_class"}
            for n, s in report["per_source"].items()
        },
        **{k: report[k] for k in ("success", "quarantined", "normalised")},
        # computed once by the scan; publishing reads it instead of hashing every image again
        "phash": dict(zip(valid["path"], valid["phash"])),
    }


def publish_raw(
    store: DatasetStore,
    name: str,
    table: Any,
    sources: list[dict],
    report: dict[str, Any],
    extra_tags: Sequence[str] = (),
) -> tuple[DatasetVersion, bool]:
    """The raw version holding every file (links and special files excepted); (version, reused).

    Unchanged files, sources, params and rules reuse the version tagged with their fingerprint.
    """
    fp = fingerprint(
        {
            "files": sorted(zip(table["path"], table["sha256"].fillna(""))),
            "sources": [(s["name"], s["prefix"]) for s in sources],
            "params": report["params"],
            "classes": list(CLASSES),
            "rules": RULES_VERSION,
        }
    )
    existing = store.reusable(name, [FINGERPRINT_TAG + fp])
    if existing is not None:
        return existing, True
    roots = {s["name"]: (s["root"], len(s["prefix"])) for s in sources}
    files = {}
    for rel, src, why in zip(table["path"], table["source"], table["reason"]):
        if why not in UNSTORABLE:
            root, cut = roots[src]
            files[rel] = root / rel[cut:]
    names = [s["name"] for s in sources]
    ds = store.create(
        name,
        files,
        metadata=_raw_metadata(fp, report, table),
        tags=[FINGERPRINT_TAG + fp, "raw", *extra_tags] + [f"source:{n}" for n in names],
        description=f"raw images from {', '.join(names)}, every file kept",
        expected=dict(zip(table["path"], table["sha256"].fillna(""))),  # what was validated
    )
    return ds, ds.reused


def _deliver(
    report_dir: Path, report: dict, pngs: tuple[Path, Path], logger: Any, upload: Uploader | None
) -> Path:
    """Write report.json, log the summary and upload every artifact."""
    report_path = atomic_write_text(
        report_dir / "report.json", json.dumps(report, indent=1, default=str)
    )
    reporting.log_validation(logger, report, *pngs)
    if upload is not None:
        upload("validation_report", report_path)
        upload("gx_results", report_dir / "gx_results.json")
        upload("gx_data_docs", report_dir / "data_docs")
        upload("scan_table", report_dir / "scan.csv")
        upload("class_histogram", pngs[0])
        upload("class_histogram_per_source", pngs[1])
    return report_path


def validate_raw(
    source: str | Path | Sequence[str] | None = None,
    settings: ValidateRawOptions | None = None,
    store: DatasetStore | None = None,
    logger: Any = None,
    upload: Uploader | None = None,
    progress: bool = True,
    **changes: Any,
) -> dict[str, Any]:
    """Scan every source, run the GX suites, quarantine, write report.json, publish when usable.

    ``settings``: the validate_raw task's options (their defaults when None), with ``source``
    and ``changes`` replacing single fields. A source is a path, ``NAME=PATH``, or a list of those
    (a JSON list string too). The minimum per class applies to the merged set: a source may lack
    classes (Massey has no del/nothing/space). Raises SourceSpecError (a ValueError) for
    malformed or duplicate names.

    Returns the step outputs: raw_dataset_id ("" when unusable), report_path, success, usable,
    unusable_reason, valid, quarantined, reused.
    """
    if source is not None:
        changes["source"] = source
    opts = settle(ValidateRawOptions, settings, **changes)
    name, workers, tags = opts.name, opts.workers, opts.tags
    min_per_class = opts.min_per_class
    specs = _specs(opts.source, opts.source_name)
    report_dir = Path(opts.report_dir or run_report_dir(name)).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    config = suite_config(min_per_class, [s.name for s in specs])
    params = config["params"]

    with run_scratch() as scratch:  # the extracted files live until the publish has copied them
        scanned, sources = _scan_all(specs, workers, progress, scratch)
        table = apply_rules(scanned, CLASSES, params["min_side"], params["max_side"])
        usable, reason, per_class = usability(table, CLASSES, params["min_per_class"])
        gx_summary, gx_full = run_suites(table, config, report_dir / "data_docs")
        report = full_report(table, sources, (usable, reason, per_class), gx_summary, params)
        pngs = write_artifacts(report_dir, table, gx_full, report, name)

        ds, reused = None, False
        if usable:
            ds, reused = publish_raw(store or get_store(), name, table, sources, report, tags)
    report.update(raw_dataset_id=ds.id if ds else "", raw_version=ds.version if ds else "")
    report.update(reused=reused)
    report_path = _deliver(report_dir, report, pngs, logger, upload)
    return {
        "raw_dataset_id": report["raw_dataset_id"],
        "raw_version": report["raw_version"],
        "reused": reused,
        "report_path": str(report_path),
        "success": report["success"],
        "usable": usable,
        "unusable_reason": reason,
        "valid": report["summary"]["valid"],
        "quarantined": report["summary"]["quarantined"],
        "sources": [s.name for s in specs],
    }
