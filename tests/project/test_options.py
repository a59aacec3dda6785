"""Typed options: one declaration per option gives the CLI, the web-UI round trip and the DAG.

Every check runs over every options class, so an option added later is covered too.
"""

from __future__ import annotations

import ast
import dataclasses
from unittest import mock

import pytest
from clearml import PipelineController

from asl_recognition.data.options import (
    PublishDatasetOptions,
    PublishLandmarksOptions,
    ValidateRawOptions,
)
from asl_recognition.optimize.options import OptimizeOptions, PredictOptions
from asl_recognition.options import (
    OptionError,
    as_params,
    build_parser,
    convert,
    from_mapping,
    missing,
    parse,
    settle,
    specs,
    to_argv,
    value_as_text,
)
from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline import clearml_controller
from asl_recognition.pipeline.dag import ASL_DAG, param_name
from asl_recognition.pipeline.options import PipelineRunOptions, SelectBestOptions, TriggerOptions
from asl_recognition.serving.options import BuildTritonRepoOptions
from asl_recognition.training.options import LosoOptions, TrainOptions

OPTION_CLASSES = [
    ValidateRawOptions,
    PublishDatasetOptions,
    TrainOptions,
    SelectBestOptions,
    BuildTritonRepoOptions,
    PipelineRunOptions,
    TriggerOptions,
    PublishLandmarksOptions,
    OptimizeOptions,
    PredictOptions,
    LosoOptions,
]
ENTRY_SCRIPTS = sorted(REPO_ROOT.glob("tasks/*.py")) + sorted(REPO_ROOT.glob("pipelines/*.py"))


def spec_of(cls: type, name: str):
    return next(s for s in specs(cls) if s.name == name)


def test_generated_cli_defaults_flags_and_lists() -> None:
    assert parse(TrainOptions, []) == TrainOptions()
    opts = parse(TrainOptions, ["--epochs", "3", "--no-register", "--lr", "1e-4", "--resume"])
    assert (opts.epochs, opts.register, opts.lr, opts.resume) == (3, False, 1e-4, True)
    flags = {a.option_strings[0] for a in build_parser(TrainOptions, "")._actions}
    assert {"--register", "--no-register"} <= {
        s for a in build_parser(TrainOptions, "")._actions for s in a.option_strings
    }
    assert {s.flag for s in specs(TrainOptions)} <= flags
    # lists: repeated flags extend, commas split, numbers are typed
    pub = parse(PublishDatasetOptions, ["--raw-version", "a", "b", "--raw-version", "c,d"])
    assert pub.raw_version == ["a", "b", "c", "d"]
    assert parse(PublishDatasetOptions, ["--split", "0.6,0.2,0.2"]).split == [0.6, 0.2, 0.2]
    assert parse(PublishDatasetOptions, ["--split", "0.6", "0.2", "0.2"]).split == [0.6, 0.2, 0.2]


def test_settle_types_its_changes_as_the_command_line_does() -> None:
    """A stage called with text (a config file, a test, the web UI) gets the CLI's typed value,
    and a bad or unknown change fails with the CLI's one-line message."""
    base = PublishDatasetOptions(image_size=32)
    settled = settle(PublishDatasetOptions, base, split="0.6,0.2,0.2", workers="2")
    assert (settled.split, settled.workers, settled.image_size) == ([0.6, 0.2, 0.2], 2, 32)
    assert settled == parse(
        PublishDatasetOptions, ["--split", "0.6,0.2,0.2", "--workers", "2", "--image-size", "32"]
    )
    with pytest.raises(OptionError, match="^--workers: 0 is below the smallest allowed value 1$"):
        settle(PublishDatasetOptions, workers=0)
    with pytest.raises(OptionError, match="unknown option.s.: image_sise"):
        settle(PublishDatasetOptions, image_sise=64)


