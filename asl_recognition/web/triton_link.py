"""One frame to the Triton ensemble over gRPC, the way ``triton/client/client.py`` sends a file.

The photo's bytes go as they are (``IMAGE`` TYPE_STRING [1, 1]); the answer asked for is the
labelled output with ``class_count`` (Triton's own top-k, "prob:index:label"), ``HAND_FOUND``,
``HAND_BOX`` and, when the ensemble has it, ``LANDMARKS`` (21 points in the photo's pixels).
What the model offers is read once from its metadata and config (like ``client.read_spec``) and
read again after Triton was unreachable: a restarted server may serve another model. A model
the page cannot use (no photo bytes in) is remembered the same way, not asked again per frame.
Both are read again after ``MODEL_RECHECK_S`` and at once when Triton refuses a frame: a
repository in poll mode serves another model under the same name with no outage (one that
takes pixels had every frame blamed with 422, one that takes photos again stayed refused).
An answer the page cannot show (a NaN probability, landmarks of another shape) is
:class:`AnswerUnusable`, never a 500.
The channel retries a lost Triton every second (:func:`channel_args`), so the page answers again
within about a second of Triton's return.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import numpy as np

HAND_OUTPUTS = ("HAND_FOUND", "HAND_BOX", "LANDMARKS")
# gRPC's longest wait between reconnection attempts (its default, 120 s, is reached after a few
# minutes of an outage, and every call fails at once until the next attempt).
RECONNECT_BACKOFF_MS = 1000
# Seconds what the model takes and gives is trusted before it is read again (3 small calls).
MODEL_RECHECK_S = 5.0


class TritonDown(Exception):
    """Triton does not answer (or the model is not ready): the page says so and retries."""


class FrameRefused(Exception):
    """Triton answered this frame with an error (not a photo it can read): one sentence."""


class TritonFailed(Exception):
    """Triton failed on a frame through no fault of the frame's (a dead backend stub, an
    internal error of a step): the server's fault, never blamed on the photo."""


class ModelUnfit(Exception):
    """The served model is not one the page can use (its configuration, not the frame's)."""


class AnswerUnusable(Exception):
    """Triton answered, but not with numbers the page can show (NaN, another shape)."""


