"""ClearML task: write (or update) the Triton model repository for a trained model.

    python tasks/build_triton_repo.py --model-id production
    python tasks/build_triton_repo.py --train-task <training task id>
    python tasks/build_triton_repo.py --onnx model.onnx --classes classes.txt --repo DIR

Outputs: repo, model_name, version. With a ClearML server the repository is also uploaded as
the artifact ``triton_repo``, so a serving machine can fetch it instead of reading this
machine's folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asl_recognition.serving.options import BuildTritonRepoOptions
from asl_recognition.serving.sources import ModelSourceError, build_from_options
from asl_recognition.tracking import TaskContext, task_entry


@task_entry(BuildTritonRepoOptions, "inference", (ModelSourceError, ValueError, OSError), 1)
def main(ctx: TaskContext) -> dict:
    opts: BuildTritonRepoOptions = ctx.options
    result = build_from_options(opts)
    print(
        f"Triton repository {result['repo']}: model '{result['model_name']}' "
        f"version {result['version']} (versions {result['versions']}, pruned {result['pruned']})"
    )
    repo = Path(result["repo"])
    ctx.upload_artifact("config.pbtxt", str(repo / result["onnx_model"] / "config.pbtxt"))
    if opts.upload and not ctx.offline:
        ctx.upload_artifact("triton_repo", repo)  # the SDK zips a folder before upload
    return {key: result[key] for key in ("repo", "model_name", "version")}


if __name__ == "__main__":
    sys.exit(main())
