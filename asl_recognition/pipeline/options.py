"""The options of ``tasks/select_best.py``, declared once."""

from __future__ import annotations

from dataclasses import dataclass

from asl_recognition.options import option


@dataclass
class SelectBestOptions:
    """Promote the new model only if it beats the production model on a metric."""

    model_id: str | None = option(None, "registry id of the newly trained model", required=True)
    metric: str = option(
        "val_macro_f1",
        "registry metric to compare (e.g. test_accuracy; worst_holdout_accuracy: the lowest "
        "held-out group accuracy)",
    )
    metric_mode: str = option(
        "max", "max: a higher metric is better; min: lower is better", choices=("max", "min")
    )
    name: str = option("asl", "registered model name")
    holdout_tolerance: float = option(
        0.0,
        "quality gate: refuse a model whose accuracy on any held-out group (other signer or "
        "source) is more than this below production's",
        low=0.0,
        high=1.0,
    )
    holdout_gate: bool = option(True, "apply the held-out quality gate (off: --metric only)")
    min_worst_heldout: float = option(
        0.0,
        "refuse to promote a candidate whose worst held-out group accuracy is below this "
        "(0 = off; a candidate without held-out scores is refused when it is on)",
        low=0.0,
        high=1.0,
    )
    class_change: bool = option(
        False,
        "promote a candidate whose classes differ from production's, a change made on purpose "
        "(its metrics are then not compared: they are over other classes); off, it is kept",
    )
    prefer_int8: bool = option(
        False,
        "serve the promoted model's newest servable INT8 variant (tasks/optimize_model.py) "
        "whose accuracy is within --int8-tolerance of the fp32 model's, on the same photos "
        "(held-out when both have it, else test)",
    )
    int8_tolerance: float = option(
        0.01, "largest accuracy loss accepted for the INT8 variant", low=0.0, high=1.0
    )
    registry: str = option(
        "auto",
        "registry backend (auto: ClearML with a server, local without)",
        choices=("auto", "local", "clearml"),
    )


# Debian bookworm: Python 3.11 and glibc 2.36, which every pin of requirements.txt needs (the
# agent's own default image, Ubuntu 20.04 with Python 3.8, installs none of them).
DEFAULT_DOCKER_IMAGE = "python:3.11-slim-bookworm"
MODES = ("auto", "local-executor", "local", "queue", "dry-run")


@dataclass
class PipelineRunOptions:
    """How ``pipelines/asl_pipeline.py`` runs the DAG (the recipe says what it runs)."""

    config: str | None = option(
        None, "recipe file (configs/*.yaml) of step options; overrides follow as step.option=value"
    )
    mode: str = option(
        "auto",
        "local-executor: no server, each step a subprocess with an offline session, resumable; "
        "queue: the ClearML controller on agent queue --queue; local: the ClearML controller "
        "here; dry-run: print the controller DAG as JSON; auto: local with a configured "
        "server, else local-executor",
        choices=MODES,
    )
    queue: str = option("services", "agent queue the controller runs on (mode queue)")
    step_queue: str | None = option(
        None,
        "agent queue the steps run on (ClearML modes; empty: --queue in mode queue, "
        "this machine in mode local)",
    )
    cache: bool = option(True, "reuse cacheable steps (publish_dataset, train) of earlier runs")
    run_id: str | None = option(
        None,
        "local executor: continue (or create) this run; empty: resume the latest unfinished "
        "run started with the same parameters, else start a new one",
    )
    resume: bool = option(
        False, "local executor: resume the latest unfinished run with its own parameters"
    )
    new_run: bool = option(False, "local executor: always start a fresh run")
    from_step: str | None = option(
        None,
        "local executor: re-run this step and everything after it, reusing the ones before, "
        "in the run --run-id or --resume chooses",
    )
    list_runs: bool = option(False, "local executor: list local runs and exit")
    docker_image: str = option(
        DEFAULT_DOCKER_IMAGE,
        "ClearML modes: docker image of the controller and every step on a docker-mode agent "
        "(Python 3.11 or 3.12 and glibc >= 2.28 for requirements.txt; empty: the agent's default)",
    )


# What the controller on an agent reads of its run options: the others (recipe file, mode,
# queue, local-executor runs) were used where the pipeline was launched, so the controller task
# records only these, and the web UI shows no field that an edit would not change.
AGENT_RUN_FIELDS = ("step_queue", "cache", "docker_image")

# Tag on ASL_raw versions that the pipeline's own validate_raw creates (the trigger skips them).
PIPELINE_RUN_TAG = "asl-pipeline"


@dataclass
class TriggerOptions:
    """Start the ASL pipeline whenever a new ASL_raw dataset version appears (needs a server)."""

    queue: str = option("services", "agent queue the trigger service runs on")
    pipeline_queue: str = option(
        "services", "agent queue each launched pipeline controller runs on"
    )
    step_queue: str = option("default", "agent queue the pipeline steps run on")
    config: str | None = option(
        "configs/run.yaml", "recipe the launched pipelines run with (repo-relative)"
    )
    dataset_name: str = option("ASL_raw", "dataset (exact name) whose new versions trigger a run")
    poll_minutes: float = option(2.0, "how often the service polls the server", low=0.1)
    max_tries: int = option(
        3,
        "launches per version before giving up (a failed one is retried at the next poll)",
        low=1,
    )
    run_here: bool = option(False, "run the service loop in this process instead of on --queue")
    replace: bool = option(
        False,
        "stop the queued or running service of the same name and start this one (restart path; "
        "without it a second start is refused)",
    )
    docker_image: str = option(
        DEFAULT_DOCKER_IMAGE,
        "docker image of the service and of the pipelines it launches, on docker-mode agents "
        "(empty: the agent's default)",
    )
