"""The behavioural tests' model: make run's landmark classifier, asked the way Triton asks it.

``make run`` leaves no model in a fresh clone, so the session trains one here with make run's
recipe (configs/run.yaml's train options) by the training loop itself, on ASL_landmarks rows
that the data stage's ``measure`` makes of bundled photos: Kaggle frames (data/sample) and
Massey crops (data/external_sample: the tests' small slice of the signers whose data/massey_signers
make run trains on), make run's two sources. The photos the tests ask about are
not trained on (the Kaggle test photos are other frames of the same signer and background).
Measuring the photos is most of this fixture's cost (about 30 s on a busy 2-core machine).

The model is then written into a Triton repository by the generator and answered through the
files Triton would load: the hand step's ``model.py`` copied into ``<name>_hands/<version>/``
(photo bytes -> decoder -> hand passes -> features) and the classifier's ``model.onnx`` under
ONNX Runtime. Only Triton's C++ side is stood in for (``triton_python_backend_utils``, compiled
into the backend stub, so not importable here); the Triton tests serve the same files for real.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from asl_recognition.classes import CLASSES
from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA

EXTERNAL = REPO_ROOT / "data" / "external_sample"
TEST_IMAGES = REPO_ROOT / "data" / "test_images"
RECIPE = REPO_ROOT / "configs" / "run.yaml"
KAGGLE_PER_CLASS = 8  # of the 20 bundled frames per class (measuring each costs ~30-60 ms)


def massey_asked() -> list[Path]:
    """The first Massey crop of every other letter: other signers, never trained on."""
    letters = sorted(p for p in EXTERNAL.iterdir() if p.is_dir())[::2]
    return [sorted(folder.iterdir())[0] for folder in letters]


def asked_photos() -> list[tuple[Path, str]]:
    """(photo, letter) of the photos the tests ask about: the Kaggle test set's 26 letters
    (data/test_images, near the trained frames) and ``massey_asked`` (other signers)."""
    letters = sorted(TEST_IMAGES.glob("?_test.jpg"))
    return [(p, p.name[0]) for p in letters] + [(p, p.parent.name) for p in massey_asked()]


def training_photos() -> list[tuple[Path, str]]:
    """(photo, class): Kaggle frames of every class and the Massey crops not asked about."""
    asked = {path for path, _ in asked_photos()}
    photos = [
        (path, cls)
        for cls in CLASSES
        for path in sorted((SAMPLE_DATA / cls).glob("*.jpg"))[:KAGGLE_PER_CLASS]
    ]
    photos += [(p, p.parent.name) for p in sorted(EXTERNAL.glob("*/*")) if p not in asked]
    return photos


def recipe_train_options(run_dir: Path):
    """configs/run.yaml's train options, typed as the pipeline types them."""
    from asl_recognition.options import from_mapping
    from asl_recognition.pipeline.recipe import read_file
    from asl_recognition.training.options import TrainOptions

    values = {
        key.split(".", 1)[1]: value
        for key, value in read_file(RECIPE).items()
        if key.startswith("train.")
    }
    values.update(external="none", register=False, output_dir=str(run_dir))
    return from_mapping(TrainOptions, values)


def measured_rows(photos: list[tuple[Path, str]]):
    """The rows training reads: ASL_landmarks columns from the data stage, then features."""
    import pandas as pd
    import torch

    from asl_recognition.data.landmarks import measure
    from asl_recognition.hands import HandLandmarker
    from asl_recognition.training.data import TensorSplit
    from asl_recognition.training.landmark_data import table_rows

    landmarker = HandLandmarker()
    table = pd.DataFrame([{**measure(landmarker, path), "class": cls} for path, cls in photos])
    rows, labels = table_rows(table, CLASSES)
    paths = [str(path) for path, _ in photos]
    return TensorSplit(torch.from_numpy(rows), torch.from_numpy(labels), paths)


