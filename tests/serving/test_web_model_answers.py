"""The live page before a real tritonserver whose model changes under it (a repository in poll
mode) or answers numbers the page cannot show. The model is a Python-backend stand-in of the
ensemble (photo bytes in, labelled probabilities and the hand outputs out), told by a file what
to answer, so the page meets every case in seconds; the real ensemble: test_web_page.py.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import httpx
import pytest
from asl_testkit.servers import start_server
from asl_testkit.web import photo, start_web

pytestmark = pytest.mark.server
LABELS = [chr(ord("A") + i) for i in range(26)]

MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        answers = []
        for request in requests:
            with open({mode!r}) as f:
                mode = f.read().strip()
            if mode in ("internal", "invalid"):  # a step's own fault, a bad photo's
                code = pb_utils.TritonError.INVALID_ARG if mode == "invalid" else None
                error = pb_utils.TritonError("step says no", *([code] if code else []))
                answers.append(pb_utils.InferenceResponse(error=error))
                continue
            n = request.inputs()[0].as_numpy().shape[0]
            probs = np.zeros((n, {classes}), np.float32)
            probs[:, 0], probs[:, 1] = 0.9, 0.1
            box = np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (n, 1))
            points = np.ones((n, 63 if mode != "short_landmarks" else 10), np.float32)
            if mode == "nan":
                probs[:] = np.nan
            if mode == "nan_box":
                box[:] = np.nan
            answers.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("PROBS", probs),
                pb_utils.Tensor("HAND_FOUND", np.ones((n, 1), np.float32)),
                pb_utils.Tensor("HAND_BOX", box),
                pb_utils.Tensor("LANDMARKS", points),
            ]))
        return answers
"""


def stand_in(repo: Path, mode: Path, version: int, photo_input: bool = True) -> None:
    """Version ``version`` of ``asl``: photo bytes in (or pixels, FP32, which the page cannot
    send), the config rewritten so a polling Triton loads it in place of the last."""
    model = repo / "asl"
    (model / str(version)).mkdir(parents=True, exist_ok=True)
    (model / "labels.txt").write_text("\n".join(LABELS) + "\n")
    dtype = "TYPE_STRING" if photo_input else "TYPE_FP32"
    (model / "config.pbtxt").write_text(textwrap.dedent(f"""\
        name: "asl"
        backend: "python"
        max_batch_size: 4
        input [ {{ name: "IMAGE" data_type: {dtype} dims: [ 1 ] }} ]
        output [
          {{ name: "PROBS" data_type: TYPE_FP32 dims: [ {len(LABELS)} ]
             label_filename: "labels.txt" }},
          {{ name: "HAND_FOUND" data_type: TYPE_FP32 dims: [ 1 ] }},
          {{ name: "HAND_BOX" data_type: TYPE_FP32 dims: [ 4 ] }},
          {{ name: "LANDMARKS" data_type: TYPE_FP32 dims: [ -1 ] }}
        ]
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """))  # fmt: skip
    code = MODEL_PY.format(mode=str(mode), classes=len(LABELS))
    (model / str(version) / "model.py").write_text(code)


def wait_served(server, datatype: str, timeout: float = 60) -> None:
    """Until Triton's ``asl`` takes ``datatype`` (BYTES: photos) and is ready."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(server.grpc_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            metadata = client.get_model_metadata("asl")
            if metadata.inputs[0].datatype == datatype and client.is_model_ready("asl"):
                return
        except Exception:  # noqa: BLE001 - reloading
            pass
        time.sleep(0.2)
    pytest.fail(f"Triton never served asl taking {datatype}")


def frame(web) -> httpx.Response:
    return httpx.post(web.url + "/api/frame", content=photo("A").read_bytes(), timeout=30)


@pytest.fixture()
def stand_in_served(tmp_path: Path):
    mode = tmp_path / "mode"
    mode.write_text("ok")
    repo = tmp_path / "repo"
    stand_in(repo, mode, 1, photo_input=False)
    server = start_server(repo, tmp_path, poll_secs=1, exit_timeout_secs=2)
    web = start_web(server.grpc_url, rate=100.0, burst=100)
    yield server, web, repo, mode
    web.stop()
    server.stop()


def test_a_model_changed_under_the_page_is_read_again(stand_in_served) -> None:
    """The model's description was read once and kept until Triton was unreachable: a polling
    Triton that came to serve a photo model under the name kept getting 503 "does not take
    photo bytes", and one that went back to pixels had every frame blamed on the frame (422).
    """
    server, web, repo, mode = stand_in_served
    answer = frame(web)
    assert answer.status_code == 503 and "does not take photo bytes" in answer.text
    stand_in(repo, mode, 2, photo_input=True)
    wait_served(server, "BYTES")
    deadline = time.monotonic() + 15
    while (answer := frame(web)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["top"][0] == {"label": "A", "probability": pytest.approx(0.9)}
    assert httpx.get(web.url + "/api/health", timeout=30).json()["triton"] == "ready"
    stand_in(repo, mode, 3, photo_input=False)
    wait_served(server, "FP32")
    answer = frame(web)  # at once: not blamed on the frame
    assert answer.status_code == 503, answer.text
    assert "does not take photo bytes" in answer.json()["error"]


def answer_in_mode(stand_in_served, mode: str):
    """The page's answer to one frame while the stand-in answers in ``mode``; the stand-in is
    then set back to "ok", and the page must answer again."""
    server, web, repo, mode_file = stand_in_served
    stand_in(repo, mode_file, 2, photo_input=True)
    wait_served(server, "BYTES")
    deadline = time.monotonic() + 15
    while frame(web).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    mode_file.write_text(mode)
    answer = frame(web)
    mode_file.write_text("ok")
    assert frame(web).status_code == 200
    return answer


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("nan", "probability nan"),
        ("nan_box", "HAND_BOX holds a value that is not a finite number"),
        ("short_landmarks", "LANDMARKS has 10 values, not 63"),
    ],
)
def test_an_answer_the_page_cannot_show_gets_502_with_its_sentence(
    stand_in_served, mode: str, said: str
) -> None:
    """NaN probabilities (the status page counts such rows), a NaN box or landmarks of another
    shape were a 500 "Internal Server Error" in plain text and a traceback in the log."""
    answer = answer_in_mode(stand_in_served, mode)
    assert answer.status_code == 502, answer.text
    assert said in answer.json()["error"] and "model 'asl'" in answer.json()["error"]


@pytest.mark.parametrize(
    ("mode", "status", "said"),
    [
        ("internal", 502, "Triton failed on the frame: [StatusCode.INTERNAL]"),
        ("invalid", 422, "the model refused the frame: [StatusCode.INVALID_ARGUMENT]"),
    ],
)
def test_tritons_own_failure_is_not_blamed_on_the_photo(
    stand_in_served, mode: str, status: int, said: str
) -> None:
    """Any error from Triton was a 422 "the model refused the frame", also an INTERNAL one
    (a dead hand-step stub: "Stub process 'asl_hands_0_0' is not healthy"): the page blamed
    the user's photo for the server's fault. Only INVALID_ARGUMENT is the photo's."""
    answer = answer_in_mode(stand_in_served, mode)
    assert answer.status_code == status, answer.text
    assert said in answer.json()["error"] and "step says no" in answer.json()["error"]
