"""ClearML task: split ASL_raw without leakage, resize once and publish ASL (parents ASL_raw).

Run from the repo root: ``python tasks/publish_dataset.py --raw-version latest``. Several raw
versions (``--raw-version ID1 --raw-version ID2`` or ``ID1,ID2``) feed one ASL version that lists
all of them as parents. ``--group-by signer|source`` keeps every signer/source in one of
train/val/test; ``--holdout-source NAME`` / ``--holdout-group SOURCE:SIGNER`` move whole
sources/signers to a fourth split ``holdout/`` that training never sees. Bad holdouts exit 2
with a one-line reason and publish nothing. Re-running with unchanged inputs and options reuses
the existing version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.tracking import init_task


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--raw-version",
        action="append",
        default=None,
        help="ASL_raw dataset id, version string or 'latest' (default); repeat it or give "
        "ID1,ID2 to merge several raw versions, all recorded as parents",
    )
    parser.add_argument(
        "--image-size", type=int, default=64, help="output side in pixels (square, RGB)"
    )
    parser.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=[0.7, 0.15, 0.15],
        metavar=("TRAIN", "VAL", "TEST"),
        help="train/val/test fractions (normalised to sum 1)",
    )
    parser.add_argument(
        "--group-by",
        "--grouping",
        dest="grouping",
        choices=["frame", "phash", "none", "signer", "source"],
        default="frame",
        help="frame: frame-number blocks (phash clusters for names without frames); "
        "phash: near-duplicate clusters only; none: per-image random split (leaky); "
        "signer: each signer (--signer-pattern) in one split, files naming none fall back to "
        "frame; source: each source in one split",
    )
    parser.add_argument(
        "--signer-pattern",
        default=r"(hand\d+)",
        help="regex finding the signer id in a file name (first group, else the match); "
        "Massey hand1_a_bot_seg_1_cropped.jpeg -> hand1",
    )
    parser.add_argument(
        "--holdout-source",
        action="append",
        default=None,
        metavar="NAME",
        help="hold out every file of this source in the 'holdout' split (repeatable, or a,b)",
    )
    parser.add_argument(
        "--holdout-group",
        action="append",
        default=None,
        metavar="SOURCE:SIGNER",
        help="hold out one signer of one source, e.g. massey:hand4 (globs allowed; a bare "
        "SIGNER means any source; repeatable, or a,b)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the group assignment")
    parser.add_argument(
        "--block-frames", type=int, default=150, help="frames per block for --grouping frame"
    )
    parser.add_argument(
        "--edge-frames",
        type=int,
        default=3,
        help="frames this close across a block edge are kept in one group",
    )
    parser.add_argument(
        "--phash-threshold",
        type=int,
        default=2,
        help="perceptual-hash Hamming distance at or below which images are near duplicates",
    )
    parser.add_argument("--name", default="ASL", help="dataset name to publish")
    parser.add_argument("--raw-name", default="ASL_raw", help="raw dataset name to read")
    parser.add_argument(
        "--workers", type=int, default=None, help="preprocessing processes (default: min(2, CPUs))"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = vars(args)
    # repeatable options become one comma-separated parameter: readable and editable in the UI
    params["raw_version"] = ",".join(args.raw_version or ["latest"])
    params["holdout_source"] = ",".join(args.holdout_source or [])
    params["holdout_group"] = ",".join(args.holdout_group or [])
    ctx = init_task("ASL", "publish_dataset", params=params, task_type="data_processing")
    from asl_recognition.data.publish import publish_dataset
    from asl_recognition.data.sources import SourceSpecError
    from asl_recognition.store import DatasetNotFoundError

    p = ctx.params
    try:  # a holdout that cannot be honoured, an unknown raw version: nothing is published
        result = publish_dataset(
            raw_version=p["raw_version"],
            image_size=int(p["image_size"]),
            split=[float(f) for f in p["split"]],
            grouping=p["grouping"] or "frame",  # empty from a pipeline: the default
            seed=int(p["seed"]),
            block_frames=int(p["block_frames"]),
            edge_frames=int(p["edge_frames"]),
            phash_threshold=int(p["phash_threshold"]),
            name=p["name"],
            raw_name=p["raw_name"],
            workers=p["workers"],
            logger=ctx.logger,
            upload=ctx.upload_artifact,
            holdout_source=p["holdout_source"],
            holdout_group=p["holdout_group"],
            signer_pattern=p["signer_pattern"],
        )
    except (SourceSpecError, DatasetNotFoundError) as exc:
        ctx.close()
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    ctx.record_outputs(
        dataset_id=result["dataset_id"],
        dataset_version=result["dataset_version"],
        reused=result["reused"],
    )
    ctx.close()
    leaky = " (LEAKY split: near-duplicates cross splits)" if result["leaky"] else ""
    print(
        f"{p['name']} {result['dataset_id']} v{result['dataset_version']} "
        f"reused={result['reused']} counts={result['counts']}{leaky}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