def test_nothing_is_required_on_the_command_line_only_after_task_init() -> None:
    """An agent runs scripts with no arguments: parsing succeeds, ``missing`` names the gap."""
    for cls in OPTION_CLASSES:
        assert parse(cls, []) == cls()
    assert missing(SelectBestOptions()) == ["--model-id"]
    assert missing(parse(SelectBestOptions, ["--model-id", "m1"])) == []


@pytest.mark.parametrize("cls", OPTION_CLASSES, ids=lambda c: c.__name__)
def test_web_ui_text_round_trip_of_every_default(cls) -> None:
    """What the web UI shows (``str(value)``) comes back as the declared value and type; an
    empty value of an option whose skip word is ``none`` (``--external``) is shown empty, as
    ``connect_options`` stores it: ``None`` there means the skip word."""
    skips = {s.name for s in specs(cls) if s.remote_fallback}
    shown = {
        name: "" if name in skips and value is None else str(value)
        for name, value in as_params(cls()).items()
    }
    assert from_mapping(cls, shown) == cls()
    # and the generated command line of the defaults parses back to the defaults
    assert parse(cls, to_argv(cls, as_params(cls()))) == cls()


def test_web_ui_edits_are_typed_again() -> None:
    train = from_mapping(
        TrainOptions, {"epochs": "40", "register": "False", "weights": "", "lr": "5e-4"}
    )
    assert (train.epochs, train.register, train.weights, train.lr) == (40, False, None, 5e-4)
    assert type(train.epochs) is int and type(train.lr) is float
    pub = from_mapping(
        PublishDatasetOptions,
        {"holdout_source": "['a', 'b']", "split": "[0.6, 0.2, 0.2]", "raw_version": "x,y"},
    )
    assert (pub.holdout_source, pub.split, pub.raw_version) == (
        ["a", "b"],
        [0.6, 0.2, 0.2],
        ["x", "y"],
    )
    raw = from_mapping(ValidateRawOptions, {"min_per_class": "", "workers": "None"})
    assert (raw.min_per_class, raw.workers) == (None, None)
    assert from_mapping(ValidateRawOptions, {"min_per_class": "5"}).min_per_class == 5
    for word, value in (("true", True), ("0", False), ("off", False), ("Yes", True)):
        assert convert(spec_of(TrainOptions, "register"), word) is value


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (TrainOptions, {"epochs": "forty"}, "--epochs: 'forty' is not a number"),
        (TrainOptions, {"epochs": "1.5"}, "--epochs: '1.5' is not a whole number"),
        (TrainOptions, {"epochs": "0"}, "--epochs: '0' is below the smallest allowed value 1"),
        (TrainOptions, {"lr": "nan"}, "--lr: 'nan' is not a finite number"),
        (TrainOptions, {"model": "vgg"}, "--model: 'vgg' is not one of 'cnn'"),
        (TrainOptions, {"register": "maybe"}, "--register: 'maybe' is not a yes/no value"),
        (TrainOptions, {"epochs": True}, "--epochs: True is not a number"),
        (PublishDatasetOptions, {"split": "[0.6,"}, "'[0.6,' is not a list"),
        (PublishDatasetOptions, {"image_size": "4096"}, "above the largest allowed value 1024"),
        (SelectBestOptions, {"model_idd": "m"}, "unknown option(s): model_idd"),
        (SelectBestOptions, {"metric": None}, "--metric: a value is needed"),
        # a yes/no field cleared in the web UI is no answer (it had turned gates off)
        (SelectBestOptions, {"holdout_gate": ""}, "--holdout-gate: '' is not a yes/no value"),
        (TrainOptions, {"register": " "}, "--register: ' ' is not a yes/no value"),
        # seeds numpy and torch cannot take: one line, not a traceback in torch.manual_seed
        (TrainOptions, {"seed": "1e30"}, "above the largest allowed value 4294967295"),
        (TrainOptions, {"seed": "-1"}, "--seed: '-1' is below the smallest allowed value 0"),
    ],
)
def test_bad_values_give_one_line_errors(cls, values, message) -> None:
    with pytest.raises(OptionError) as exc:
        from_mapping(cls, values)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_whole_numbers_are_read_exactly_and_3_0_still_counts() -> None:
    """Through a float, 2**53 + 1 became 2**53: another value, with no message."""
    big = str(2**53 + 1)
    assert from_mapping(TrainOptions, {"max_steps": big}).max_steps == 2**53 + 1
    assert from_mapping(TrainOptions, {"epochs": "3.0", "seed": "+7"}).epochs == 3
    assert from_mapping(TrainOptions, {"seed": "+7"}).seed == 7


