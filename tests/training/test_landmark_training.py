"""The landmark model's training run on a real published sample and its measured ASL_landmarks.

ONNX contract (FEATURES [N,63] + HAND_FOUND [N,1] -> PROBS [N,29]), the parity gate, the
certain 'nothing' for a missed hand, the external photos measured by the serving landmarker,
and the refusals of a landmark table measured on another ASL version or not published at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from asl_testkit.files import assert_one_line, assert_untouched, fingerprint
from asl_testkit.published import EXTERNAL_SAMPLE, publish_sample, train_options
from asl_testkit.workspaces import offline_workspace

from asl_recognition.classes import CLASSES
from asl_recognition.training.errors import TrainingInputError
from asl_recognition.training.export import LANDMARK_INPUTS, LANDMARK_OUTPUT, onnx_session
from asl_recognition.training.landmark_model import FEATURES, LandmarkNet
from asl_recognition.training.run import run_training

NOTHING = CLASSES.index("nothing")
PER_CLASS = 8  # train 4 / val 2 / test 2 frames per class: 232 photos to measure


@dataclass
class Landmarked:
    """A workspace with a published sample, its ASL_landmarks, and a second ASL version."""

    ws: Path
    dataset_id: str
    landmarks_id: str
    other_id: str


@pytest.fixture(scope="module")
def landmarked(tmp_path_factory) -> Landmarked:
    pytest.importorskip("ai_edge_litert", reason="the hand landmark runtime is absent")
    from asl_recognition.data.landmarks import publish_landmarks
    from asl_recognition.hands import ensure_models

    ensure_models()
    root = tmp_path_factory.mktemp("landmarks")
    ws = root / "ws"
    with offline_workspace(ws):
        dataset_id = publish_sample(root / "a", per_class=PER_CLASS)
        landmarks = publish_landmarks(dataset_id, progress=False)
        other_id = publish_sample(root / "b", per_class=PER_CLASS, split_seed=1)
        yield Landmarked(ws, dataset_id, landmarks["landmarks_id"], other_id)


def landmark_options(landmarked: Landmarked, **values):
    """Train options of the landmark model on the sample and its table (``values`` override)."""
    defaults = {
        "model": "landmarks",
        "dataset_version": landmarked.dataset_id,
        "landmarks_version": landmarked.landmarks_id,
        "batch_size": 32,
    }
    return train_options(**{**defaults, **values})


def _served(run_dir: Path) -> LandmarkNet:
    net = LandmarkNet(len(CLASSES), NOTHING)
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)
    net.load_state_dict(best["model"])
    return net.eval()


def _feeds(rows: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip(LANDMARK_INPUTS, (rows[:, :FEATURES], rows[:, FEATURES:])))


def test_landmark_model_trains_exports_and_registers(landmarked, tmp_path) -> None:
    from asl_recognition.data.landmarks import load_table
    from asl_recognition.training.landmark_data import landmark_split

    run_dir = tmp_path / "run"
    out = run_training(
        landmark_options(landmarked, epochs=3, external="none", output_dir=str(run_dir))
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history) == 3 and all(np.isfinite(h["train_loss"]) for h in history)
    assert metrics["dataset_id"] == landmarked.dataset_id and metrics["image_size"] == 0
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)
    assert best["landmarks_id"] == landmarked.landmarks_id  # the run's data identity

    # the table's rows by split: train keeps hand rows only, val/test keep every image
    table, _ = load_table(landmarked.landmarks_id)
    sizes = metrics["split_sizes"]
    found = table["hand_found"].astype(bool)
    assert sizes["train"] == int((found & (table["split"] == "train")).sum())
    assert sizes["test"] == int((table["split"] == "test").sum()) == 2 * len(CLASSES)

    # ONNX contract: float FEATURES [N,63] and HAND_FOUND [N,1] -> PROBS [N,29]
    graph = onnx.load(str(run_dir / "model.onnx")).graph
    assert [i.name for i in graph.input] == list(LANDMARK_INPUTS)
    assert [o.name for o in graph.output] == [LANDMARK_OUTPUT]
    for value, width in zip((*graph.input, *graph.output), (FEATURES, 1, len(CLASSES))):
        dims = value.type.tensor_type.shape.dim
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
        assert dims[1].dim_value == width  # the class axis is fixed for Triton

    # the table's hand detector settings travel in the graph, for the served hand step
    from asl_recognition.hands.landmarker import DETECTOR_METADATA_KEY

    props = {p.key: p.value for p in onnx.load(str(run_dir / "model.onnx")).metadata_props}
    _, table_meta = load_table(landmarked.landmarks_id)
    assert json.loads(props[DETECTOR_METADATA_KEY]) == table_meta["detector"]
    assert table_meta["detector"]["recrop"] is True and table_meta["detector"]["passes"]

    # the parity gate ran on the whole test split; onnxruntime equals torch here too
    assert metrics["parity"]["images"] == sizes["test"]
    assert metrics["parity"]["max_abs_diff"] <= 1e-4 and metrics["parity"]["top1_mismatches"] == 0
    session = onnx_session(run_dir / "model.onnx")
    rows = landmark_split(table, "test", list(CLASSES)).images
    (probs,) = session.run([LANDMARK_OUTPUT], _feeds(rows.numpy()))
    with torch.inference_mode():
        expected = _served(run_dir).served()(rows[:, :FEATURES], rows[:, FEATURES:]).numpy()
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-4)

    # no hand: probability 1 for 'nothing', whatever the features say
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(6, FEATURES + 1)).astype(np.float32)
    noise[:, FEATURES] = [0, 0, 0, 1, 1, 1]
    (probs,) = session.run([LANDMARK_OUTPUT], _feeds(noise))
    one_hot = np.eye(len(CLASSES), dtype=np.float32)[NOTHING]
    np.testing.assert_array_equal(probs[:3], np.tile(one_hot, (3, 1)))
    np.testing.assert_allclose(probs[3:].sum(1), 1.0, atol=1e-5)
    assert (probs[3:].max(1) < 1).all()  # a found hand gets the classifier's own answer
    test_rows = table[table["split"] == "test"]
    missed = ~test_rows["hand_found"].astype(bool).to_numpy()
    assert missed.any()  # the 'nothing' photos at least
    assert (expected[missed].argmax(1) == NOTHING).all()

    # registry record with the run's files
    from asl_recognition.registry import get_registry

    record = get_registry().get(out["model_id"])
    assert Path(record.onnx_path).read_bytes() == (run_dir / "model.onnx").read_bytes()
    assert record.dataset_id == landmarked.dataset_id
    assert record.params["model"] == "landmarks"
    assert record.params["landmarks_version"] == landmarked.landmarks_id
    assert record.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_the_external_check_measures_the_photos_with_the_landmarker(landmarked, tmp_path) -> None:
    from asl_recognition.hands import HandLandmarker, landmark_features

    run_dir = tmp_path / "run"
    options = dict(epochs=1, register=False, output_dir=str(run_dir))
    out = run_training(landmark_options(landmarked, external=str(EXTERNAL_SAMPLE), **options))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    external = metrics["external"]
    assert external["images"] == 130 and len(external["classes"]) == 26
    assert external["unreadable"] == [] and 0.0 <= out["external_accuracy"] <= 1.0

    # the same photos measured here, scored by the exported graph: the same accuracy
    landmarker, rows, labels = HandLandmarker(), [], []
    for path in sorted(EXTERNAL_SAMPLE.glob("*/*")):
        result = landmarker.detect_path(path)
        row = np.zeros(FEATURES + 1, np.float32)
        if result is not None:
            row[:FEATURES], row[FEATURES] = landmark_features(result), 1.0
        rows.append(row)
        labels.append(CLASSES.index(path.parent.name))
    rows_array = np.stack(rows)
    # the detector's passes find nearly every Massey hand (a missed one is answered `nothing`)
    assert rows_array[:, FEATURES].sum() >= 0.9 * len(rows)
    (probs,) = onnx_session(run_dir / "model.onnx").run([LANDMARK_OUTPUT], _feeds(rows_array))
    accuracy = float((probs.argmax(1) == np.array(labels)).mean())
    assert metrics["external_accuracy"] == pytest.approx(accuracy, abs=1e-6)  # float32 count


def test_landmarks_of_another_asl_version_are_refused(landmarked, tmp_path) -> None:
    before = fingerprint(landmarked.ws)
    with pytest.raises(TrainingInputError) as info:
        run_training(
            landmark_options(
                landmarked,
                dataset_version=landmarked.other_id,
                epochs=1,
                output_dir=str(tmp_path / "run"),
            )
        )
    assert_one_line(
        str(info.value),
        f"ASL_landmarks {landmarked.landmarks_id} was measured on ASL {landmarked.dataset_id}",
        f"not on the training dataset {landmarked.other_id}",
        "--landmarks-version",
    )
    assert not (tmp_path / "run").exists()
    assert_untouched(landmarked.ws, before)


def test_an_unknown_landmarks_version_is_refused(landmarked, tmp_path) -> None:
    before = fingerprint(landmarked.ws)
    with pytest.raises(TrainingInputError) as info:
        run_training(
            landmark_options(
                landmarked, landmarks_version="9.9.9", epochs=1, output_dir=str(tmp_path / "run")
            )
        )
    assert_one_line(str(info.value), "--landmarks-version 9.9.9", "publish_landmarks.py first")
    assert not (tmp_path / "run").exists()
    assert_untouched(landmarked.ws, before)


def test_no_landmarks_published_is_refused(workspace_env, tmp_path) -> None:
    """A workspace whose ASL version was never measured: 'latest' finds no ASL_landmarks."""
    dataset_id = publish_sample(tmp_path, per_class=5)
    before = fingerprint(workspace_env)
    options = dict(model="landmarks", dataset_version=dataset_id, epochs=1)
    with pytest.raises(TrainingInputError) as info:
        run_training(train_options(**options, output_dir=str(tmp_path / "run")))
    assert_one_line(str(info.value), "--landmarks-version latest", "publish_landmarks.py first")
    assert not (tmp_path / "run").exists()
    assert_untouched(workspace_env, before)


def _republished(landmarked: Landmarked, tmp_path: Path, change) -> str:
    """A new ASL_landmarks version of the same ASL version, its table altered by ``change``."""
    from asl_recognition.data.landmarks import TABLE, load_table
    from asl_recognition.store import get_store

    table, meta = load_table(landmarked.landmarks_id)
    change(table)
    table.to_csv(tmp_path / TABLE, index=False)
    version = get_store().create(
        "ASL_landmarks",
        {TABLE: tmp_path / TABLE},
        parents=[landmarked.dataset_id],
        metadata={"asl_dataset_id": landmarked.dataset_id, "classes": meta["classes"]},
        tags=["landmarks"],
    )
    return version.id


def test_no_hand_in_any_photo_says_so_and_where_to_look(landmarked, tmp_path) -> None:
    """#19.13: it said "needs a non-empty train and val split"."""

    def no_hands(table) -> None:
        table["hand_found"] = False

    landmarks_id = _republished(landmarked, tmp_path, no_hands)
    before = fingerprint(landmarked.ws)
    options = dict(landmarks_version=landmarks_id, epochs=1, output_dir=str(tmp_path / "run"))
    with pytest.raises(TrainingInputError) as info:
        run_training(landmark_options(landmarked, **options))
    assert_one_line(
        str(info.value), "no hand was found", f"ASL_landmarks {landmarks_id}", "hand-found report"
    )
    assert not (tmp_path / "run").exists()
    assert_untouched(landmarked.ws, before)


