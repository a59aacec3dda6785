"""The hand pipeline inside Triton: photo bytes in, letter out, on the real tritonserver binary.

One repository holds both graphs: the landmark classifier as ``asl`` (ensemble IMAGE -> asl_hands
-> asl_onnx -> asl_metrics) and the CNN as ``cnn`` (pixels in), each generated from its ONNX.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as thttp
from asl_testkit.tiny_models import export_landmark_classifier
from PIL import Image
from test_serving_server import load_client_module, run_client
from tritonclient.utils import InferenceServerException

from asl_recognition.classes import CLASSES
from asl_recognition.data.landmarks import POINT_COLUMNS, measure
from asl_recognition.hands import HandLandmarker, features_from_landmarks
from asl_recognition.imageio import load_rgb
from asl_recognition.paths import SAMPLE_DATA
from asl_recognition.serving.configs import load_config
from asl_recognition.serving.repository import build_repository

pytestmark = pytest.mark.server
LETTERS = ("A", "B", "L", "V", "Y")
PER_LETTER = 3


def data_stage_features(landmarker: HandLandmarker, path: Path) -> np.ndarray | None:
    """What the data stage derives for ``path``: the ASL_landmarks row, then its features."""
    row = measure(landmarker, path)
    if not row["hand_found"]:
        return None
    points = np.array([row[c] for c in POINT_COLUMNS], dtype=np.float32).reshape(21, 3)
    return features_from_landmarks(points, row["handedness"])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Photos with a hand per letter and their data-stage features; a classifier fitted on them."""
    landmarker = HandLandmarker()
    photos, features, labels = [], [], []
    for letter in LETTERS:
        kept = 0
        for path in sorted((SAMPLE_DATA / letter).glob("*.jpg")):
            vector = data_stage_features(landmarker, path)
            if vector is not None and kept < PER_LETTER:
                photos.append(path)
                features.append(vector)
                labels.append(CLASSES.index(letter))
                kept += 1
    root = tmp_path_factory.mktemp("landmark_model")
    onnx = export_landmark_classifier(root, np.stack(features), np.array(labels))
    return {"photos": photos, "features": features, "labels": labels, "onnx": onnx, "root": root}


@pytest.fixture(scope="module")
def hands_server(fitted, tiny_models, tmp_path_factory):
    from asl_testkit.servers import start_server

    root = tmp_path_factory.mktemp("served_hands")
    repo = root / "repo"
    info = build_repository(fitted["onnx"], fitted["root"] / "classes.txt", repo, max_batch_size=8)
    build_repository(tiny_models["a"].onnx, tiny_models["a"].classes, repo, model_name="cnn")
    server = start_server(repo, root, poll_secs=1, exit_timeout_secs=3)
    server.info, server.repo_dir = info, repo
    yield server
    server.stop()


def ask(server, model: str, blobs: list[bytes], outputs=("FEATURES", "HAND_FOUND", "HAND_BOX")):
    """One request of encoded photos; returns the named outputs as arrays."""
    client = thttp.InferenceServerClient(server.http_url)
    try:
        batch = np.array([[b] for b in blobs], dtype=np.object_)
        inp = thttp.InferInput("IMAGE", list(batch.shape), "BYTES")
        inp.set_data_from_numpy(batch)
        wanted = [thttp.InferRequestedOutput(name) for name in outputs]
        result = client.infer(model, [inp], outputs=wanted)
        return {name: result.as_numpy(name) for name in outputs}
    finally:
        client.close()