def test_values_starting_with_a_dash_survive_the_generated_command_line() -> None:
    """The local executor's argv: ``--flag -x`` made argparse read ``-x`` as a flag."""
    pub = settle(PublishDatasetOptions, signer_pattern="-s(\\d+)", holdout_group=["-a", "b"])
    argv = to_argv(PublishDatasetOptions, as_params(pub))
    assert parse(PublishDatasetOptions, argv) == pub


def test_bad_cli_value_exits_2_with_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(TrainOptions, ["--epochs", "forty"])
    assert exc.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert (
        len(error_lines) == 1 and "--epochs" in error_lines[0] and "not a number" in error_lines[0]
    )


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "attr", None) == name or getattr(node.func, "id", None) == name)
    ]


@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=lambda p: p.name)
def test_no_entry_script_declares_its_own_option(script) -> None:
    """Options come only from the dataclasses: no ``add_argument("--x")`` in a script."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    for call in _calls(tree, "add_argument"):
        flags = [a.value for a in call.args if isinstance(a, ast.Constant)]
        assert not any(str(f).startswith("-") for f in flags), (script.name, flags)


def test_every_step_script_parses_and_connects_its_dag_options_class() -> None:
    """The class the DAG overrides is the class the script hands to task_entry (which parses it,
    connects it in init_task and gives the work the connected, typed object)."""
    for step in ASL_DAG.steps:
        tree = ast.parse((REPO_ROOT / step.script).read_text(encoding="utf-8"))
        (entry,) = _calls(tree, "task_entry")
        assert isinstance(entry.args[0], ast.Name), step.script
        assert entry.args[0].id == step.options.__name__, step.script
        assert not _calls(tree, "parse") and not _calls(tree, "init_task"), step.script


def test_cli_dag_and_connected_defaults_agree_for_every_step_option() -> None:
    """For every step and option: CLI default == as_params(Options()) == DAG parameter default,
    and the real PipelineController is given it as text its option reads back."""
    mock_controller_cls = mock.create_autospec(PipelineController)
    clearml_controller.build_controller(
        ASL_DAG, {}, base_task_id=lambda s: "t", controller_cls=mock_controller_cls
    )
    added = {
        c.kwargs["name"]: c.kwargs
        for c in mock_controller_cls.return_value.add_parameter.call_args_list
    }
    params = {p.name: p for p in ASL_DAG.params}
    for step in ASL_DAG.steps:
        cli = as_params(parse(step.options, []))
        connected = as_params(step.options())
        assert cli == connected, step.name
        for spec in specs(step.options):
            if spec.name in step.wired:
                assert param_name(step, spec.name) not in params
                continue
            key = param_name(step, spec.name)
            assert params[key].default == connected[spec.name], key
            assert (params[key].type, params[key].is_list) == (spec.base, spec.is_list), key
            # declared as text, typed by the option (the SDK would re-type edits by the default)
            assert added[key]["default"] == value_as_text(connected[spec.name]), key
            assert convert(spec, added[key]["default"]) == connected[spec.name], key
            assert added[key]["param_type"] == "str", key
            assert (
                added[key]["description"] == f"{spec.help} ({spec.type_name.split(' ')[0]})"
            ), key
    # every parameter is either a step option or the one pipeline-level raw_version
    assert set(added) == set(params)
    assert [k for k in params if "/" not in k] == ["raw_version"]


def test_option_declarations_are_dataclass_fields_with_help() -> None:
    for cls in OPTION_CLASSES:
        for field in dataclasses.fields(cls):
            assert field.metadata.get("help"), (cls.__name__, field.name)


def test_stage_functions_take_their_tasks_options_instead_of_restating_defaults() -> None:
    """A stage function gets the typed options (``settings``, changes by field name); none of its
    own parameters may repeat an option with a default of its own (the positional shortcut
    named here excepted)."""
    import inspect

    from asl_recognition.data.landmarks import publish_landmarks
    from asl_recognition.data.options import (
        PublishDatasetOptions,
        PublishLandmarksOptions,
        ValidateRawOptions,
    )
    from asl_recognition.data.publish import publish_dataset
    from asl_recognition.data.raw import validate_raw
    from asl_recognition.serving.options import BuildTritonRepoOptions
    from asl_recognition.serving.repository import build_repository

    for function, options, shortcut in (
        (validate_raw, ValidateRawOptions, {"source"}),
        (publish_dataset, PublishDatasetOptions, set()),
        (publish_landmarks, PublishLandmarksOptions, {"dataset_version"}),
        (build_repository, BuildTritonRepoOptions, set()),
    ):
        params = inspect.signature(function).parameters
        restated = {spec.name for spec in specs(options)} & set(params) - shortcut
        assert not restated, (function.__name__, restated)
        assert params["settings"].default is None and "changes" in params, function.__name__
        for name in shortcut:
            assert params[name].default is None, (function.__name__, name)


@pytest.mark.parametrize(
    "name, text",
    [
        ("split", "(5)"),  # the number 5: list(5) was a TypeError, a traceback for the task
        ("split", "(0.5)"),
        ("holdout_source", "('massey')"),  # the text 'massey': it became its six letters
        ("holdout_source", "[massey, webcam]"),  # no literal: the message did not say which option
    ],
)
def test_bracketed_text_that_is_no_list_is_refused_naming_its_option(name, text) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(OptionError) as exc:
        from_mapping(PublishDatasetOptions, {name: text})
    assert str(exc.value).startswith(f"{flag}: {text!r} is not a list"), str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_pasted_megabyte_is_refused_in_a_short_line() -> None:
    """The error echoed the whole value: a megabyte 'line' in the log and the task's status."""
    for cls, values in (
        (TrainOptions, {"epochs": "9" * 10**6 + "x"}),
        (PublishDatasetOptions, {"holdout_source": "[" * 10**5}),
    ):
        with pytest.raises(OptionError) as exc:
            from_mapping(cls, values)
        assert len(str(exc.value)) < 300, str(exc.value)[:300]


