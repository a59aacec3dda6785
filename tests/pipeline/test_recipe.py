"""Recipes: configs/*.yaml plus ``step.option=value`` overrides, typed by the options classes."""

from __future__ import annotations

import asl_pipeline
import pytest
import yaml

from asl_recognition.paths import REPO_ROOT, SHARED_DATA
from asl_recognition.pipeline.dag import ASL_DAG
from asl_recognition.pipeline.recipe import (
    RecipeError,
    as_nested,
    load_recipe,
    read_file,
    recipe_sources,
)

# What ../shared/data holds on a fresh machine (its README's table). Photos added there by hand
# are gone on the next machine, so a recipe may read only these or folders in the repository.
SHARED_FOLDERS = {
    "asl_kaggle_sample",
    "asl_kaggle_test",
    "asl_external_massey",
    "asl_roboflow_letters",
    "asl_webcam_longhongvo23",
}


def test_run_recipe_and_typed_overrides() -> None:
    values = load_recipe(ASL_DAG, REPO_ROOT / "configs" / "run.yaml")
    recipe = yaml.safe_load((REPO_ROOT / "configs" / "run.yaml").read_text())
    assert values == {
        f"{step}/{option}": value
        for step, options in recipe.items()
        for option, value in options.items()
    }
    assert type(values["train/epochs"]) is int and values["train/model"] == "landmarks"
    values = load_recipe(
        ASL_DAG,
        REPO_ROOT / "configs" / "run.yaml",
        [
            "train.epochs=3",
            "train.register=false",
            "publish_dataset.split=[0.6, 0.2, 0.2]",
            "publish_dataset.holdout_source=a,b",
            "train.weights=",
            "raw_version=abc123",
        ],
    )
    assert values["train/epochs"] == 3 and type(values["train/epochs"]) is int
    assert values["train/register"] is False
    assert values["publish_dataset/split"] == [0.6, 0.2, 0.2]
    assert values["publish_dataset/holdout_source"] == ["a", "b"]
    assert values["train/weights"] is None
    assert values["raw_version"] == "abc123"
    trained = as_nested(values)["train"]
    assert {k: trained[k] for k in ("epochs", "register", "weights")} == {
        "epochs": 3,
        "register": False,
        "weights": None,
    }


@pytest.mark.parametrize("recipe", sorted((REPO_ROOT / "configs").glob("*.yaml")), ids=str)
def test_every_bundled_recipe_loads(recipe) -> None:
    values = load_recipe(ASL_DAG, recipe)
    assert values and set(values) <= {p.name for p in ASL_DAG.params}
    assert len(values) == len(read_file(recipe))  # every entry became one parameter


@pytest.mark.parametrize("recipe", sorted((REPO_ROOT / "configs").glob("*.yaml")), ids=str)
def test_every_recipe_source_is_bundled_or_one_of_shareds_own_folders(recipe) -> None:
    for name, path in recipe_sources(ASL_DAG, recipe).items():
        path = path.resolve()
        if path.is_relative_to(REPO_ROOT):
            assert path.is_dir(), f"{recipe.name}: {name}={path} is not in the repository"
        else:
            assert path.parent == SHARED_DATA.resolve() and path.name in SHARED_FOLDERS, (
                f"{recipe.name}: {name}={path} is neither in the repository nor one of "
                "../shared/data's own folders: a fresh machine would not have it"
            )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trian.epochs=3"], "unknown step 'trian'; steps: validate_raw, publish_dataset"),
        (["train.epoch=3"], "train has no option 'epoch'; options: model, epochs"),
        (["train.dataset_version=1"], "train.dataset_version is wired to"),
        (["train.epochs=x"], "train.epochs: --epochs: 'x' is not a number"),
        (["train.model=vgg"], "train.model: --model: 'vgg' is not one of"),
        (["epochs"], "override 'epochs': expected step.option=value"),
        (["=3"], "expected step.option=value"),
        (["image_size=64"], "unknown pipeline parameter 'image_size'"),
    ],
)
def test_bad_overrides_fail_with_one_line(overrides, message) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(ASL_DAG, None, overrides)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_recipe_files(tmp_path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- train\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: [\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  epochs: twelve\n")
    for path, message in (
        (listed, "expected a mapping of steps to options"),
        (broken, "cannot read recipe"),
        (tmp_path / "absent.yaml", "cannot read recipe"),
        (typo, "train.epochs: --epochs: 'twelve' is not a number"),
    ):
        with pytest.raises(RecipeError) as exc:
            load_recipe(ASL_DAG, path)
        assert message in str(exc.value), path
        assert "\n" not in str(exc.value), path


def test_pipeline_cli_refuses_a_bad_override_before_running_anything(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    recipe = str(REPO_ROOT / "configs" / "run.yaml")
    with pytest.raises(SystemExit) as exc:
        asl_pipeline.main(["--mode", "dry-run", "--config", recipe, "train.epochs=x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith("error: train.epochs: --epochs: 'x' is not a number")
    assert not (tmp_path / "ws").exists()  # nothing was started


BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["train: {epochs: *i}"]
)


def test_hostile_recipe_files_are_refused_in_bounded_time(tmp_path) -> None:
    """Nested aliases (a few hundred bytes that expand to gigabytes), duplicate keys, bytes
    that are not UTF-8, a device and an oversized file: each one line, nothing expanded."""
    cases = {
        "laughs.yaml": (BILLION_LAUGHS.encode(), "aliases (*name) are not allowed at line 2"),
        "twice.yaml": (b"train:\n  epochs: 3\n  epochs: 40\n", "duplicate key 'epochs' at line 3"),
        "steps.yaml": (b"train: {epochs: 3}\ntrain: {lr: 1}\n", "duplicate key 'train'"),
        "latin1.yaml": ("train:\n  model: caf\u00e9\n".encode("latin-1"), "not UTF-8 text"),
        "huge.yaml": (b"#" * (70 * 1024), "larger than 65536 bytes"),
    }
    assert len(BILLION_LAUGHS) < 600
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
    paths = {name: tmp_path / name for name in cases}
    paths["/dev/zero"] = "/dev/zero"
    cases["/dev/zero"] = (b"", "not a regular file")
    paths["folder"] = tmp_path
    cases["folder"] = (b"", "not a regular file")
    for name, path in paths.items():
        with pytest.raises(RecipeError) as exc:
            read_file(path)
        assert cases[name][1] in str(exc.value), name
        assert "\n" not in str(exc.value), name
    # an anchor that is never referenced is plain YAML, and still reads
    (tmp_path / "anchor.yaml").write_text("train: &t {epochs: 3}\n")
    assert read_file(tmp_path / "anchor.yaml") == {"train.epochs": 3}


def test_pipeline_cli_refuses_a_device_as_recipe_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASL_WORKSPACE", str(tmp_path / "ws"))
    with pytest.raises(SystemExit) as exc:
        asl_pipeline.main(["--mode", "dry-run", "--config", "/dev/zero"])
    assert exc.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith("error: cannot read recipe /dev/zero: not a regular file")