def hand_metrics(server) -> dict[str, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    found = re.findall(r'^(asl_hand_(?:checked|found)_total)\{model="asl"\} (\S+)$', text, re.M)
    return {name: float(value) for name, value in found}


def client_json(*args: str) -> tuple[list, str, int]:
    proc = run_client(*args, "--json")
    return (json.loads(proc.stdout) if proc.stdout.strip() else []), proc.stderr, proc.returncode


def test_layout_is_generated_from_the_graph(hands_server) -> None:
    repo, info = hands_server.repo_dir, hands_server.info
    assert info["graph_type"] == "landmarks" and info["hands_model"] == "asl_hands"
    assert sorted(p.name for p in repo.iterdir()) == [
        ".asl-manifest.json",  # what the build wrote; a server refuses a repository changed since
        ".build.lock",  # builds take turns; Triton reads folders only
        "asl",
        "asl_hands",
        "asl_metrics",
        "asl_onnx",
        "cnn",
        "cnn_metrics",
        "cnn_onnx",
    ]
    hands = load_config(repo / "asl_hands" / "config.pbtxt")
    assert hands.backend == "python" and hands.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in hands.input] == [("IMAGE", [1])]
    ensemble = load_config(repo / "asl" / "config.pbtxt")
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "asl_hands",
        "asl_onnx",
        "asl_metrics",
    ]
    assert [o.name for o in ensemble.output] == ["PROBS", "HAND_FOUND", "HAND_BOX", "LANDMARKS"]
    # the CNN keeps its own layout: pixels in, no hand model
    assert load_config(repo / "cnn" / "config.pbtxt").input[0].name == "images"
    client = thttp.InferenceServerClient(hands_server.http_url)
    try:
        for name in ("asl", "asl_hands", "asl_onnx", "asl_metrics", "cnn"):
            assert client.is_model_ready(name), name
    finally:
        client.close()


def test_served_features_equal_the_data_stage(hands_server, fitted) -> None:
    photos, expected = fitted["photos"], fitted["features"]
    parts = [
        ask(hands_server, "asl_hands", [p.read_bytes() for p in photos[start : start + 5]])
        for start in range(0, len(photos), 5)
    ]
    got = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    assert got["HAND_FOUND"].reshape(-1).tolist() == [1.0] * len(photos)
    assert np.abs(got["FEATURES"] - np.stack(expected)).max() < 1e-4
    boxes = got["HAND_BOX"]
    assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_served_step_runs_the_data_stage_detection_passes(hands_server) -> None:
    """Backlit frames only the brightened detection passes find (tests/hands/
    test_hands_recall.py): served, they are found with the data stage's very features."""
    photos = [SAMPLE_DATA / "A" / "A2868.jpg", SAMPLE_DATA / "M" / "M2662.jpg"]
    expected = [data_stage_features(HandLandmarker(), path) for path in photos]
    assert all(vector is not None for vector in expected)
    got = ask(hands_server, "asl_hands", [path.read_bytes() for path in photos])
    assert got["HAND_FOUND"].reshape(-1).tolist() == [1.0] * len(photos)
    assert np.abs(got["FEATURES"] - np.stack(expected)).max() < 1e-4


def test_client_end_to_end_letter_and_no_hand(hands_server, fitted) -> None:
    before = hand_metrics(hands_server)
    nothing = sorted((SAMPLE_DATA / "nothing").glob("*.jpg"))[:3]
    photo, label = fitted["photos"][0], CLASSES[fitted["labels"][0]]
    url = ["--url", hands_server.http_url]
    items, err, code = client_json("--image", str(photo), *[f"--image={p}" for p in nothing], *url)
    assert code == 0, err
    assert items[0]["hand_found"] is True and items[0]["predictions"][0]["label"] == label
    # the ensemble's LANDMARKS: the data stage's 21 points, in the photo's pixels
    with load_rgb(photo) as img:
        expected = HandLandmarker().detect(np.asarray(img)).landmarks
    assert np.abs(np.array(items[0]["landmarks"]) - expected).max() < 0.05
    for item in items[1:]:
        assert item["hand_found"] is False and "landmarks" not in item
        assert item["predictions"][0]["label"] == "nothing"
        assert item["predictions"][0]["probability"] == pytest.approx(1.0)
    text = run_client("--image", str(nothing[0]), *url, "--protocol", "http")
    assert text.stdout.strip() == f"{nothing[0]}: no hand found"
    after = hand_metrics(hands_server)
    assert after["asl_hand_checked_total"] - before["asl_hand_checked_total"] == 5
    assert after["asl_hand_found_total"] - before["asl_hand_found_total"] == 1


def _jpeg(img: Image.Image, path: Path, **save) -> Path:
    img.save(path, "JPEG", quality=90, **save)
    return path


