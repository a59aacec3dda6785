"""Write mediapipe_reference.json: MediaPipe's own landmarks on a slice of the bundled photos.

Run it with mediapipe 0.10.21 itself, which cannot live in the project's venv (protobuf<5):

    python3.11 -m venv /tmp/mpvenv
    /tmp/mpvenv/bin/pip install mediapipe==0.10.21 "protobuf<5" "numpy<2" pillow
    /tmp/mpvenv/bin/python tests/hands/make_mediapipe_reference.py

The parity test compares the project's landmarker with these numbers, so the hand-written
pre/post-processing stays equal to MediaPipe's graph (``Hands(static_image_mode=True,
max_num_hands=1, min_detection_confidence=0.3)``, the settings the data stage uses).
"""

from __future__ import annotations

import json
from pathlib import Path

import mediapipe as mp
import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("data/sample", "data/external_sample")
OUT = Path(__file__).with_name("mediapipe_reference.json")


def slice_paths() -> list[Path]:
    """The first photo of each letter in each bundled folder."""
    paths = []
    for folder in FOLDERS:
        for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            paths.append(sorted((ROOT / folder / letter).iterdir())[0])
    return paths


def main() -> None:
    records = {}
    hands = mp.solutions.hands.Hands(
        static_image_mode=True, max_num_hands=1, min_detection_confidence=0.3
    )
    for path in slice_paths():
        with Image.open(path) as img:
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        result = hands.process(rgb)
        key = path.relative_to(ROOT).as_posix()
        if not result.multi_hand_landmarks:
            records[key] = None
            continue
        h, w = rgb.shape[:2]
        points = [[p.x * w, p.y * h, p.z * w] for p in result.multi_hand_landmarks[0].landmark]
        label = result.multi_handedness[0].classification[0]
        records[key] = {
            "landmarks_px": np.round(points, 3).tolist(),
            "handedness": label.label,
            "handedness_score": round(label.score, 4),
        }
    # One image per line, so a regenerated file diffs readably.
    rows = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in records.items()]
    OUT.write_text(
        '{\n "generator": "mediapipe==0.10.21 Hands(static_image_mode=True, max_num_hands=1, '
        'min_detection_confidence=0.3)",\n "images": {\n' + ",\n".join(rows) + "\n }\n}\n"
    )
    print(f"{OUT}: {sum(v is not None for v in records.values())}/{len(records)} hands")


if __name__ == "__main__":
    main()