def test_a_class_without_a_hand_is_reported_and_never_promoted(landmarked, tmp_path) -> None:
    """#19.12: a class no train photo has a hand of was trained and promoted without a word."""
    from asl_recognition.options import from_mapping
    from asl_recognition.pipeline.options import SelectBestOptions
    from asl_recognition.pipeline.selection import select_best
    from asl_recognition.registry import get_registry

    def no_j_hands(table) -> None:
        table.loc[(table["class"] == "J") & (table["split"] == "train"), "hand_found"] = False

    landmarks_id = _republished(landmarked, tmp_path, no_j_hands)
    options = dict(landmarks_version=landmarks_id, epochs=1, external="none")
    with pytest.warns(UserWarning, match=r"no train photos with a hand for class\(es\) J:"):
        out = run_training(
            landmark_options(landmarked, output_dir=str(tmp_path / "run"), **options)
        )
    registry = get_registry("local")
    record = registry.get(out["model_id"])
    assert record.metrics["untrained_classes"] == ["J"]  # 'nothing' needs no hand
    before = registry.production()
    criteria = from_mapping(SelectBestOptions, {"model_id": record.id, "registry": "local"})
    with pytest.raises(ValueError) as info:
        select_best(registry, criteria)
    assert_one_line(str(info.value), f"model {record.id} cannot answer class(es) J", "promoted")
    assert registry.production() == before


