"""Great Expectations 1.x (ephemeral context) on the scan table; suites are data in validation/."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from asl_recognition.paths import REPO_ROOT

SUITE_FILE = REPO_ROOT / "validation" / "asl_raw_suite.json"
_PLACEHOLDER = re.compile(r"^\$([a-z_]+)$")


def load_suite_config(
    path: str | Path = SUITE_FILE, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The suite file with ``$name`` placeholders filled from its params plus ``overrides``."""
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    params = {**config.get("params", {}), **{k: v for k, v in (overrides or {}).items()}}

    def fill(value: Any) -> Any:
        if isinstance(value, str) and (m := _PLACEHOLDER.match(value)):
            if m.group(1) not in params:
                raise KeyError(f"{path}: no value for placeholder {value}")
            return params[m.group(1)]
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    config["suites"] = fill(config["suites"])
    config["params"] = params
    return config


def _expectation(spec: Mapping[str, Any]) -> Any:
    """``expect_column_values_to_be_in_set`` -> ``gxe.ExpectColumnValuesToBeInSet(**kwargs)``."""
    import great_expectations.expectations as gxe

    class_name = "".join(part.capitalize() for part in spec["type"].split("_"))
    cls = getattr(gxe, class_name, None)
    if cls is None:
        raise ValueError(f"unknown GX expectation type {spec['type']!r}")
    return cls(**spec["kwargs"], meta=dict(spec.get("meta", {})))


def files_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The columns the file suite checks, one row per non-litter file."""
    rows = table[~table["litter"]]
    columns = ["path", "class", "width", "height", "mode", "format", "bytes", "sha256", "phash"]
    if "source" in rows:  # merged sources: GX sees (and Data Docs show) each row's source
        columns.insert(1, "source")
    frame = rows[columns].copy()
    frame["decodes"] = rows["error"].isna() | (rows["error"] == "")
    # GX's pandas backend wants plain object/float columns, not pandas' nullable extension types.
    for col in ("width", "height", "bytes"):
        frame[col] = frame[col].astype("float64")
    return frame.reset_index(drop=True).astype({"decodes": bool})


def class_counts_frame(table: pd.DataFrame) -> pd.DataFrame:
    valid = table[table["status"] == "valid"]
    counts = valid.groupby("class").size()
    return pd.DataFrame({"class": counts.index.astype(str), "valid": counts.values.astype(int)})


def _which(result: Mapping[str, Any], frame: pd.DataFrame) -> list[Any]:
    """What an expectation failed on, by name: the files (or classes) of its failing rows, or
    the classes missing. Its values alone (null, false, a count of 2) named none of them."""
    if "partial_missing_list" in result:
        return sorted(result["partial_missing_list"])
    key = "path" if "path" in frame else "class"
    rows = [i for i in result.get("partial_unexpected_index_list") or [] if i in frame.index]
    return [frame.at[i, key] for i in rows[:5]]


def _summarise(result: Any, frame: pd.DataFrame) -> dict[str, Any]:
    data = result.to_json_dict()
    failed = [
        {
            "expectation": r["expectation_config"]["type"],
            "column": r["expectation_config"]["kwargs"].get("column"),
            "why": r["expectation_config"].get("meta", {}).get("why"),
            "unexpected_count": r.get("result", {}).get("unexpected_count"),
            "examples": r.get("result", {}).get("partial_unexpected_list", [])[:5],
            "which": _which(r.get("result", {}), frame),
        }
        for r in data["results"]
        if not r["success"]
    ]
    return {"success": bool(data["success"]), "statistics": data["statistics"], "failed": failed}


def run_gx(
    frames: Mapping[str, pd.DataFrame],
    config: Mapping[str, Any],
    docs_dir: str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate each frame with the suite of the same name; returns (summary, full results).

    Data Docs HTML is written to ``docs_dir`` when given (offline; pages load CSS from CDNs).
    GX's modules call ``logging.captureWarnings(True)`` when imported, which sent every later
    warning of the process to a logger with no handler: validate_raw's own warnings vanished.
    Warnings are printed again once GX is done.
    """
    try:
        return _run_gx(frames, config, docs_dir)
    finally:
        logging.captureWarnings(False)


def _run_gx(
    frames: Mapping[str, pd.DataFrame], config: Mapping[str, Any], docs_dir: str | Path | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    site_names: list[str] = []
    if docs_dir is not None:
        ctx.add_data_docs_site(
            site_name="file_site",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        site_names = ["file_site"]
    source = ctx.data_sources.add_pandas("asl_scan")
    summary: dict[str, Any] = {"success": True, "suites": {}}
    full: dict[str, Any] = {}
    for suite_name, spec in config["suites"].items():
        suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name))
        for exp in spec["expectations"]:
            suite.add_expectation(_expectation(exp))
        batch = source.add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("all")
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}_vd", data=batch, suite=suite)
        )
        actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=site_names)]
        checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite_name}_cp",
                validation_definitions=[vd],
                actions=actions if site_names else [],
                result_format={"result_format": "SUMMARY"},
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": frames[suite_name]})
        (result,) = run.run_results.values()
        full[suite_name] = result.to_json_dict()
        summary["suites"][suite_name] = _summarise(result, frames[suite_name])
        summary["success"] = summary["success"] and bool(result.success)
    return summary, full
