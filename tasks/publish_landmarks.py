"""ClearML task: measure hand landmarks on an ASL version and publish ASL_landmarks.

One row per image (file, source, signer/group, split, class, 21x3 landmarks, handedness,
presence, hand box), the splits of the ASL version it reads, parents ASL and ASL_raw. Images with
no hand found stay in the table with the reason. Re-running on the same ASL version, model files
and thresholds reuses the existing version. Outputs: landmarks_id, landmarks_version,
hand_found_rate, reused.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.data.options import PublishLandmarksOptions
from asl_recognition.hands import ModelFileError
from asl_recognition.store import DatasetNotFoundError
from asl_recognition.store.base import ManifestFormatError
from asl_recognition.tracking import TaskContext, task_entry
from asl_recognition.workers import WorkerLostError


@task_entry(
    PublishLandmarksOptions,
    task_type="data_processing",
    refused=(DatasetNotFoundError, ModelFileError, ManifestFormatError, WorkerLostError),
)
def main(ctx: TaskContext) -> dict:
    from asl_recognition.data.landmarks import publish_landmarks

    opts: PublishLandmarksOptions = ctx.options
    result = publish_landmarks(settings=opts, logger=ctx.logger, upload=ctx.upload_artifact)
    ctx.summary = (
        f"{opts.name} {result['landmarks_id']} v{result['landmarks_version']} "
        f"reused={result['reused']} hand found in {result['hand_found_rate']:.1%} of images"
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