def test_landmark_training_runs_on_one_thread_and_augments_whole_batches(
    landmarked, tmp_path, monkeypatch
) -> None:
    """Issue 20.1: the MLP trained on torch's default threads (two, oversubscribing two busy
    cores) with its augmentation applied row by row through the image path's per-item hook."""
    from asl_recognition.training import run, run_inputs

    calls: list[tuple[int, tuple[int, ...]]] = []
    real = run.landmark_augment

    def recording(preset: str):
        augment = real(preset)

        def hook(batch: torch.Tensor) -> torch.Tensor:
            calls.append((torch.get_num_threads(), tuple(batch.shape)))
            return augment(batch)

        return hook

    steps: list[int] = []  # threads at each forward pass of the model (train and val)
    build = run_inputs.build_landmark_net

    def recording_net(classes, weights):
        net = build(classes, weights)
        net.register_forward_pre_hook(lambda *_: steps.append(torch.get_num_threads()))
        return net

    monkeypatch.setattr(run, "landmark_augment", recording)
    monkeypatch.setattr(run_inputs, "build_landmark_net", recording_net)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        options = dict(epochs=2, external="none", register=False)
        run_training(landmark_options(landmarked, output_dir=str(tmp_path / "run"), **options))
        assert torch.get_num_threads() == 2  # restored after training
    finally:
        torch.set_num_threads(before)
    assert calls and {threads for threads, _ in calls} == {1}
    assert len(steps) > len(calls) and set(steps[: len(calls)]) == {1}
    assert {shape for _, shape in calls} == {(32, FEATURES + 1)}  # whole batches of rows


