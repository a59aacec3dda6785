"""The generated repository on the real tritonserver binary: load, client, parity, errors."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException

from asl_recognition.paths import REPO_ROOT, SAMPLE_TEST_IMAGES
from asl_recognition.serving.configs import load_config

pytestmark = pytest.mark.server
CLIENT = REPO_ROOT / "triton" / "client" / "client.py"


def load_client_module():
    """client.py is a standalone script, not a package module: load it by path."""
    if "asl_triton_client" in sys.modules:
        return sys.modules["asl_triton_client"]
    spec = importlib.util.spec_from_file_location("asl_triton_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["asl_triton_client"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def real_images() -> list:
    images = sorted(SAMPLE_TEST_IMAGES.glob("*.jpg"))
    if not images:
        pytest.skip(f"no real test images in {SAMPLE_TEST_IMAGES}")
    return images


def client_batch(model, paths) -> np.ndarray:
    """The client's own decode + resize, with the size read from the served model."""
    client = load_client_module()
    spec = client.InputSpec(
        "images", "probabilities", "UINT8", model.image_size, model.image_size, True, 32
    )
    return np.stack([client.to_array(client.decode_rgb(p), spec) for p in paths])


def run_client(*args: str) -> subprocess.CompletedProcess:
    """Isolated (-I) and from another folder: the client must run without the project package."""
    return subprocess.run(
        [sys.executable, "-I", str(CLIENT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


def infer(
    client_module, url: str, model: str, batch: np.ndarray, dtype: str = "UINT8", name="images"
):
    client = client_module.InferenceServerClient(url)
    try:
        inp = client_module.InferInput(name, list(batch.shape), dtype)
        inp.set_data_from_numpy(batch)
        out = client_module.InferRequestedOutput("probabilities")
        return client.infer(model, [inp], outputs=[out]).as_numpy("probabilities")
    finally:
        client.close()


def test_generated_repository_loads(served_a) -> None:
    client = thttp.InferenceServerClient(served_a.http_url)
    try:
        states = {(m["name"], m.get("state")) for m in client.get_model_repository_index()}
        assert {("asl", "READY"), ("asl_onnx", "READY"), ("asl_metrics", "READY")} <= states
        assert client.is_model_ready("asl")
    finally:
        client.close()


def _is_subset(ours, theirs, path="") -> list[str]:
    """Every field we wrote must come back with the same value (the server adds defaults)."""
    if isinstance(ours, dict):
        problems = []
        for key, value in ours.items():
            if key not in theirs:
                problems.append(f"{path}.{key} missing on the server")
            else:
                problems += _is_subset(value, theirs[key], f"{path}.{key}")
        return problems
    if isinstance(ours, list):
        if len(ours) != len(theirs):
            return [f"{path}: {ours} != {theirs}"]
        return [
            p
            for i, (o, t) in enumerate(zip(ours, theirs))
            for p in _is_subset(o, t, f"{path}[{i}]")
        ]
    return [] if ours == theirs else [f"{path}: ours {ours!r}, server {theirs!r}"]


def test_generated_config_agrees_with_server(served_a) -> None:
    client = tgrpc.InferenceServerClient(served_a.grpc_url)
    try:
        for model in ("asl", "asl_onnx", "asl_metrics"):
            ours = load_config(served_a.repo / model / "config.pbtxt")
            theirs = client.get_model_config(model).config
            assert type(theirs) is type(ours)  # the server speaks model_config_pb2 too
            problems = _is_subset(MessageToDict(ours), MessageToDict(theirs))
            assert not problems, (model, problems)
        served = client.get_model_config("asl_onnx").config
        assert served.backend == "onnxruntime" and list(served.input[0].dims) == [3, 32, 32]
    finally:
        client.close()


def test_probabilities_match_in_process_onnxruntime(served_a, tiny_models) -> None:
    model = tiny_models["a"]
    batch = client_batch(model, real_images()[:20])
    expected = ort.InferenceSession(str(model.onnx)).run(["probabilities"], {"images": batch})[0]
    for module, url in ((thttp, served_a.http_url), (tgrpc, served_a.grpc_url)):
        for name in ("asl", "asl_onnx"):
            got = infer(module, url, name, batch)
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() < 1e-5, (module.__name__, name)
    assert np.ptp(expected, axis=0).max() > 1e-3  # outputs depend on the image


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_classifies_real_images(served_a, tiny_models, protocol) -> None:
    images = real_images()
    url = served_a.http_url if protocol == "http" else served_a.grpc_url
    proc = run_client(
        "--dir",
        str(SAMPLE_TEST_IMAGES),
        "--url",
        url,
        "--protocol",
        protocol,
        "--top-k",
        "3",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["image"] for r in results] == [str(p) for p in images]
    model = tiny_models["a"]
    expected = ort.InferenceSession(str(model.onnx)).run(
        ["probabilities"], {"images": client_batch(model, images)}
    )[0]
    for row, probs in zip(results, expected):
        preds = row["predictions"]
        assert len(preds) == 3
        assert preds[0]["label"] == model.class_names[int(probs.argmax())]
        for p in preds:
            assert model.class_names[p["index"]] == p["label"]
            assert abs(p["probability"] - float(probs[p["index"]])) < 1e-5
    text = run_client("--image", str(images[0]), "--url", url, "--protocol", protocol)
    assert text.returncode == 0
    assert re.fullmatch(rf"{re.escape(str(images[0]))}: \S+ 0\.\d{{4}}\n", text.stdout)


def _one_line_error(proc: subprocess.CompletedProcess, code: int, pattern: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_client_errors_are_one_line(served_a, tmp_path) -> None:
    from asl_recognition.netutil import free_port

    image = str(real_images()[0])
    _one_line_error(
        run_client("--image", image, "--url", f"127.0.0.1:{free_port()}"), 3, "cannot reach Triton"
    )
    _one_line_error(
        run_client("--image", image, "--url", f"127.0.0.1:{free_port()}", "--protocol", "grpc"),
        3,
        "cannot reach Triton",
    )
    _one_line_error(
        run_client("--image", image, "--url", served_a.http_url, "--model", "nope"),
        4,
        "model 'nope' is not available",
    )
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is text, not a JPEG")
    _one_line_error(
        run_client("--image", str(not_image), "--url", served_a.http_url), 1, "not an image"
    )


def _alive_and_correct(served_a, good: np.ndarray, expected: np.ndarray) -> None:
    client = thttp.InferenceServerClient(served_a.http_url)
    try:
        assert client.is_server_live() and client.is_server_ready()
    finally:
        client.close()
    assert np.abs(infer(thttp, served_a.http_url, "asl", good) - expected).max() < 1e-5


def test_malformed_requests_get_errors_and_the_server_keeps_serving(served_a, tiny_models) -> None:
    model = tiny_models["a"]
    good = client_batch(model, real_images()[:2])
    expected = ort.InferenceSession(str(model.onnx)).run(["probabilities"], {"images": good})[0]
    size = model.image_size
    bad_requests = {
        "wrong dtype": dict(batch=good.astype(np.float32), dtype="FP32"),
        "wrong shape": dict(batch=np.zeros((1, 3, size + 1, size), np.uint8)),
        "wrong rank": dict(batch=np.zeros((1, size, size), np.uint8)),
        "batch over max": dict(batch=np.zeros((33, 3, size, size), np.uint8)),
        "unknown input": dict(batch=good, name="pixels"),
        "unknown model": dict(batch=good, model="no_such_model"),
    }
    for module, url in ((thttp, served_a.http_url), (tgrpc, served_a.grpc_url)):
        for label, req in bad_requests.items():
            with pytest.raises(InferenceServerException) as info:
                infer(
                    module,
                    url,
                    req.get("model", "asl"),
                    req["batch"],
                    dtype=req.get("dtype", "UINT8"),
                    name=req.get("name", "images"),
                )
            assert str(info.value), label
            _alive_and_correct(served_a, good, expected)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_model_metrics_are_exported(served_a, tiny_models) -> None:
    model = tiny_models["a"]
    batch = client_batch(model, real_images())
    probs = ort.InferenceSession(str(model.onnx)).run(["probabilities"], {"images": batch})[0]
    before = urllib.request.urlopen(served_a.metrics_url).read().decode()
    infer(thttp, served_a.http_url, "asl", batch)
    after = urllib.request.urlopen(served_a.metrics_url).read().decode()
    n = len(batch)

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert "# TYPE asl_prediction_confidence histogram" in after
    assert delta("asl_prediction_confidence_count", model="asl") == n
    assert delta("asl_prediction_confidence_sum", model="asl") == pytest.approx(
        float(probs.max(axis=1).sum()), rel=1e-5
    )
    assert delta("asl_prediction_confidence_bucket", model="asl", le="0.5") == int(
        (probs.max(axis=1) <= 0.5).sum()
    )
    assert delta("asl_predictions_total", model="asl") == n
    top = model.class_names[int(np.bincount(probs.argmax(axis=1)).argmax())]
    assert delta("asl_predictions_total", model="asl", **{"class": top}) == int(
        np.bincount(probs.argmax(axis=1)).max()
    )
    assert delta("asl_low_confidence_total", model="asl") == int((probs.max(axis=1) < 0.5).sum())


def test_every_class_is_counted_from_zero_before_its_first_prediction(served_a, tiny_models):
    """A class series first seen at 3 counts only what came after in Prometheus's increase():
    after each (re)start the first predictions of every class were lost to the drift alert."""
    text = urllib.request.urlopen(served_a.metrics_url).read().decode()
    exported = set(re.findall(r'^asl_predictions_total\{[^}]*class="([^"]+)"', text, re.M))
    assert exported == set(tiny_models["a"].class_names)


def test_nonfinite_probabilities_cannot_blind_the_metrics(served_a, tiny_models) -> None:
    """Anyone can call the ensemble's internal step directly; NaN rows are counted, not summed."""
    before = urllib.request.urlopen(served_a.metrics_url).read().decode()
    poison = np.full((2, 29), np.nan, np.float32)
    poison[1, 3] = np.inf
    client = thttp.InferenceServerClient(served_a.http_url)
    try:
        inp = thttp.InferInput("probabilities", list(poison.shape), "FP32")
        inp.set_data_from_numpy(poison)
        client.infer("asl_metrics", [inp])
    finally:
        client.close()
    middle = urllib.request.urlopen(served_a.metrics_url).read().decode()
    assert _metric(middle, "asl_nonfinite_predictions_total", model="asl") - _metric(
        before, "asl_nonfinite_predictions_total", model="asl"
    ) == pytest.approx(2)
    for name in ("asl_prediction_confidence_sum", "asl_prediction_confidence_count"):
        assert _metric(middle, name, model="asl") == _metric(before, name, model="asl"), name
    # Real predictions still move the sum by exactly their confidences.
    model = tiny_models["a"]
    batch = client_batch(model, real_images()[:4])
    probs = ort.InferenceSession(str(model.onnx)).run(["probabilities"], {"images": batch})[0]
    infer(thttp, served_a.http_url, "asl", batch)
    after = urllib.request.urlopen(served_a.metrics_url).read().decode()
    delta = _metric(after, "asl_prediction_confidence_sum", model="asl") - _metric(
        middle, "asl_prediction_confidence_sum", model="asl"
    )
    assert np.isfinite(delta) and delta == pytest.approx(float(probs.max(axis=1).sum()), rel=1e-5)


def test_server_start_leaves_the_repository_unchanged(served_a) -> None:
    """No __pycache__ from the Python step, so the polling server does not reload it."""
    import time

    deadline = time.monotonic() + 3 * served_a.poll_secs + 1
    while time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in served_a.repo.rglob("*") if p.is_dir() and p.name == "__pycache__"]
    assert not list(served_a.repo.rglob("*.pyc"))
    log = served_a.log_path.read_text()
    assert log.count("successfully loaded 'asl_metrics'") == 1, log[-2000:]
    assert log.count("successfully loaded 'asl_onnx'") == 1
