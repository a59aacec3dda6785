"""scripts/score_served.py against the loopback Triton stand-in (every photo answered "A"): a
photo the client cannot read, or the server refuses, counts as wrong and is named, never
dropped from the count (that raised the accuracy scored on the photos that remained)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from test_client_hostile_inputs import triton_url  # noqa: F401  (the stand-in server)

from asl_recognition.paths import REPO_ROOT, SAMPLE_TEST_IMAGES

SCORE = REPO_ROOT / "scripts" / "score_served.py"


def test_unreadable_photos_count_as_wrong(tmp_path: Path, triton_url: str) -> None:  # noqa: F811
    photos = tmp_path / "photos"
    (photos / "A").mkdir(parents=True)
    shutil.copy(SAMPLE_TEST_IMAGES / "A_test.jpg", photos / "A" / "good.jpg")
    (photos / "A" / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    out = tmp_path / "score.json"
    done = subprocess.run(
        [sys.executable, str(SCORE), str(photos), "--url", triton_url, "--model", "pix"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(out.read_text())
    assert (summary["images"], summary["accuracy"], summary["not_classified"]) == (2, 0.5, 1)
    assert "1 not classified (counted wrong)" in done.stdout, done.stdout
    assert "broken.jpg" in done.stderr and "Traceback" not in done.stderr, done.stderr