@pytest.mark.parametrize(
    "text, said",
    [
        ("1,0,0", "--split 1 0 0: the val, test split(s) would be empty"),
        ("0.7,0.3", "--split needs three numbers TRAIN VAL TEST"),
        ("", "--split needs three numbers TRAIN VAL TEST"),  # cleared in the web UI
    ],
)
def test_a_split_its_stage_would_refuse_is_refused_where_it_is_typed(text, said) -> None:
    """Checked by the stage only, after the steps before it had run; and an empty one was left
    out of the local executor's command line, so that executor ran the default split while a
    ClearML step refused it."""
    with pytest.raises(OptionError) as exc:
        from_mapping(PublishDatasetOptions, {"split": text})
    assert said in str(exc.value)


def test_pipeline_parameter_errors_name_their_step() -> None:
    """``--image-size`` alone does not say whether train's or publish_dataset's was edited."""
    with pytest.raises(OptionError) as exc:
        clearml_controller.stored_parameters(ASL_DAG, {"Args/train/image_size": "-1"})
    assert str(exc.value).startswith("train/image_size: --image-size: '-1' is below")


def test_options_tables_show_a_default_named_none() -> None:
    """``--balance``'s default is the choice 'none', which the table showed as no default."""
    text = (REPO_ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    assert "| `--balance {none,source}` | `none` |" in text
