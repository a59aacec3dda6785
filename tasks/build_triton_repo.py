"""ClearML task: write (or update) the Triton model repository for a trained model.

    python tasks/build_triton_repo.py --model-id production
    python tasks/build_triton_repo.py --train-task <training task id>
    python tasks/build_triton_repo.py --onnx model.onnx --classes classes.txt --repo DIR

Outputs: repo, model_name, version. With a ClearML server the repository is uploaded as the
artifact ``triton_repo`` and ``repo`` is that artifact's URL: the folder is in the agent's
throw-away checkout, which is gone when the step ends. Without one ``repo`` is the folder.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.hands.models import ModelFileError
from asl_recognition.registry.base import ModelNotFoundError
from asl_recognition.serving.options import BuildTritonRepoOptions
from asl_recognition.serving.sources import (
    ModelSourceError,
    build_from_options,
    stage_built_models,
)
from asl_recognition.tracking import TaskContext, task_entry

TRITON_ARTIFACT = "triton_repo"


@task_entry(
    BuildTritonRepoOptions,
    task_type="inference",
    refused=(ModelSourceError, ModelNotFoundError, ModelFileError, ValueError, OSError),
    refusal_code=1,
)
def main(ctx: TaskContext) -> dict:
    opts: BuildTritonRepoOptions = ctx.options
    result = build_from_options(opts)
    print(
        f"Triton repository {result['repo']}: model '{result['model_name']}' "
        f"version {result['version']} (versions {result['versions']}, pruned {result['pruned']})"
    )
    if result["removed_changed"]:  # not what the last build wrote: never served
        print(f"removed versions changed since the last build: {result['removed_changed']}")
    if result.get("removed_unused"):  # a step the new model no longer calls
        print(f"removed models no longer used: {result['removed_unused']}")
    repo = Path(result["repo"])
    ctx.upload_artifact("config.pbtxt", str(repo / result["onnx_model"] / "config.pbtxt"))
    outputs = {key: result[key] for key in ("repo", "model_name", "version")}
    if opts.upload and not ctx.offline:
        # the SDK zips a folder before upload; its URL is what outlives this machine's folder
        with tempfile.TemporaryDirectory() as tmp:  # only the built models, and their record
            staged = stage_built_models(result, Path(tmp) / TRITON_ARTIFACT)
            outputs["repo"] = ctx.upload_artifact(TRITON_ARTIFACT, staged) or TRITON_ARTIFACT
    return outputs


if __name__ == "__main__":
    sys.exit(main())
