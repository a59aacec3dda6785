"""Triton Python-backend model: an encoded photo in, its hand-landmark features out.

The first step of the ``<name>`` ensemble of a landmark classifier (this -> ``<name>_onnx`` ->
``<name>_metrics``). The repository generator copies this file to ``<repo>/<name>_hands/<v>/
model.py`` beside the verified hand model files. It decodes with the project's one decoder
(``asl_recognition.imageio``) and measures with ``asl_recognition.hands``, the very functions the
data stage uses, so served features equal the training table's.

Input ``IMAGE`` (TYPE_STRING [1]): the photo file's bytes as the client read them (any format
Pillow reads, any size: photos over the decoder's pixel bound are decoded reduced).
Outputs: ``FEATURES`` fp32 [63] (zeros when no hand), ``HAND_FOUND`` fp32 [1] (1 or 0),
``HAND_BOX`` fp32 [4]: (x0, y0, x1, y1) of the region the landmark model saw, as fractions of
the upright image's width and height (zeros when no hand).

A request whose bytes are empty, too large, or not a decodable image fails alone with a one-line
reason; the other requests of the same dynamic batch are answered normally.

The package must be importable: installed in the image (Docker), or found through the
``ASL_PACKAGE_ROOT`` environment variable the local launcher sets (the backend stub runs an
isolated interpreter, which ignores PYTHONPATH).
"""

import json
import os
import sys
import tempfile

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


class TritonPythonModel:
    def initialize(self, args):
        self.hands, self.imageio = _import_package()
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        # Loads and sha256-checks the model files copied beside this file.
        self.landmarker = self.hands.HandLandmarker(
            folder,
            min_detection=float(_parameter(config, "min_detection", "0.3")),
            min_presence=float(_parameter(config, "min_presence", "0.5")),
            num_threads=int(_parameter(config, "num_threads", "1")),
        )
        self.max_bytes = int(_parameter(config, "max_image_bytes", str(DEFAULT_MAX_IMAGE_BYTES)))
        shm = "/dev/shm"
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        self.scratch = tempfile.mkdtemp(prefix="asl-hands-", dir=base)

    def _decode(self, blob):
        """Upright RGB array through the shared decoder (it reads files: one scratch file)."""
        if len(blob) == 0:
            raise RequestError("IMAGE is empty (0 bytes)")
        if len(blob) > self.max_bytes:
            raise RequestError(f"IMAGE is {len(blob)} bytes, over the limit of {self.max_bytes}")
        fd, path = tempfile.mkstemp(dir=self.scratch)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            with self.imageio.load_rgb(path) as img:
                return np.asarray(img)
        except self.imageio.ImageDecodeError as exc:
            raise RequestError(f"IMAGE {exc.reason}: {exc.detail.replace(path, 'the image')}")
        except (OSError, ValueError) as exc:
            raise RequestError(f"IMAGE cannot be decoded: {str(exc).replace(path, 'the image')}")
        finally:
            os.unlink(path)

    def _measure(self, blob):
        """(features, found, box) of one photo."""
        rgb = self._decode(blob)
        try:
            result = self.landmarker.detect(rgb)
        except ValueError as exc:  # too small to search (check_rgb)
            raise RequestError(f"IMAGE unusable: {exc}")
        if result is None:
            return np.zeros(FEATURES, np.float32), 0.0, np.zeros(4, np.float32)
        height, width = rgb.shape[:2]
        x0, y0, x1, y1 = result.box
        box = np.array([x0 / width, y0 / height, x1 / width, y1 / height], np.float32)
        return self.hands.landmark_features(result), 1.0, box

    def _answer(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
        rows = []
        for index, blob in enumerate(blobs):
            try:
                rows.append(self._measure(bytes(blob)))
            except RequestError as exc:
                where = f"image {index} of {len(blobs)}: " if len(blobs) > 1 else ""
                raise RequestError(where + str(exc)) from None
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("FEATURES", np.stack([r[0] for r in rows]).astype(np.float32)),
                pb_utils.Tensor("HAND_FOUND", np.array([[r[1]] for r in rows], np.float32)),
                pb_utils.Tensor("HAND_BOX", np.stack([r[2] for r in rows]).astype(np.float32)),
            ]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._answer(request))
            except Exception as exc:  # noqa: BLE001 - one request fails, never the batch
                message = str(exc) if isinstance(exc, RequestError) else f"hand pipeline: {exc!r}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses

    def finalize(self):
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)
