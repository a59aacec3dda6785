"""The ASL pipeline, written once as data: steps, their scripts, parameters and references.

Both executors read this: the local executor (``local_executor.py``, no server) runs each step as
``python <script> --option value ...``; the ClearML controller (``clearml_controller.py``) turns
each step into ``PipelineController.add_step`` with ``Args/<option>`` overrides.

References inside step arguments:

- ``${pipeline.NAME}``: a pipeline parameter (editable in the ClearML web UI);
- ``${STEP.outputs.KEY}``: a value the step recorded with ``TaskContext.record_outputs`` (ids, not
  files: datasets and models are fetched by id from the store / registry). On ClearML this becomes
  ``${STEP.parameters.Outputs/KEY}`` because outputs are stored as ``Outputs/*`` task parameters.

A step's parents are the steps its arguments reference, so the graph cannot disagree with the data
flow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from asl_recognition.data.options import (
    PublishDatasetOptions,
    PublishLandmarksOptions,
    ValidateRawOptions,
)
from asl_recognition.options import specs
from asl_recognition.pipeline.options import PIPELINE_RUN_TAG, SelectBestOptions
from asl_recognition.serving.options import BuildTritonRepoOptions
from asl_recognition.training.options import TrainOptions

REF_RE = re.compile(r"\$\{([A-Za-z_]\w*)\.(?:(outputs)\.)?([\w/-]+)\}")
PIPELINE_SCOPE = "pipeline"


class UnresolvedReference(KeyError):
    """A ``${...}`` reference names a parameter or output that does not exist (yet)."""


@dataclass(frozen=True)
class PipelineParam:
    """A pipeline-level parameter: shown in ``--help`` and in the ClearML web UI.

    Step options become parameters named ``<step>/<option>``, with the type, default and help
    of the option's one declaration (:func:`step_params`).
    """

    name: str
    default: Any
    help: str
    type: type = str
    is_list: bool = False


@dataclass(frozen=True)
class Step:
    """One task script, its options class and which options are wired to other steps.

    ``wired`` maps an option to a reference (``${STEP.outputs.KEY}`` or ``${pipeline.NAME}``);
    every other option is the pipeline parameter ``<step>/<option>``.

    ``cache``: reuse a previous execution when the resolved arguments and the code are
    unchanged. Only safe for steps whose inputs are immutable ids (a dataset id, a model id with
    fixed hyper-parameters); a step reading a folder path or the registry's current state must
    run every time (the folder may change under the same path: clearml#971).

    ``rerun_on_resume``: the step reads state that others may change while a run is stopped
    (the registry's production model), so a resumed run runs it again instead of reusing its
    earlier answer: a run resumed after another run promoted a model must not build the
    repository of the model it had chosen before.

    ``skip_when``: name of a pipeline parameter; when it is set, the step is not run and its
    outputs are taken from ``skip_outputs`` (e.g. an existing ``ASL_raw`` version is given, so
    the raw folder is not validated again). ``only_when=(param, value)``: the step runs only
    when the parameter has that value (landmarks are measured only for the landmark model).
    """

    name: str
    script: str
    options: type
    wired: Mapping[str, str]
    outputs: tuple[str, ...]
    cache: bool = False
    task_type: str = "data_processing"
    help: str = ""
    skip_when: str | None = None
    skip_outputs: Mapping[str, Any] = field(default_factory=dict)
    only_when: tuple[str, Any] | None = None
    rerun_on_resume: bool = False

    def skip_reason(self, params: Mapping[str, Any]) -> str | None:
        """Why the step does not run with ``params`` (``skip_when`` set, ``only_when`` unmet)."""
        if self.skip_when and params.get(self.skip_when) not in (None, ""):
            return f"{self.skip_when}={params[self.skip_when]!r}"
        if self.only_when and params.get(self.only_when[0]) != self.only_when[1]:
            name, wanted = self.only_when
            return f"{name}={params.get(name)!r}; it runs only for {wanted!r}"
        return None

    @property
    def args(self) -> dict[str, Any]:
        """Every option's value: its wiring, or a reference to its pipeline parameter."""
        return {
            spec.name: self.wired.get(spec.name, "${pipeline.%s}" % param_name(self, spec.name))
            for spec in specs(self.options)
        }

    @property
    def parents(self) -> tuple[str, ...]:
        found: list[str] = []
        for value in self.wired.values():
            for scope, _key in references(value):
                if scope != PIPELINE_SCOPE and scope not in found:
                    found.append(scope)
        return tuple(found)


def param_name(step: Step, option: str) -> str:
    """The pipeline parameter of a step option (``train/epochs``; recipes say ``train.epochs``)."""
    return f"{step.name}/{option}"


def step_params(steps: tuple[Step, ...]) -> tuple[PipelineParam, ...]:
    """A pipeline parameter for every option that is not wired to another step."""
    out = []
    for step in steps:
        for spec in specs(step.options):
            if spec.name not in step.wired:
                out.append(
                    PipelineParam(
                        param_name(step, spec.name),
                        spec.default,
                        spec.help,
                        spec.base,
                        spec.is_list,
                    )
                )
    return tuple(out)


@dataclass(frozen=True)
class Dag:
    """Pipeline parameters plus steps in execution order."""

    name: str
    project: str
    params: tuple[PipelineParam, ...]
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"no step named {name!r}; steps: {', '.join(self.step_names())}")

    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def param_defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def descendants(self, name: str) -> list[str]:
        """``name`` and every step that depends on it, in execution order."""
        affected = {name}
        for step in self.steps:
            if any(p in affected for p in step.parents):
                affected.add(step.name)
        return [s.name for s in self.steps if s.name in affected]

    def validate(self) -> None:
        """Every reference names a known parameter or an earlier step's declared output."""
        params = {p.name for p in self.params}
        seen: dict[str, Step] = {}
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"duplicate step name {step.name!r}")
            for option, value in step.args.items():
                for scope, key in references(value):
                    where = f"step {step.name!r} option {option!r}"
                    if scope == PIPELINE_SCOPE:
                        if key not in params:
                            raise ValueError(f"{where}: unknown pipeline parameter {key!r}")
                    elif scope not in seen:
                        raise ValueError(f"{where}: {scope!r} is not an earlier step")
                    elif key not in seen[scope].outputs:
                        raise ValueError(f"{where}: step {scope!r} has no output {key!r}")
            for name in (step.skip_when, step.only_when[0] if step.only_when else None):
                if name and name not in params:
                    raise ValueError(f"step {step.name!r}: unknown parameter {name!r}")
            seen[step.name] = step


