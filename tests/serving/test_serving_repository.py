"""The config generator: every field from the model, versions, pruning, sources (no server)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from asl_recognition.classes import CLASSES, read_class_file, write_class_file
from asl_recognition.paths import REPO_ROOT
from asl_recognition.serving.configs import load_config
from asl_recognition.serving.onnx_introspect import OnnxSignatureError, read_signature
from asl_recognition.serving.repository import build_repository
from asl_recognition.serving.sources import ModelSourceError, model_files


def test_signature_read_from_the_onnx_graph(tiny_models) -> None:
    sig = read_signature(tiny_models["a"].onnx)
    assert [(s.name, s.data_type, s.dims) for s in sig.inputs] == [
        ("images", "TYPE_UINT8", (3, 32, 32))
    ]
    assert [(s.name, s.data_type, s.dims) for s in sig.outputs] == [
        ("probabilities", "TYPE_FP32", (29,))
    ]
    assert sig.opset >= 17
    assert read_signature(tiny_models["b"].onnx).inputs[0].dims == (3, 48, 48)


def test_every_config_field_comes_from_the_model(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    info = build_repository(
        a.onnx, a.classes, tmp_path, max_batch_size=16, instances=2, keep_versions=3
    )
    assert info["version"] == 1 and info["model_name"] == "asl"
    cfg = load_config(tmp_path / "asl_onnx" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
        ("images", "TYPE_UINT8", [3, 32, 32])
    ]
    (out,) = cfg.output
    assert (out.name, list(out.dims), out.label_filename) == ("probabilities", [29], "labels.txt")
    assert read_class_file(str(tmp_path / "asl_onnx" / "labels.txt")) == a.class_names
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert cfg.instance_group[0].count == 2
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    # The ensemble routes to the latest version only, so Triton loads only that one.
    assert cfg.version_policy.latest.num_versions == 1
    assert (tmp_path / "asl_onnx" / "1" / "model.onnx").read_bytes() == a.onnx.read_bytes()
    # The ensemble clients call, and the metrics step after the ONNX model.
    ens = load_config(tmp_path / "asl" / "config.pbtxt")
    assert ens.platform == "ensemble" and ens.input[0].name == "images"
    assert ens.output[0].name == "probabilities" and list(ens.output[0].dims) == [29]
    steps = [s.model_name for s in ens.ensemble_scheduling.step]
    assert steps == ["asl_onnx", "asl_metrics"]
    metrics = load_config(tmp_path / "asl_metrics" / "config.pbtxt")
    assert metrics.backend == "python" and list(metrics.input[0].dims) == [29]
    assert float(metrics.parameters["low_confidence_threshold"].string_value) == 0.5
    assert (tmp_path / "asl_metrics" / "1" / "model.py").is_file()


def test_configs_round_trip_through_model_config_pb2(tiny_models, tmp_path) -> None:
    build_repository(tiny_models["a"].onnx, tiny_models["a"].classes, tmp_path)
    for model in ("asl", "asl_onnx", "asl_metrics"):
        text = (tmp_path / model / "config.pbtxt").read_text()
        parsed = text_format.Parse(text, mc.ModelConfig())
        assert text_format.MessageToString(parsed) == text
    with pytest.raises(text_format.ParseError, match="inputs"):
        text_format.Parse('name: "x" inputs { name: "images" }', mc.ModelConfig())


def test_config_follows_a_different_model_without_hand_edit(tiny_models, tmp_path) -> None:
    a, b = tiny_models["a"], tiny_models["b"]
    build_repository(a.onnx, a.classes, tmp_path)
    info = build_repository(b.onnx, b.classes, tmp_path)
    # b has other classes and size: a's version no longer fits the config, so it goes.
    assert info["version"] == 2 and info["versions"] == [2] and info["pruned"] == [1]
    cfg = load_config(tmp_path / "asl_onnx" / "config.pbtxt")
    assert list(cfg.input[0].dims) == [3, 48, 48]
    assert list(cfg.output[0].dims) == [len(b.class_names)]
    for model in ("asl", "asl_onnx", "asl_metrics"):
        assert read_class_file(str(tmp_path / model / "labels.txt")) == b.class_names
    assert list(load_config(tmp_path / "asl" / "config.pbtxt").input[0].dims) == [3, 48, 48]
    assert list(load_config(tmp_path / "asl_metrics" / "config.pbtxt").input[0].dims) == [5]


def test_versions_new_model_new_dir_same_model_reused_latest_n_kept(tiny_models, tmp_path) -> None:
    a, a2 = tiny_models["a"], tiny_models["a2"]
    assert build_repository(a.onnx, a.classes, tmp_path, keep_versions=2)["version"] == 1
    again = build_repository(a.onnx, a.classes, tmp_path, keep_versions=2)
    assert again["version"] == 1 and again["reused"]
    config_mtime = (tmp_path / "asl_onnx" / "config.pbtxt").stat().st_mtime_ns
    second = build_repository(a2.onnx, a2.classes, tmp_path, keep_versions=2)
    assert second["version"] == 2 and second["versions"] == [1, 2]
    # Same signature: the config is not rewritten, so a polling server only adds a version.
    assert (tmp_path / "asl_onnx" / "config.pbtxt").stat().st_mtime_ns == config_mtime
    third = build_repository(a.onnx, a.classes, tmp_path, keep_versions=2)
    assert third["version"] == 3 and third["versions"] == [2, 3] and third["pruned"] == [1]
    assert not [p for p in (tmp_path / "asl_onnx").iterdir() if p.name.startswith(".")]


def _load_standin():
    """The stand-in backend's config checks (it imports Triton's utils only when they exist)."""
    import importlib.util

    path = REPO_ROOT / "triton" / "backends" / "onnxruntime" / "model.py"
    spec = importlib.util.spec_from_file_location("asl_standin_backend", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_and_tensorrt_fields(tiny_models, tmp_path) -> None:
    a, b = tiny_models["a"], tiny_models["b"]
    build_repository(a.onnx, a.classes, tmp_path, instance_kind="gpu", tensorrt=True, instances=3)
    path = tmp_path / "asl_onnx" / "config.pbtxt"
    cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert cfg.instance_group[0].count == 3
    (accel,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt"
    params = dict(accel.parameters)
    # Engine cache per model content: ONNX Runtime keys engines by graph, not by weights.
    sha = hashlib.sha256(a.onnx.read_bytes()).hexdigest()[:16]
    assert params["trt_engine_cache_enable"] == "true"
    assert params["trt_engine_cache_path"] == f"/trt_cache/asl_onnx-{sha}"
    # one folder below the volume: the TensorRT provider creates only the last one
    assert Path(params["trt_engine_cache_path"]).parent == Path("/trt_cache")
    # One explicit profile spanning every batch size Triton forms (1 .. max_batch_size).
    assert params["trt_profile_min_shapes"] == "images:1x3x32x32"
    assert params["trt_profile_max_shapes"] == f"images:{cfg.max_batch_size}x3x32x32"
    opt = int(params["trt_profile_opt_shapes"].split(":")[1].split("x")[0])
    assert opt in cfg.dynamic_batching.preferred_batch_size
    warm = sorted((w.batch_size, list(w.inputs["images"].dims)) for w in cfg.model_warmup)
    assert warm == [(1, [3, 32, 32]), (cfg.max_batch_size, [3, 32, 32])]
    assert all(w.inputs["images"].zero_data for w in cfg.model_warmup)
    assert cfg.version_policy.latest.num_versions == 1
    # Every key and value is one the real onnxruntime backend accepts (mirrored by the stand-in).
    standin = _load_standin()
    as_json = json.loads(json_format.MessageToJson(cfg, preserving_proto_field_name=True))
    assert standin.check_options(as_json) == []
    accel.parameters["trt_engine_cache"] = "true"  # a typo the real backend refuses
    assert standin.check_options(
        json.loads(json_format.MessageToJson(cfg, preserving_proto_field_name=True))
    ) == ["unknown parameter 'trt_engine_cache' for the TensorRT accelerator"]
    # Same model again: config untouched (no reload, the cached engine stays valid) ...
    before = path.read_bytes()
    build_repository(a.onnx, a.classes, tmp_path, instance_kind="gpu", tensorrt=True, instances=3)
    assert path.read_bytes() == before
    # ... another model: another cache folder and profile.
    build_repository(
        b.onnx, b.classes, tmp_path, instance_kind="gpu", tensorrt=True, max_batch_size=8
    )
    params = dict(
        load_config(path)
        .optimization.execution_accelerators.gpu_execution_accelerator[0]
        .parameters
    )
    assert params["trt_engine_cache_path"] != f"/trt_cache/asl_onnx-{sha}"
    assert params["trt_profile_max_shapes"] == "images:8x3x48x48"
    with pytest.raises(ValueError, match="GPU"):
        build_repository(a.onnx, a.classes, tmp_path / "x", instance_kind="cpu", tensorrt=True)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def _victim(folder: Path) -> dict[str, bytes]:
    """Version folders of some other model repository, with files that are not ONNX."""
    for version in (1, 2, 3):
        (folder / str(version)).mkdir(parents=True)
        (folder / str(version) / "model.onnx").write_bytes(b"someone else's model %d" % version)
    return _snapshot(folder)


@pytest.mark.parametrize(
    "name",
    ["../../victim", "../victim", "..", ".", "a/b", "<abs>/victim", "", ".hidden", "x" * 65],
)
def test_model_names_that_are_not_one_plain_folder_are_refused(
    tiny_models, tmp_path, name
) -> None:
    a = tiny_models["a"]
    repo = tmp_path / "ws" / "triton_repo"
    before = _victim(tmp_path / "victim_onnx")
    name = name.replace("<abs>", str(tmp_path))  # an absolute path, kept inside tmp_path
    with pytest.raises(ValueError, match="invalid model name"):
        build_repository(a.onnx, a.classes, repo, model_name=name)
    assert _snapshot(tmp_path / "victim_onnx") == before
    assert not repo.exists()


@pytest.mark.parametrize("ensemble", [True, False])
def test_a_model_named_like_an_ensembles_step_is_refused(tiny_models, tmp_path, ensemble) -> None:
    """The public front takes no inference on ``*_onnx``, ``*_metrics`` or ``*_hands`` (the
    ensemble's steps), so no model the build serves may be named so."""
    a = tiny_models["a"]
    for name in ("asl_metrics", "x_onnx", "y_hands"):
        with pytest.raises(ValueError, match="are the ensemble's steps"):
            build_repository(a.onnx, a.classes, tmp_path / "repo", model_name=name,
                             ensemble=ensemble)  # fmt: skip
    assert not (tmp_path / "repo").exists()


def test_symlinks_out_of_the_repository_are_refused(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    repo = tmp_path / "repo"
    before = _victim(tmp_path / "elsewhere")
    repo.mkdir()
    (repo / "asl_onnx").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside the repository"):
        build_repository(a.onnx, a.classes, repo)
    assert _snapshot(tmp_path / "elsewhere") == before
    # A version folder linked elsewhere: pruning would delete through it.
    (repo / "asl_onnx").unlink()
    build_repository(a.onnx, a.classes, repo)
    (repo / "asl_onnx" / "7").symlink_to(tmp_path / "elsewhere" / "1")
    with pytest.raises(ValueError, match="outside the repository"):
        build_repository(tiny_models["b"].onnx, tiny_models["b"].classes, repo)
    assert _snapshot(tmp_path / "elsewhere") == before
    assert (repo / "asl_onnx" / "1" / "model.onnx").read_bytes() == a.onnx.read_bytes()


@pytest.mark.parametrize("max_batch_size", [0, -1])
def test_max_batch_size_below_one_is_refused_before_writing(tiny_models, tmp_path, max_batch_size):
    a = tiny_models["a"]
    with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
        build_repository(a.onnx, a.classes, tmp_path / "repo", max_batch_size=max_batch_size)
    assert not (tmp_path / "repo").exists()


def test_no_ensemble_serves_the_onnx_model_under_the_model_name(tiny_models, tmp_path) -> None:
    a = tiny_models["a"]
    info = build_repository(
        a.onnx, a.classes, tmp_path, ensemble=False, model_name="plain", keep_versions=3
    )
    assert info["onnx_model"] == "plain"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".asl-manifest.json",
        ".build.lock",
        "plain",
    ]
    cfg = load_config(tmp_path / "plain" / "config.pbtxt")
    assert cfg.platform == "onnxruntime_onnx"
    # Without the ensemble, clients can ask for any kept version: all of them are served.
    assert cfg.version_policy.latest.num_versions == 3


def test_a_truncated_onnx_is_one_line_not_a_protobuf_traceback(tiny_models, tmp_path) -> None:
    """#19.4: build_triton_repo printed protobuf's DecodeError traceback for a cut file."""
    a = tiny_models["a"]
    cut = tmp_path / "model.onnx"
    cut.write_bytes(a.onnx.read_bytes()[: a.onnx.stat().st_size // 2])
    with pytest.raises(OnnxSignatureError) as info:
        build_repository(cut, a.classes, tmp_path / "repo")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{cut}: not a readable ONNX model")
    assert not (tmp_path / "repo" / "asl_onnx" / "1").exists()


def test_a_graph_whose_declared_shapes_lie_is_refused_before_writing(tiny_models, tmp_path):
    """An output declared [N,4] that computes [N,5] had been built into a config of 4 labels,
    passed select_best's check_servable, and only failed at load (Triton kept the old model
    and the ensemble went unavailable, with no word from the build or the launcher)."""
    import onnx

    b = tiny_models["b"]
    graph = onnx.load(str(b.onnx))
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value = len(b.class_names) - 1
    lying, classes = tmp_path / "lying.onnx", tmp_path / "classes.txt"
    onnx.save(graph, str(lying))
    write_class_file(str(classes), b.class_names[:-1])
    with pytest.raises(OnnxSignatureError) as info:
        build_repository(lying, classes, tmp_path / "repo")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{lying}: ") and "differ" in message
    assert not (tmp_path / "repo" / "asl_onnx").exists()


def test_class_list_that_does_not_match_the_model_is_refused(tiny_models, tmp_path) -> None:
    wrong = tmp_path / "classes.txt"
    write_class_file(str(wrong), ["A", "B", "C"])
    with pytest.raises(OnnxSignatureError, match="3 names"):
        build_repository(tiny_models["a"].onnx, wrong, tmp_path / "repo")


def test_a_class_file_with_a_byte_order_mark_gives_clean_labels(tiny_models, tmp_path) -> None:
    """A Windows editor's BOM had become part of the first label (Triton answered "\ufeffA");
    text that is not UTF-8 is one line naming the file."""
    names = read_class_file(str(tiny_models["a"].classes))
    marked = tmp_path / "bom.txt"
    marked.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(names).encode() + b"\r\n")
    build_repository(tiny_models["a"].onnx, marked, tmp_path / "repo")
    labels = (tmp_path / "repo" / "asl" / "labels.txt").read_bytes()
    assert labels.startswith(names[0].encode() + b"\n") and read_class_file(str(marked)) == names
    wide = tmp_path / "utf16.txt"
    wide.write_text("\n".join(names), encoding="utf-16")
    with pytest.raises(ValueError, match=f"^{re.escape(str(wide))}: class names are not UTF-8"):
        build_repository(tiny_models["a"].onnx, wide, tmp_path / "repo2")


def test_source_training_task_fetches_artifacts_by_id(tiny_models) -> None:
    a = tiny_models["a"]

    class MockArtifact:
        def __init__(self, path: Path) -> None:
            self.path = path

        def get_local_copy(self) -> str:
            return str(self.path)

    class MockTask:
        artifacts = {"model.onnx": MockArtifact(a.onnx), "classes.txt": MockArtifact(a.classes)}

    asked = []

    def mock_get_task(task_id: str) -> MockTask:
        asked.append(task_id)
        return MockTask()

    assert model_files(train_task="t123", get_task=mock_get_task) == (a.onnx, a.classes)
    assert asked == ["t123"]
    MockTask.artifacts = {"model.onnx": MockArtifact(a.onnx)}
    with pytest.raises(ModelSourceError, match="classes.txt"):
        model_files(train_task="t123", get_task=mock_get_task)
    with pytest.raises(ModelSourceError, match="exactly one"):
        model_files(train_task="t1", onnx=str(a.onnx), classes=str(a.classes))


def test_source_registry_production_model(tiny_models, tmp_path, monkeypatch) -> None:
    """The real local registry: register, promote, then resolve 'production' and the id."""
    from asl_recognition.registry import get_registry
    from asl_recognition.registry.base import NewModel

    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("ASL_OFFLINE", "1")
    registry = get_registry("local")
    with pytest.raises(ModelSourceError, match="production"):
        model_files(model_id="production", registry=registry)
    a = tiny_models["a"]
    record = registry.register(NewModel("asl", str(a.onnx), str(a.classes)))
    registry.promote(record.id)
    onnx, classes = model_files(model_id="production", registry=registry)
    assert onnx.read_bytes() == a.onnx.read_bytes() and read_class_file(str(classes))
    assert model_files(model_id=record.id, registry=registry)[0] == onnx


def test_task_script_records_outputs(tiny_models, tmp_path) -> None:
    """tasks/build_triton_repo.py as a ClearML agent runs it (offline session here)."""
    a = tiny_models["a"]
    outputs = tmp_path / "outputs.json"
    env = dict(os.environ, ASL_WORKSPACE=str(tmp_path / "ws"), ASL_STEP_OUTPUTS=str(outputs))
    env["ASL_OFFLINE"] = "1"
    cmd = [sys.executable, "tasks/build_triton_repo.py", "--onnx", str(a.onnx)]
    cmd += ["--classes", str(a.classes), "--max-batch-size", "8"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = json.loads(outputs.read_text())
    assert recorded["model_name"] == "asl" and recorded["version"] == 1
    assert Path(recorded["repo"]) == tmp_path / "ws" / "triton_repo"
    cfg = load_config(Path(recorded["repo"]) / "asl_onnx" / "config.pbtxt")
    assert cfg.max_batch_size == 8


def _landmark_model(tmp_path, dtype=None, dims=None, classes=None):
    """A real exported landmark classifier, optionally with one input altered in the graph."""
    import onnx
    from asl_testkit.tiny_models import export_landmark_classifier

    path = export_landmark_classifier(tmp_path / "lm")
    if dtype is not None or dims is not None:
        model = onnx.load(str(path))
        (found,) = [i for i in model.graph.input if i.name == "HAND_FOUND"]
        if dtype is not None:
            found.type.tensor_type.elem_type = dtype
        if dims is not None:
            found.type.tensor_type.shape.dim[1].dim_value = dims
        onnx.save(model, str(path))
    if classes is not None:
        write_class_file(str(tmp_path / "lm" / "classes.txt"), classes)
    return path, tmp_path / "lm" / "classes.txt"


def test_landmark_classifier_gets_the_hand_pipeline(tmp_path) -> None:
    onnx_path, classes = _landmark_model(tmp_path)
    repo = tmp_path / "repo"
    info = build_repository(onnx_path, classes, repo, model_name="signs", hand_instances=2)
    assert info["graph_type"] == "landmarks" and info["hands_version"] == 1
    hands = load_config(repo / "signs_hands" / "config.pbtxt")
    assert hands.instance_group[0].count == 2 and hands.input[0].data_type == mc.TYPE_STRING
    files = sorted(p.name for p in (repo / "signs_hands" / "1").iterdir())
    assert "model.py" in files and "palm_detection_full.tflite" in files
    # same build again: nothing rewritten; an altered model file: a fresh verified version
    assert build_repository(onnx_path, classes, repo, model_name="signs")["hands_version"] == 1
    (repo / "signs_hands" / "1" / "hand_landmark_full.tflite").write_bytes(b"altered")
    info = build_repository(onnx_path, classes, repo, model_name="signs")
    assert info["hands_version"] == 2 and not (repo / "signs_hands" / "1").exists()
    from asl_recognition.hands import verify_models

    verify_models(repo / "signs_hands" / "2")


def test_an_image_model_replacing_a_landmark_model_removes_its_hand_step(
    tiny_models, tmp_path
) -> None:
    """The same name, a landmark model then an image model: ``<name>_hands`` had stayed, loaded
    by a polling Triton (a Python stub and LiteRT) for a model nothing calls."""
    onnx_path, classes = _landmark_model(tmp_path)
    repo = tmp_path / "repo"
    build_repository(onnx_path, classes, repo)
    assert (repo / "asl_hands" / "config.pbtxt").is_file()
    info = build_repository(tiny_models["a"].onnx, tiny_models["a"].classes, repo)
    assert not (repo / "asl_hands").exists() and info["removed_unused"] == ["asl_hands"]
    assert info["removed_changed"] == []  # no longer needed, not changed since the build
    ensemble = (repo / "asl" / "config.pbtxt").read_text()
    assert "asl_hands" not in ensemble
    manifest = json.loads((repo / ".asl-manifest.json").read_text())
    assert "asl_hands" not in manifest["models"]
    # a folder of that name that no build wrote is not the build's to delete
    (repo / "asl_hands").mkdir()
    build_repository(tiny_models["a2"].onnx, tiny_models["a2"].classes, repo)
    assert (repo / "asl_hands").is_dir()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dtype": 9}, "input 'HAND_FOUND' is TYPE_BOOL [1]"),
        ({"dims": 2}, "input 'HAND_FOUND' is TYPE_FP32 [2]"),
        ({"classes": [c for c in CLASSES if c != "nothing"] + ["blank"]}, "has no 'nothing'"),
    ],
)
def test_landmark_classifier_the_pipeline_cannot_feed_is_refused(tmp_path, change, message):
    onnx_path, classes = _landmark_model(tmp_path, **change)
    with pytest.raises(OnnxSignatureError, match=re.escape(message)):
        build_repository(onnx_path, classes, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_hand_instances_below_one_is_refused_before_writing(tmp_path) -> None:
    onnx_path, classes = _landmark_model(tmp_path)
    with pytest.raises(ValueError, match="hand_instances must be >= 1"):
        build_repository(onnx_path, classes, tmp_path / "repo", hand_instances=0)
    assert not (tmp_path / "repo").exists()


def _with_metadata(path: Path, text: str) -> Path:
    """``path``'s graph with its recorded hand detector replaced by ``text`` (a tampered file)."""
    import onnx

    from asl_recognition.hands.landmarker import DETECTOR_METADATA_KEY

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {DETECTOR_METADATA_KEY: text})
    onnx.save(model, str(path))
    return path


def test_the_hand_step_measures_as_the_classifier_s_table_was_measured(tmp_path) -> None:
    """The detector settings the model carries become its hand step's ``detector`` parameter;
    a model from before the record has none (served with the package's defaults)."""
    from asl_testkit.tiny_models import export_landmark_classifier

    from asl_recognition.hands import HandLandmarker

    recorded = HandLandmarker(min_presence=0.6, recrop=False).settings()
    onnx_path = export_landmark_classifier(tmp_path / "lm", detector=recorded)
    repo = tmp_path / "repo"
    build_repository(onnx_path, tmp_path / "lm" / "classes.txt", repo, model_name="signs")
    hands = load_config(repo / "signs_hands" / "config.pbtxt")
    assert json.loads(hands.parameters["detector"].string_value) == recorded
    assert hands.parameters["min_presence"].string_value == "0.6"  # not the default beside it
    # the next model, trained before models carried it: the parameter goes, defaults serve
    older, classes = _landmark_model(tmp_path / "older")
    build_repository(older, classes, repo, model_name="signs")
    hands = load_config(repo / "signs_hands" / "config.pbtxt")
    assert "detector" not in hands.parameters and "min_presence" in hands.parameters


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "cannot be served: Expecting property name"),
        ('["full"]', "expected a JSON object, got list"),
        ('{"recrop": false, "tilt": 2}', "settings tilt are unknown to this package"),
        ('{"passes": [[9.0, 1.0, false]]}', "pad must lie in [0, 2]"),
        ('{"passes": [[0.15]]}', "are malformed"),
        ('{"passes": [[0.15, 1.0, "false"]]}', "tint 'false' is not true or false"),
        ('{"variant": "heavy"}', "variant must be 'full' or 'lite'"),
        ('{"recrop": "no"}', "recrop must be true or false"),
    ],
)
def test_a_recorded_detector_that_cannot_be_reproduced_is_refused(tmp_path, text, message):
    onnx_path, classes = _landmark_model(tmp_path)
    _with_metadata(onnx_path, text)
    with pytest.raises(OnnxSignatureError, match=re.escape(message)):
        build_repository(onnx_path, classes, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