@dataclass(frozen=True)
class ServedModel:
    """What the ensemble takes and gives, from its metadata and config."""

    input_name: str
    probs: str
    hand_outputs: tuple[str, ...]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_model(metadata, config, model: str) -> ServedModel:
    """The photo input and labelled output (gRPC protobufs); a model taking pixels is refused."""
    inputs = list(metadata.inputs)
    if len(inputs) != 1 or inputs[0].datatype != "BYTES":
        raise ModelUnfit(
            f"model '{model}' does not take photo bytes (a landmark ensemble does); "
            "the page needs a landmark model"
        )
    labelled = [o.name for o in config.output if o.label_filename]
    if not labelled:
        raise ModelUnfit(f"model '{model}' has no output with class labels")
    names = {o.name for o in metadata.outputs}
    return ServedModel(inputs[0].name, labelled[0], tuple(n for n in HAND_OUTPUTS if n in names))


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's own channel arguments (``channel_args`` replaces them all) with the
    reconnect backoff capped: the page had said "Triton is down" for up to two minutes after
    Triton was back, its channel waiting out the backoff grown during the outage."""
    import tritonclient.grpc as tc

    keep = tc.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", tc.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", tc.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keep.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keep.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keep.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keep.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
    ]


def _finite(values, name: str, count: int | None = None) -> np.ndarray:
    """``values`` as floats, refused (ValueError) when not finite or not ``count`` of them."""
    array = np.asarray(values, dtype=float).reshape(-1)
    if count is not None and array.size != count:
        raise ValueError(f"{name} has {array.size} values, not {count}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds a value that is not a finite number")
    return array


def parse_answer(result, served: ServedModel) -> dict:
    """The page's JSON: top classes, hand flag, box (fractions) and landmarks (pixels);
    ValueError for numbers it cannot show (NaN/inf, another shape)."""
    top = []
    for entry in result.as_numpy(served.probs).reshape(-1):
        text = entry.decode() if isinstance(entry, bytes) else str(entry)
        prob, index, *label = text.split(":", 2)
        probability = float(prob)
        if not math.isfinite(probability):
            raise ValueError(f"{served.probs} gave class {index} the probability {prob}")
        top.append({"label": label[0] if label else index, "probability": probability})
    answer: dict = {"top": top, "hand": True, "box": None, "landmarks": None}
    if "HAND_FOUND" in served.hand_outputs:
        answer["hand"] = bool(_finite(result.as_numpy("HAND_FOUND"), "HAND_FOUND", 1)[0] > 0.5)
    if answer["hand"] and "HAND_BOX" in served.hand_outputs:
        box = _finite(result.as_numpy("HAND_BOX"), "HAND_BOX", 4)
        answer["box"] = [round(float(v), 4) for v in box]
    if answer["hand"] and "LANDMARKS" in served.hand_outputs:
        points = _finite(result.as_numpy("LANDMARKS"), "LANDMARKS", 63).reshape(21, 3)
        answer["landmarks"] = np.round(points, 1).tolist()
    return answer


class TritonLink:
    """An asyncio gRPC client of one model, made in the server's event loop on first use."""

    def __init__(self, url: str, model: str, top_k: int = 3, timeout: float = 10.0) -> None:
        self.url, self.model, self.top_k, self.timeout = url, model, top_k, timeout
        self._client = None
        self._served: ServedModel | None = None
        self._unfit: str | None = None  # why the model cannot serve the page, until Triton is down
        self._read_at = 0.0  # when either was read (both are read again MODEL_RECHECK_S later)
        self._lock = asyncio.Lock()

    def _grpc(self):
        if self._client is None:
            import tritonclient.grpc.aio as tc_aio

            self._client = tc_aio.InferenceServerClient(url=self.url, channel_args=channel_args())
        return self._client

    def forget(self) -> None:
        """Triton was unreachable: what it serves is read again next time."""
        self._served, self._unfit = None, None

    async def served(self) -> ServedModel:
        """The model's description (or ``ModelUnfit``), read once (again after Triton was down)."""
        async with self._lock:
            if time.monotonic() - self._read_at > MODEL_RECHECK_S:
                self.forget()
            if self._unfit is not None:
                raise ModelUnfit(self._unfit)
            if self._served is None:
                client = self._grpc()
                try:
                    if not await client.is_model_ready(self.model, client_timeout=3):
                        raise TritonDown(f"model '{self.model}' is not ready on {self.url}")
                    metadata = await client.get_model_metadata(self.model, client_timeout=3)
                    config = (await client.get_model_config(self.model, client_timeout=3)).config
                except TritonDown:
                    raise
                except Exception as exc:  # grpc errors differ by cause; any means "not here"
                    raise TritonDown(f"Triton at {self.url} is not answering: {_first_line(exc)}")
                self._read_at = time.monotonic()
                try:
                    self._served = read_model(metadata, config, self.model)
                except ModelUnfit as exc:
                    self._unfit = str(exc)
                    raise
            return self._served

    async def ready(self) -> tuple[bool, str]:
        """(ready, sentence) for the page's status line; Triton unreachable: :meth:`forget`."""
        try:
            ok = await self._grpc().is_server_ready(client_timeout=2)
        except Exception as exc:  # noqa: BLE001 - any transport failure means down
            self.forget()
            return False, f"Triton at {self.url} is not answering: {_first_line(exc)}"
        if not ok:
            return False, f"Triton at {self.url} is not ready"
        try:
            await self.served()
        except (TritonDown, ModelUnfit) as exc:
            return False, str(exc)
        return True, "ready"

    async def classify(self, photo: bytes) -> dict:
        """One photo's answer; TritonDown when Triton is gone, FrameRefused for a bad photo,
        TritonFailed for Triton's own failure on it, ModelUnfit for a model that does not take
        photos, AnswerUnusable for an answer that cannot be shown. A refusal is blamed on the
        frame only once the model is read again and found unchanged; a changed model is asked
        once more."""
        served = await self.served()
        try:
            result = await self._infer(photo, served)
        except FrameRefused:
            self.forget()  # another model under the same name (a poll-mode repository)?
            fresh = await self.served()  # ModelUnfit, TritonDown: said as such
            if fresh == served:
                raise
            served, result = fresh, await self._infer(photo, fresh)
        try:
            return parse_answer(result, served)
        except (ValueError, TypeError, AttributeError, IndexError, UnicodeDecodeError) as exc:
            raise AnswerUnusable(
                f"model '{self.model}' answered what the page cannot show: {_first_line(exc)}"
            ) from None

    async def _infer(self, photo: bytes, served: ServedModel):
        import tritonclient.grpc.aio as tc_aio

        batch = np.array([[photo]], dtype=np.object_)
        inp = tc_aio.InferInput(served.input_name, list(batch.shape), "BYTES")
        inp.set_data_from_numpy(batch)
        outputs = [tc_aio.InferRequestedOutput(served.probs, class_count=self.top_k)]
        outputs += [tc_aio.InferRequestedOutput(name) for name in served.hand_outputs]
        try:
            result = await self._grpc().infer(
                self.model, [inp], outputs=outputs, client_timeout=self.timeout
            )
        except Exception as exc:  # noqa: BLE001 - sorted by gRPC status below
            status = str(getattr(exc, "status", lambda: "")() or "")
            if "UNAVAILABLE" in status or "NOT_FOUND" in status or "unknown model" in str(exc):
                self.forget()
                raise TritonDown(f"Triton at {self.url} is not answering: {_first_line(exc)}")
            if "DEADLINE_EXCEEDED" in status:
                raise asyncio.TimeoutError from None
            if "INVALID_ARGUMENT" in status:  # the only status a step gives a bad photo
                raise FrameRefused(_first_line(exc)) from None
            raise TritonFailed(f"Triton failed on the frame: {_first_line(exc)}") from None
        return result

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


__all__ = [
    "AnswerUnusable",
    "FrameRefused",
    "ModelUnfit",
    "ServedModel",
    "TritonDown",
    "TritonFailed",
    "TritonLink",
    "parse_answer",
]