def references(value: Any) -> list[tuple[str, str]]:
    """``[(scope, key)]`` for every ``${...}`` in ``value`` (scope is a step or ``pipeline``)."""
    if not isinstance(value, str):
        return []
    return [(m.group(1), m.group(3)) for m in REF_RE.finditer(value)]


def filled_value(
    value: Any, params: Mapping[str, Any], outputs: Mapping[str, Mapping[str, Any]]
) -> Any:
    """``value`` with its ``${...}`` references filled in; exactly one reference keeps its type."""
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> Any:
        scope, key = match.group(1), match.group(3)
        if scope == PIPELINE_SCOPE:
            if key not in params:
                raise UnresolvedReference(f"pipeline parameter {key!r} is not set")
            return params[key]
        if scope not in outputs or key not in outputs[scope]:
            raise UnresolvedReference(f"step {scope!r} recorded no output {key!r}")
        return outputs[scope][key]

    whole = REF_RE.fullmatch(value)
    if whole:
        return lookup(whole)
    return REF_RE.sub(lambda m: "" if (v := lookup(m)) is None else str(v), value)


def to_clearml_reference(value: Any) -> Any:
    """``${s.outputs.k}`` -> ``${s.parameters.Outputs/k}``; pipeline references stay as is."""
    if not isinstance(value, str):
        return value
    return REF_RE.sub(
        lambda m: (
            m.group(0)
            if m.group(1) == PIPELINE_SCOPE
            else "${%s.parameters.Outputs/%s}" % (m.group(1), m.group(3))
        ),
        value,
    )


