"""ClearML task: split ASL_raw without leakage, resize once and publish ASL (parents ASL_raw).

Several raw versions (``--raw-version ID1 ID2`` or ``ID1,ID2``) feed one ASL version that lists
all of them as parents. ``--group-by signer|source`` keeps every signer/source in one of
train/val/test; ``--holdout-source NAME`` / ``--holdout-group SOURCE:SIGNER`` move whole
sources/signers to a fourth split ``holdout/`` that training never sees. Bad options or holdouts
exit 2 with a one-line reason and publish nothing. Re-running with unchanged inputs and options
reuses the existing version.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.data.options import PublishDatasetOptions
from asl_recognition.data.sources import SourceSpecError
from asl_recognition.store import DatasetNotFoundError
from asl_recognition.tracking import TaskContext, task_entry
from asl_recognition.workers import WorkerLostError


# a holdout that cannot be honoured, an unknown raw version: nothing is published
@task_entry(
    PublishDatasetOptions,
    task_type="data_processing",
    refused=(SourceSpecError, DatasetNotFoundError, ValueError, WorkerLostError),
)
def main(ctx: TaskContext) -> dict:
    from asl_recognition.data.publish import publish_dataset

    opts: PublishDatasetOptions = ctx.options
    result = publish_dataset(opts, logger=ctx.logger, upload=ctx.upload_artifact)
    leaky = " (LEAKY split: near-duplicates cross splits)" if result["leaky"] else ""
    ctx.summary = (
        f"{opts.name} {result['dataset_id']} v{result['dataset_version']} "
        f"reused={result['reused']} counts={result['counts']}{leaky}"
    )
    return {key: result[key] for key in ("dataset_id", "dataset_version", "reused")}


if __name__ == "__main__":
    sys.exit(main())