def _bad_inputs(photo: Path, other: Path, tmp_path: Path) -> dict[str, Path]:
    """Every awkward photo, made at test time from real bundled photos."""
    upright = Image.open(photo).convert("RGB")
    w, h = upright.size
    pair = Image.new("RGB", (2 * w, h))
    pair.paste(upright, (0, 0))
    pair.paste(Image.open(other).convert("RGB"), (w, 0))
    tiny = Image.new("RGB", (8 * w, 8 * h))
    tiny.paste(upright.resize((w // 2, h // 2)), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to view: stored rotated 90 CCW
    rotated = upright.transpose(Image.Transpose.ROTATE_90)
    scale = int(np.ceil(np.sqrt(41e6 / (w * h))))
    (tmp_path / "notes.jpg").write_text("not a photo\n")
    return {
        "not_an_image": tmp_path / "notes.jpg",
        "two_hands": _jpeg(pair, tmp_path / "two.jpg"),
        "tiny_hand": _jpeg(tiny, tmp_path / "tiny.jpg"),
        "rotated": _jpeg(rotated, tmp_path / "rotated.jpg", exif=exif.tobytes()),
        "huge": _jpeg(upright.resize((w * scale, h * scale)), tmp_path / "huge.jpg"),
    }


def test_bad_inputs_get_clear_answers_and_the_server_keeps_serving(
    hands_server, fitted, tmp_path
) -> None:
    photo, other = fitted["photos"][0], fitted["photos"][PER_LETTER]
    files = _bad_inputs(photo, other, tmp_path)
    url = ["--url", hands_server.http_url]
    items, err, code = client_json("--image", str(files["not_an_image"]), *url)
    assert code == 1 and items == []
    assert err.strip() == (
        f"error: {files['not_an_image']}: refused by the server (inference failed: "
        "[400] in ensemble 'asl', IMAGE not_an_image: the image is not a readable image)"
    )
    reference, second = ask(hands_server, "asl_hands", [photo.read_bytes(), other.read_bytes()])[
        "FEATURES"
    ]
    for name in ("two_hands", "tiny_hand", "rotated", "huge"):
        start = time.monotonic()
        got = ask(hands_server, "asl_hands", [files[name].read_bytes()])
        seconds = time.monotonic() - start
        assert seconds < 30, f"{name} took {seconds:.1f} s"
        found, box = got["HAND_FOUND"][0, 0], got["HAND_BOX"][0]
        if name == "two_hands":  # one of the two hands, centred in its half of the pair
            centre = (box[0] + box[2]) / 2
            assert found == 1 and abs(centre - 0.5) > 0.1, box
            closest = min(np.abs(got["FEATURES"][0] - r).max() for r in (reference, second))
            assert closest < 0.05
        elif name == "tiny_hand":  # answered either way; a hand found lies in the corner
            assert found in (0.0, 1.0) and (found == 0 or box[2] <= 1 / 8 + 0.02), box
        else:  # rotated back upright by EXIF, huge decoded reduced: the same hand
            assert found == 1, name
            assert np.abs(got["FEATURES"][0] - reference).max() < 0.05, name
    ready = thttp.InferenceServerClient(hands_server.http_url)
    try:
        assert ready.is_server_ready() and ready.is_model_ready("asl")
    finally:
        ready.close()
    items, err, code = client_json("--image", str(photo), *url)
    assert code == 0 and items[0]["hand_found"] is True, err


def test_client_refuses_an_oversized_file_before_sending(hands_server, fitted, tmp_path) -> None:
    client = load_client_module()
    big = tmp_path / "big.jpg"
    with big.open("wb") as handle:  # a real photo's bytes, padded past the limit
        handle.write(fitted["photos"][0].read_bytes())
        handle.truncate(client.MAX_FILE_BYTES + 1)
    before = hand_metrics(hands_server)
    proc = run_client("--image", str(big), "--url", hands_server.http_url)
    assert proc.returncode == 1
    size = big.stat().st_size
    assert proc.stderr.strip() == f"error: {big}: {size} bytes is over the 25 MB limit; not sent"
    assert hand_metrics(hands_server) == before


def test_a_request_over_the_server_limit_fails_alone(hands_server, fitted) -> None:
    """The server's own bound (a client that skips the check), then a normal request."""
    from asl_recognition.serving.hands_repository import MAX_IMAGE_BYTES

    blob = fitted["photos"][0].read_bytes()
    with pytest.raises(InferenceServerException, match="over the limit of"):
        ask(hands_server, "asl", [blob + b"\0" * (MAX_IMAGE_BYTES + 1 - len(blob))], ["PROBS"])
    before = hand_metrics(hands_server)
    # HAND_FOUND alone still runs (and counts in) the metrics step
    assert ask(hands_server, "asl", [blob], ["HAND_FOUND"])["HAND_FOUND"][0, 0] == 1
    after = hand_metrics(hands_server)
    assert after["asl_hand_checked_total"] == before["asl_hand_checked_total"] + 1
    assert after["asl_hand_found_total"] == before["asl_hand_found_total"] + 1


def test_bad_photo_in_a_dynamic_batch_fails_only_its_own_request(hands_server, fitted) -> None:
    """Concurrent requests share a batch on the server; only the broken one gets an error."""
    from concurrent.futures import ThreadPoolExecutor

    good = [p.read_bytes() for p in fitted["photos"][:6]]
    blobs = good[:3] + [b"\xff\xd8 truncated"] + good[3:]

    def one(blob):
        try:
            return ask(hands_server, "asl", [blob], ["HAND_FOUND"])["HAND_FOUND"][0, 0]
        except InferenceServerException as exc:
            return str(exc)

    with ThreadPoolExecutor(len(blobs)) as pool:
        answers = list(pool.map(one, blobs))
    assert answers[:3] + answers[4:] == [1.0] * 6
    assert "IMAGE" in answers[3] and "in ensemble 'asl'" in answers[3]


def test_hot_swap_of_the_classifier_keeps_the_hand_model(hands_server, fitted, tmp_path) -> None:
    repo = hands_server.repo_dir
    hands_before = sorted(p.name for p in (repo / "asl_hands").iterdir())
    onnx = export_landmark_classifier(tmp_path / "v2", seed=1)
    info = build_repository(onnx, tmp_path / "v2" / "classes.txt", repo, max_batch_size=8)
    assert info["version"] == 2 and info["hands_version"] == 1
    assert sorted(p.name for p in (repo / "asl_hands").iterdir()) == hands_before
    client = thttp.InferenceServerClient(hands_server.http_url)
    try:
        deadline = time.monotonic() + 60
        while not client.is_model_ready("asl_onnx", "2") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.is_model_ready("asl_onnx", "2")
    finally:
        client.close()
    import onnxruntime as ort

    features = np.stack(fitted["features"][:2]).astype(np.float32)
    expected = ort.InferenceSession(str(onnx)).run(
        ["PROBS"], {"FEATURES": features, "HAND_FOUND": np.ones((2, 1), np.float32)}
    )[0]
    blobs = [p.read_bytes() for p in fitted["photos"][:2]]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = ask(hands_server, "asl", blobs, ["PROBS"])["PROBS"]
        if np.abs(got - expected).max() < 1e-4:
            break
        time.sleep(0.5)
    assert np.abs(got - expected).max() < 1e-4


def test_served_image_bytes_decode_like_the_client_reads_them(fitted) -> None:
    """The bytes sent are the file's bytes: an in-memory re-encode would change features."""
    client = load_client_module()
    photo = fitted["photos"][0]
    (blob,) = client.read_encoded(photo).reshape(-1)
    assert blob == photo.read_bytes()
    assert Image.open(io.BytesIO(blob)).size == Image.open(photo).size


def test_a_model_is_served_with_the_hand_step_its_table_was_measured_with(
    hands_server, fitted, tmp_path
) -> None:
    """A classifier whose table was measured without the re-crop carries that record; its own
    hand step, generated from it, measures photos the same way, not with today's defaults."""
    recorded = HandLandmarker(recrop=False).settings()
    onnx = export_landmark_classifier(tmp_path / "m", detector=recorded)
    build_repository(
        onnx, tmp_path / "m" / "classes.txt", hands_server.repo_dir, model_name="signs"
    )
    client = thttp.InferenceServerClient(hands_server.http_url)
    try:
        deadline = time.monotonic() + 90
        while not client.is_model_ready("signs") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.is_model_ready("signs")
    finally:
        client.close()
    photos = fitted["photos"][:6]
    then = np.stack([data_stage_features(HandLandmarker(recrop=False), p) for p in photos])
    now = np.stack(fitted["features"][:6])  # the defaults: the re-crop
    assert np.abs(then - now).max() > 1e-2  # the two hand steps do measure differently
    blobs = [p.read_bytes() for p in photos]
    assert np.abs(ask(hands_server, "signs_hands", blobs)["FEATURES"] - then).max() < 1e-4
    assert np.abs(ask(hands_server, "asl_hands", blobs)["FEATURES"] - now).max() < 1e-4


def test_a_new_model_with_another_record_switches_the_running_hand_step(
    hands_server, fitted, tmp_path
) -> None:
    """Built over the served ``asl``, a classifier recorded without the re-crop rewrites the
    hand step's config; the polling server reloads it, with no restart and no hand edit."""
    photos = fitted["photos"][:3]
    blobs = [p.read_bytes() for p in photos]
    then = np.stack([data_stage_features(HandLandmarker(recrop=False), p) for p in photos])
    assert np.abs(ask(hands_server, "asl_hands", blobs)["FEATURES"] - then).max() > 1e-2
    recorded = HandLandmarker(recrop=False).settings()
    onnx = export_landmark_classifier(tmp_path / "n", seed=2, detector=recorded)
    repo = hands_server.repo_dir
    info = build_repository(onnx, tmp_path / "n" / "classes.txt", repo, max_batch_size=8)
    assert info["hands_version"] == 1  # same model files: only the config changed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = ask(hands_server, "asl_hands", blobs)["FEATURES"]
        if np.abs(got - then).max() < 1e-4:
            break
        time.sleep(0.5)
    assert np.abs(got - then).max() < 1e-4


def test_requests_that_waited_too_long_for_the_hand_step_are_dropped(fitted, tmp_path) -> None:
    """A handless 1500 px photo costs the hand step all its passes (about 2 s here). Requests
    that queue behind it past ``hand_queue_timeout_s`` are rejected at their turn, not worked on
    for clients that gave up (before: Triton worked through minutes of them after the front had
    answered 504)."""
    from concurrent.futures import ThreadPoolExecutor

    from asl_testkit.servers import start_server

    repo = tmp_path / "repo"
    build_repository(fitted["onnx"], fitted["root"] / "classes.txt", repo,
                     max_batch_size=8, hand_queue_timeout_s=0.5)  # fmt: skip
    buffer = io.BytesIO()
    Image.new("RGB", (1500, 1500)).save(buffer, "PNG")
    dark = buffer.getvalue()
    server = start_server(repo, tmp_path, poll_secs=1, exit_timeout_secs=3)
    try:

        def one(blob: bytes) -> str:
            try:
                return str(ask(server, "asl", [blob], ["HAND_FOUND"])["HAND_FOUND"][0, 0])
            except InferenceServerException as exc:
                return str(exc)

        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(one, dark)
            time.sleep(0.3)  # the first holds the one instance; the rest queue behind it
            queued = [pool.submit(one, dark) for _ in range(3)]
            answers = [first.result()] + [f.result() for f in queued]
        assert answers[0] == "0.0", answers
        assert all("timeout" in a.lower() for a in answers[1:]), answers
        text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
        runs = re.search(
            r'^nv_inference_count\{model="asl_hands",version="\d+"\} (\S+)$', text, re.M
        )
        assert runs is not None and float(runs.group(1)) == 1.0, text[-3000:]
        photo = fitted["photos"][0].read_bytes()
        assert ask(server, "asl", [photo], ["HAND_FOUND"])["HAND_FOUND"][0, 0] == 1
    finally:
        server.stop()
