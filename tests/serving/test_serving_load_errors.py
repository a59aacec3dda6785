"""A config that disagrees with its ONNX graph must fail to load, with a clear error."""

from __future__ import annotations

import pytest
import tritonclient.http as thttp
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from asl_recognition.serving.launcher import TritonServerError
from asl_recognition.serving.repository import build_repository, load_config

pytestmark = pytest.mark.server


def _variant(tiny_models, repo, name: str, mutate) -> None:
    """Generate a correct config, then break one field of it the way a hand edit would."""
    a = tiny_models["a"]
    build_repository(a.onnx, a.classes, repo, model_name=name, ensemble=False)
    path = repo / name / "config.pbtxt"
    config = load_config(path)
    mutate(config)
    path.write_text(text_format.MessageToString(config))


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


BROKEN = {
    "wrong_dims": (_wrong_dims, r"input 'images': config dims \[3, 31, 32\].*\[3, 32, 32\]"),
    "wrong_dtype": (_wrong_dtype, "config data_type TYPE_FP32 but the ONNX graph has TYPE_UINT8"),
    "wrong_name": (_wrong_name, "input 'pixels' is not in the ONNX graph"),
    "wrong_output_dims": (_wrong_output_dims, r"output 'probabilities': config dims \[28\]"),
    "no_batch_dim": (
        _no_batch_dim,
        r"config dims \[3, 32, 32\] \(batch dimension excluded: False\)",
    ),
}


def test_configs_that_disagree_with_the_graph_fail_to_load(tiny_models, tmp_path) -> None:
    from asl_testkit import start_server

    repo = tmp_path / "repo"
    for name, (mutate, _) in BROKEN.items():
        _variant(tiny_models, repo, name, mutate)
    _variant(tiny_models, repo, "good", lambda c: None)
    server = start_server(repo, tmp_path, model_control_mode="explicit", exit_timeout_secs=2)
    client = thttp.InferenceServerClient(server.http_url)
    try:
        for name, (_, expected) in BROKEN.items():
            with pytest.raises(InferenceServerException) as info:
                client.load_model(name)
            message = str(info.value)
            assert "config.pbtxt disagrees with" in message, message
            assert pytest.importorskip("re").search(expected, message), (name, message)
            assert not client.is_model_ready(name)
        client.load_model("good")
        assert client.is_model_ready("good") and client.is_server_live()
    finally:
        client.close()
        server.stop()


def test_launcher_reports_the_load_error(tiny_models, tmp_path) -> None:
    from asl_testkit import start_server

    _variant(tiny_models, tmp_path / "repo", "asl", _wrong_dims)
    with pytest.raises(TritonServerError, match=r"disagrees with .*config dims \[3, 31, 32\]"):
        start_server(tmp_path / "repo", tmp_path, exit_timeout_secs=2)