def train_landmark_model(run_dir: Path) -> Path:
    """make run's train step on the measured rows: the loop, then the training export."""
    import torch

    from asl_recognition.training.data import TensorSplit
    from asl_recognition.training.export import export_onnx
    from asl_recognition.training.landmark_model import FEATURES
    from asl_recognition.training.landmark_run import (
        LANDMARK_THREADS,
        build_landmark_net,
        landmark_augment,
    )
    from asl_recognition.training.loop import LoopConfig, Trainer

    options = recipe_train_options(run_dir)
    assert options.model == "landmarks" and options.keep == "last", "make run's recipe changed"
    rows = measured_rows(training_photos())
    hands = rows.images[:, FEATURES] > 0  # as training does: no-hand rows carry no gradient
    kept = [path for path, hand in zip(rows.paths, hands.tolist()) if hand]
    train = TensorSplit(rows.images[hands], rows.labels[hands], kept)
    torch.manual_seed(options.seed)
    config = LoopConfig.from_options(options, progress=False)
    config.threads = LANDMARK_THREADS
    net = build_landmark_net(list(CLASSES), None)
    augment = landmark_augment(options.augment)
    trainer = Trainer(net, train, rows, CLASSES, config, run_dir, batch_augment=augment)
    trainer.fit()
    return export_onnx(trainer.model.cpu().eval(), run_dir / "model.onnx", 0, len(CLASSES))


def backend_utils() -> types.ModuleType:
    """``triton_python_backend_utils`` as far as the hand step uses it: named tensors in,
    a response of named tensors (or an error) out."""
    module = types.ModuleType("triton_python_backend_utils")

    @dataclass
    class Tensor:
        name: str
        array: np.ndarray

        def as_numpy(self) -> np.ndarray:
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None) -> None:
            self.outputs = {t.name: t.array for t in output_tensors}
            self.error = error

    module.Tensor, module.InferenceResponse = Tensor, InferenceResponse

    class TritonError(RuntimeError):
        INTERNAL, INVALID_ARG = "INTERNAL", "INVALID_ARG"

        def __init__(self, message: str, code: str = "INTERNAL") -> None:
            super().__init__(message)
            self.code = code

    module.TritonError = TritonError
    module.get_input_tensor_by_name = lambda request, name: request[name]
    return module


def load_hand_step(model_dir: Path, version: int):
    """``<model_dir>/<version>/model.py`` initialised as Triton does (config as JSON)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(
        (model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    spec = importlib.util.spec_from_file_location(
        "served_hand_step", model_dir / f"{version}/model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["triton_python_backend_utils"] = backend_utils()
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["triton_python_backend_utils"]
    step = module.TritonPythonModel()
    step.initialize(
        {
            "model_config": json.dumps(
                json_format.MessageToDict(config, preserving_proto_field_name=True)
            ),
            "model_repository": str(model_dir),
            "model_version": str(version),
        }
    )
    return step, module.pb_utils


class ServedPath:
    """Photo bytes -> the served hand step -> the served classifier -> a letter per photo."""

    def __init__(self, repo: Path, info: dict) -> None:
        import onnxruntime as ort

        onnx_dir = repo / info["onnx_model"]
        self.hands, self.pb = load_hand_step(repo / info["hands_model"], info["hands_version"])
        self.classifier = ort.InferenceSession(
            str(onnx_dir / str(info["version"]) / "model.onnx"),
            providers=["CPUExecutionProvider"],
        )
        self.labels = (onnx_dir / "labels.txt").read_text().split()

    def answer(self, blobs: list[bytes]) -> tuple[list[str], list[bool]]:
        """One request of encoded photos: (letter, hand found) of each."""
        batch = np.array([[blob] for blob in blobs], dtype=np.object_)
        (response,) = self.hands.execute([{"IMAGE": self.pb.Tensor("IMAGE", batch)}])
        assert response.error is None, response.error
        feeds = {name: response.outputs[name] for name in ("FEATURES", "HAND_FOUND")}
        (probs,) = self.classifier.run(None, feeds)
        found = [bool(flag) for flag in feeds["HAND_FOUND"].reshape(-1)]
        return [self.labels[i] for i in probs.argmax(axis=1)], found

    def letters(self, blobs: list[bytes]) -> list[str]:
        return self.answer(blobs)[0]


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedPath:
    """make run's landmark model, trained once per session, in a generated repository."""
    pytest.importorskip("ai_edge_litert", reason="the hand landmark runtime is absent")
    if not SAMPLE_DATA.is_dir() or not EXTERNAL.is_dir():
        pytest.skip("the bundled photos (data/sample, data/external_sample) are missing")
    from asl_recognition.classes import write_class_file
    from asl_recognition.hands import ensure_models
    from asl_recognition.serving.repository import build_repository

    ensure_models()
    root = tmp_path_factory.mktemp("model")
    onnx = train_landmark_model(root / "run")
    write_class_file(str(root / "classes.txt"), list(CLASSES))
    info = build_repository(onnx, root / "classes.txt", root / "repo")
    return ServedPath(root / "repo", info)


@pytest.fixture(scope="session")
def asked() -> list[tuple[Path, str]]:
    return asked_photos()