def _label_aa(table) -> None:
    table.loc[table.index[0], "class"] = "AA"


def _nan_point(table) -> None:
    found = table.index[table["hand_found"].astype(bool)][0]
    table.loc[found, "lm0_x"] = float("nan")


def _text_point(table) -> None:
    found = table.index[table["hand_found"].astype(bool)][0]
    table["lm0_x"] = table["lm0_x"].astype(object)
    table.loc[found, "lm0_x"] = "x"


def _no_column(table) -> None:
    del table["handedness"]


def _no_test_rows(table) -> None:
    table.loc[table["split"] == "test", "split"] = "val"


def _degenerate_hand(table) -> None:
    found = table.index[table["hand_found"].astype(bool)][0]
    table.loc[found, [c for c in table.columns if c.startswith("lm")]] = 0.5


def _other_handedness(table) -> None:
    found = table.index[table["hand_found"].astype(bool)][0]
    table.loc[found, "handedness"] = "Middle"


def _hand_found_two(table) -> None:
    table["hand_found"] = table["hand_found"].astype(int)
    table.loc[table.index[0], "hand_found"] = 2


@pytest.mark.parametrize(
    "change, said",
    [
        (_label_aa, "labels rows 'AA', which is no class"),
        (_nan_point, "points are not all finite"),
        (_text_point, "points are not all finite"),
        (_no_column, "lacks the column(s) handedness"),
        (_no_test_rows, "has no test rows"),
        (_hand_found_two, "hand_found column holds values other than 0 and 1"),
    ],
)
def test_a_malformed_landmark_table_is_one_line_before_training(
    landmarked, tmp_path, change, said
) -> None:
    """A version not written by publish_landmarks: tracebacks (ValueError, KeyError), one only
    after the whole training (no test rows)."""
    landmarks_id = _republished(landmarked, tmp_path, change)
    options = dict(landmarks_version=landmarks_id, epochs=1, output_dir=str(tmp_path / "run"))
    with pytest.raises(TrainingInputError) as info:
        run_training(landmark_options(landmarked, **options))
    assert_one_line(str(info.value), f"ASL_landmarks {landmarks_id}", said)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "change, said",
    [
        (_degenerate_hand, "landmarks are degenerate"),
        (_other_handedness, "handedness must be 'Left' or 'Right'"),
    ],
)
def test_a_row_no_landmarker_measures_is_one_line_naming_it_before_training(
    landmarked, tmp_path, change, said
) -> None:
    """Finite points all on one spot, or a handedness serving never gives, passed the table's
    checks and were a ValueError traceback from the feature function."""
    landmarks_id = _republished(landmarked, tmp_path, change)
    options = dict(landmarks_version=landmarks_id, epochs=1, output_dir=str(tmp_path / "run"))
    with pytest.raises(TrainingInputError) as info:
        run_training(landmark_options(landmarked, **options))
    assert_one_line(str(info.value), "ASL_landmarks row of ", said, "publish it again")
    assert not (tmp_path / "run").exists()