RAW_VERSION = PipelineParam(
    "raw_version",
    "",
    "use this existing ASL_raw version/id instead of validating validate_raw/source",
)

STEPS: tuple[Step, ...] = (
    Step(
        name="validate_raw",
        script="tasks/validate_raw.py",
        options=ValidateRawOptions,
        # the new-data trigger skips versions carrying this tag: they are this pipeline's own
        wired={"tags": PIPELINE_RUN_TAG},
        outputs=("raw_dataset_id", "report_path", "success", "valid", "quarantined"),
        # Reads a folder path whose content may change under the same name: never cached.
        cache=False,
        task_type="data_processing",
        help="scan + Great Expectations, publish every raw file as an ASL_raw version",
        skip_when="raw_version",
        skip_outputs={"raw_dataset_id": "${pipeline.raw_version}"},
    ),
    Step(
        name="publish_dataset",
        script="tasks/publish_dataset.py",
        options=PublishDatasetOptions,
        wired={"raw_version": "${validate_raw.outputs.raw_dataset_id}"},
        outputs=("dataset_id", "dataset_version", "reused"),
        cache=True,
        task_type="data_processing",
        help="leakage-safe grouped split, resize once, publish ASL (parent ASL_raw)",
    ),
    Step(
        name="publish_landmarks",
        script="tasks/publish_landmarks.py",
        options=PublishLandmarksOptions,
        wired={"dataset_version": "${publish_dataset.outputs.dataset_id}"},
        outputs=("landmarks_id", "landmarks_version", "hand_found_rate", "reused"),
        cache=True,
        task_type="data_processing",
        help="hand landmarks of every ASL image as ASL_landmarks (parents ASL, ASL_raw)",
        only_when=("train/model", "landmarks"),
        skip_outputs={"landmarks_id": "latest"},
    ),
    Step(
        name="train",
        script="tasks/train.py",
        options=TrainOptions,
        wired={
            "dataset_version": "${publish_dataset.outputs.dataset_id}",
            "landmarks_version": "${publish_landmarks.outputs.landmarks_id}",
        },
        outputs=(
            "model_id",
            "onnx_path",
            "onnx_uri",
            "classes_path",
            "run_dir",
            "val_macro_f1",
            "test_accuracy",
            "test_macro_f1",
            "external_accuracy",
            "holdout_accuracy",
        ),
        cache=True,
        task_type="training",
        help="train, export ONNX with preprocessing inside, register the model",
    ),
    Step(
        name="select_best",
        script="tasks/select_best.py",
        options=SelectBestOptions,
        wired={"model_id": "${train.outputs.model_id}"},
        outputs=("production_model_id", "promoted"),
        # Depends on the registry's current production model, not only on its arguments.
        cache=False,
        rerun_on_resume=True,
        task_type="qc",
        help="promote the new model only if it beats production on the metric",
    ),
    Step(
        name="build_triton_repo",
        script="tasks/build_triton_repo.py",
        options=BuildTritonRepoOptions,
        # require_production: a model that another run promoted over since this run's
        # select_best chose it is not built (that run's own build serves its model)
        wired={
            "model_id": "${select_best.outputs.production_model_id}",
            "require_production": "true",
        },
        outputs=("repo", "model_name", "version"),
        cache=False,
        rerun_on_resume=True,
        task_type="inference",
        help="regenerate the Triton repository from the production model",
    ),
)

ASL_DAG = Dag(
    name="asl_pipeline",
    project="ASL",
    params=(RAW_VERSION, *step_params(STEPS)),
    steps=STEPS,
)
ASL_DAG.validate()
