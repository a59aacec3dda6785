"""Configs the real onnxruntime backend refuses must not load here either; good ones serve.

The assertions hold for both backends (the local Python stand-in and the C++ onnxruntime
backend of the Docker image): the model is not READY, Triton reports a load failure for it that
names the offending tensor, accelerator or value, and the server keeps serving the others.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.http as thttp
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from asl_recognition.classes import read_class_file
from asl_recognition.serving import repo_manifest
from asl_recognition.serving.admin_api import HEADER, KEY_ENV
from asl_recognition.serving.configs import load_config
from asl_recognition.serving.repository import build_repository
from asl_recognition.serving.triton_server import TritonServerError

pytestmark = pytest.mark.server
SIZE, CLASSES = 32, 29


def _variant(tiny_models, repo, name: str, mutate) -> None:
    """Generate a correct config, then break one field of it the way a hand edit would, and
    record the edit as made on purpose (else no server starts on the changed repository)."""
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, repo, model_name=name, ensemble=False)
    path = repo / name / "config.pbtxt"
    config = load_config(path)
    mutate(config)
    path.write_text(text_format.MessageToString(config))
    repo_manifest.accept(repo)


def _save(graph, path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _weights(rows: int) -> onnx.TensorProto:
    rng = np.random.default_rng(7)
    values = (rng.standard_normal((rows, CLASSES)) * 3e-3).astype(np.float32)
    return helper.make_tensor("w", TensorProto.FLOAT, values.shape, values.ravel())


def dynamic_output_graph(path) -> None:
    """uint8 [N,3,32,W] -> mean over channels and rows -> softmax over W: output [N, W]."""
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
        helper.make_node("Softmax", ["m"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic_output",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 3, SIZE, "W"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", "W"])],
    )
    _save(graph, path)


def no_batch_graph(path) -> None:
    """One uint8 [3,32,32] image (no batch axis) -> linear -> softmax [29]."""
    flat = helper.make_tensor("flat", TensorProto.INT64, [2], [1, 3 * SIZE * SIZE])
    out = helper.make_tensor("out", TensorProto.INT64, [1], [CLASSES])
    nodes = [
        helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["x", "flat"], ["row"]),
        helper.make_node("MatMul", ["row", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        helper.make_node("Reshape", ["p", "out"], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes,
        "no_batch",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [CLASSES])],
        [_weights(3 * SIZE * SIZE), flat, out],
    )
    _save(graph, path)


def _hand_config(repo, name: str, max_batch_size: int, image_dims, probs_dims, labels) -> None:
    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    config.input.add(name="images", data_type=mc.TYPE_UINT8, dims=image_dims)
    output = config.output.add(name="probabilities", data_type=mc.TYPE_FP32, dims=probs_dims)
    if labels:
        output.label_filename = "labels.txt"
        (repo / name / "labels.txt").write_text("\n".join(labels) + "\n")
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    repo_manifest.accept(repo)


def _wrong_dims(c):
    c.input[0].dims[1] = 31


def _wrong_dtype(c):
    c.input[0].data_type = mc.TYPE_FP32


def _wrong_name(c):
    c.input[0].name = "pixels"


def _wrong_output_dims(c):
    c.output[0].dims[0] = 28


def _no_batch_dim(c):
    c.max_batch_size = 0
    c.ClearField("dynamic_batching")


def _reshape_mismatch(c):
    # Same element count as dims, so Triton's own checks pass; the graph is rank 3, not 4.
    c.input[0].reshape.shape.extend([3, 32, 32, 1])


def _unknown_cpu_accelerator(c):
    c.optimization.execution_accelerators.cpu_execution_accelerator.add(name="bogus_ep")


def _bad_execution_mode(c):
    c.parameters["execution_mode"].string_value = "7"


def _bad_thread_count(c):
    c.parameters["intra_op_thread_count"].string_value = "many"


# name -> (mutation, text both backends put in the load error)
BROKEN = {
    "wrong_dims": (_wrong_dims, "images"),
    "wrong_dtype": (_wrong_dtype, "images"),
    "wrong_name": (_wrong_name, "pixels"),
    "wrong_output_dims": (_wrong_output_dims, "probabilities"),
    "no_batch_dim": (_no_batch_dim, "images"),
    "reshape_mismatch": (_reshape_mismatch, "images"),
    "unknown_cpu_accelerator": (_unknown_cpu_accelerator, "bogus_ep"),
    "bad_execution_mode": (_bad_execution_mode, "7"),
    "bad_thread_count": (_bad_thread_count, "many"),
}


ADMIN_KEY = "load-errors-admin-key"
ADMIN = {HEADER: ADMIN_KEY}


@pytest.fixture(scope="module")
def explicit_server(tiny_models, tmp_path_factory):
    """A real tritonserver in explicit mode over a repository of broken and good models."""
    from asl_testkit.servers import start_server

    root = tmp_path_factory.mktemp("load_errors")
    repo = root / "repo"
    for name, (mutate, _) in BROKEN.items():
        _variant(tiny_models, repo, name, mutate)
    _variant(tiny_models, repo, "good", lambda c: None)
    labels = read_class_file(str(tiny_models["a"].classes))
    # Output dims [32] (the image width here) against the graph's symbolic [W]: the real
    # backend compares output dims exactly, so -1 in the graph is no wildcard there.
    dynamic_output_graph(repo / "dynamic_output" / "1" / "model.onnx")
    _hand_config(repo, "dynamic_output", 8, [3, SIZE, SIZE], [SIZE], None)
    no_batch_graph(repo / "no_batch" / "1" / "model.onnx")
    _hand_config(repo, "no_batch", 0, [3, SIZE, SIZE], [CLASSES], labels)
    with pytest.MonkeyPatch.context() as env:  # explicit mode: load and unload need the key
        env.setenv(KEY_ENV, ADMIN_KEY)
        server = start_server(repo, root, model_control_mode="explicit", exit_timeout_secs=2)
    yield server
    server.stop()


def _load_error(client, name: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        client.load_model(name, headers=ADMIN)
    return str(info.value)


def test_configs_the_real_backend_refuses_fail_to_load(explicit_server) -> None:
    client = thttp.InferenceServerClient(explicit_server.http_url)
    try:
        cases = {**BROKEN, "dynamic_output": (None, "probabilities")}
        for name, (_, token) in cases.items():
            message = _load_error(client, name)
            assert f"load failed for model '{name}'" in message, (name, message)
            assert token in message, (name, message)
            assert not client.is_model_ready(name), name
        client.load_model("good", headers=ADMIN)
        assert client.is_model_ready("good") and client.is_server_live()
    finally:
        client.close()


def test_launcher_reports_the_load_error(tiny_models, tmp_path) -> None:
    from asl_testkit.servers import start_server

    _variant(tiny_models, tmp_path / "repo", "asl", _wrong_dims)
    with pytest.raises(TritonServerError, match=r"(?s)exited with code 1.*'asl'.*images"):
        start_server(tmp_path / "repo", tmp_path, exit_timeout_secs=2)


def test_client_classifies_with_a_non_batching_model(explicit_server, tmp_path) -> None:
    """max_batch_size 0: one image per request, no batch axis; the reply is one row."""
    from test_serving_server import load_client_module, real_images, run_client

    client = thttp.InferenceServerClient(explicit_server.http_url)
    try:
        client.load_model("no_batch", headers=ADMIN)
        assert client.is_model_ready("no_batch")
    finally:
        client.close()
    images = real_images()[:3]
    args = ["--url", explicit_server.http_url, "--model", "no_batch", "--top-k", "3", "--json"]
    proc = run_client(*[a for p in images for a in ("--image", str(p))], *args)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["image"] for r in results] == [str(p) for p in images]
    module = load_client_module()
    spec = module.InputSpec("images", "probabilities", "UINT8", SIZE, SIZE, True, 0)
    session = ort.InferenceSession(str(explicit_server.repo / "no_batch" / "1" / "model.onnx"))
    labels = read_class_file(str(explicit_server.repo / "no_batch" / "labels.txt"))
    for row, path in zip(results, images):
        probs = session.run(None, {"images": module.to_array(module.decode_rgb(path), spec)})[0]
        assert len(row["predictions"]) == 3
        assert [p["index"] for p in row["predictions"]] == list(np.argsort(-probs)[:3])
        for p in row["predictions"]:
            assert p["label"] == labels[p["index"]]
            assert abs(p["probability"] - float(probs[p["index"]])) < 1e-5
