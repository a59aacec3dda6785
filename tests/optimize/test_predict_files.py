"""``tasks/predict.py`` given paths that are no regular file: a named pipe among the images had
blocked the command for good (reading it waits for a writer). Real command, real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from asl_recognition.paths import REPO_ROOT, SAMPLE_TEST_IMAGES


def test_a_named_pipe_is_named_not_waited_on(trained, tmp_path) -> None:
    workspace, record = trained
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    image = str(sorted(SAMPLE_TEST_IMAGES.glob("*.jpg"))[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEARML_")}
    env.update(ASL_WORKSPACE=str(workspace), ASL_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "tasks/predict.py", "--model-id", record.id, "--top-k", "1"]
    proc = subprocess.run(
        [*command, "--image", str(pipe), "--image", image, "--image", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert [a["image"] for a in json.loads(proc.stdout)] == [image]
    assert f"{pipe}: not an image (not a regular file)" in proc.stderr
