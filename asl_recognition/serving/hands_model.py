"""Triton Python-backend model: an encoded photo in, its hand-landmark features out.

The first step of the ``<name>`` ensemble of a landmark classifier (this -> ``<name>_onnx`` ->
``<name>_metrics``). The repository generator copies this file to ``<repo>/<name>_hands/<v>/
model.py`` beside the verified hand model files. It decodes with the project's one decoder
(``asl_recognition.imageio``) and measures with ``asl_recognition.hands``, the very functions the
data stage uses, so served features equal the training table's.

Input ``IMAGE`` (TYPE_STRING [1]): the photo file's bytes as the client read them (any format
Pillow reads, within the decoder's bounds: ``imageio.read_header`` refuses, from the header
alone, a side over 20,000 px or more than 40 MP (JPEG: 160 MP, read at 1/2 scale)).
Outputs: ``FEATURES`` fp32 [63] (zeros when no hand), ``HAND_FOUND`` fp32 [1] (1 or 0),
``HAND_BOX`` fp32 [4]: (x0, y0, x1, y1) of the region the landmark model saw, as fractions of
the upright image's width and height (zeros when no hand), ``LANDMARKS`` fp32 [21, 3]: the hand's
points (x, y in the upright image's pixels, depth scaled like x; zeros when no hand).

A request whose bytes are empty, too large, or not a decodable image fails alone with a one-line
reason; the other requests of the same dynamic batch are answered normally. Every header of a
request is read before any pixel is decoded, and a request whose images would decode to more
than ``max_request_pixels`` (default ``imageio.MAX_REQUEST_PIXELS``, 80 MP) in all is refused
undecoded: the cost of one request is bounded in time and memory, whatever its batch holds.

The package must be importable: installed in the image (Docker), or found through the
``ASL_PACKAGE_ROOT`` environment variable the local launcher sets (the backend stub runs an
isolated interpreter, which ignores PYTHONPATH).
"""

import contextlib
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_MAX_IMAGE_BYTES = 25 * 1024 * 1024
FEATURES = 63


def _import_package():
    """``asl_recognition.hands`` and ``asl_recognition.imageio``, from the image or the repo."""
    try:
        import asl_recognition  # noqa: F401
    except ImportError:
        root = os.environ.get("ASL_PACKAGE_ROOT", "")
        if not root:
            raise
        sys.path.insert(0, root)
    from asl_recognition import hands, imageio

    return hands, imageio


def _parameter(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


class RequestError(ValueError):
    """One request cannot be answered; the message is sent back to that client only."""


def _numbered(index, count, step, arg):
    """``step(arg)``; a refusal names the image when the request holds several."""
    try:
        return step(arg)
    except RequestError as exc:
        where = f"image {index} of {count}: " if count > 1 else ""
        raise RequestError(where + str(exc)) from None


class TritonPythonModel:
    def initialize(self, args):
        self.hands, self.imageio = _import_package()
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        # Loads and sha256-checks the model files copied beside this file. The classifier's
        # recorded detector settings (parameter ``detector``, from its training table) decide
        # how photos are measured; a model without a record gets the package's defaults.
        passes = self.hands.passes
        arguments = {
            "min_detection": float(
                _parameter(config, "min_detection", str(passes.DEFAULT_MIN_DETECTION))
            ),
            "min_presence": float(
                _parameter(config, "min_presence", str(passes.DEFAULT_MIN_PRESENCE))
            ),
        }
        recorded = _parameter(config, "detector", "")
        if recorded:
            arguments.update(self.hands.detector_arguments(json.loads(recorded)))
        self.landmarker = self.hands.HandLandmarker(
            folder, num_threads=int(_parameter(config, "num_threads", "1")), **arguments
        )
        self.max_bytes = int(_parameter(config, "max_image_bytes", str(DEFAULT_MAX_IMAGE_BYTES)))
        default_pixels = str(self.imageio.MAX_REQUEST_PIXELS)
        self.max_request_pixels = int(_parameter(config, "max_request_pixels", default_pixels))

    def _header(self, blob):
        """The opened header of one photo's bytes, refused on bytes or declared size."""
        if len(blob) == 0:
            raise RequestError("IMAGE is empty (0 bytes)")
        if len(blob) > self.max_bytes:
            raise RequestError(f"IMAGE is {len(blob)} bytes, over the limit of {self.max_bytes}")
        with self._decode_errors():
            return self.imageio.read_header(blob)

    def _decode(self, header):
        """Upright RGB array through the shared decoder (the data stage's very function)."""
        with self._decode_errors(), self.imageio.decode_rgb(header) as img:
            return np.asarray(img)

    @contextlib.contextmanager
    def _decode_errors(self):
        """The decoder's refusals as one request error naming the reason."""
        try:
            yield
        except self.imageio.ImageDecodeError as exc:
            raise RequestError(f"IMAGE {exc.reason}: {exc.detail}")
        except (OSError, ValueError) as exc:
            raise RequestError(f"IMAGE cannot be decoded: {exc}")

    def _measure(self, header):
        """(features, found, box, landmarks) of one photo; its header is closed here."""
        try:
            rgb = self._decode(header)
        finally:
            header.close()
        try:
            result = self.landmarker.detect(rgb)
        except ValueError as exc:  # too small to search (check_rgb)
            raise RequestError(f"IMAGE unusable: {exc}")
        if result is None:
            none = np.zeros((21, 3), np.float32)
            return np.zeros(FEATURES, np.float32), 0.0, np.zeros(4, np.float32), none
        height, width = rgb.shape[:2]
        x0, y0, x1, y1 = result.box
        box = np.array([x0 / width, y0 / height, x1 / width, y1 / height], np.float32)
        points = np.asarray(result.landmarks, np.float32)
        return self.hands.landmark_features(result), 1.0, box, points

    def _answer(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
        with contextlib.ExitStack() as stack:
            headers = [
                stack.enter_context(_numbered(index, len(blobs), self._header, bytes(blob)))
                for index, blob in enumerate(blobs)
            ]
            pixels = sum(self.imageio.decode_pixels(h) for h in headers)
            if pixels > self.max_request_pixels:
                raise RequestError(
                    f"IMAGE: the request's {len(blobs)} image(s) would decode to {pixels} "
                    f"pixels, over the limit of {self.max_request_pixels} per request; "
                    "send fewer or smaller images per request"
                )
            rows = [
                _numbered(index, len(headers), self._measure, header)
                for index, header in enumerate(headers)
            ]
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("FEATURES", np.stack([r[0] for r in rows]).astype(np.float32)),
                pb_utils.Tensor("HAND_FOUND", np.array([[r[1]] for r in rows], np.float32)),
                pb_utils.Tensor("HAND_BOX", np.stack([r[2] for r in rows]).astype(np.float32)),
                pb_utils.Tensor("LANDMARKS", np.stack([r[3] for r in rows]).astype(np.float32)),
            ]
        )

    def execute(self, requests):
        """One response per request; a request's own error fails it alone."""
        responses = []
        for request in requests:
            try:
                responses.append(self._answer(request))
            except Exception as exc:  # noqa: BLE001 - one request fails, never the batch
                responses.append(pb_utils.InferenceResponse(error=_error(exc)))
        return responses


def _error(exc: Exception):
    """The client's fault (a bad or oversized image) as INVALID_ARG, which HTTP answers 400 and
    gRPC INVALID_ARGUMENT; anything else stays an internal error (500)."""
    if isinstance(exc, RequestError):
        return pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
    return pb_utils.TritonError(f"hand pipeline: {exc!r}")
