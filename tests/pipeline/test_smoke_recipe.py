"""configs/smoke.yaml: the tests' recipe is make run's, with a few training steps.

Tests that need "the pipeline on the bundled data, quickly" run this file instead of building
``configs/run.yaml`` plus overrides each in its own way. It must stay make run's shape (same
sources, same steps, same model), so what passes with it passes for the same reasons with
``make run``; only the training budget differs.
"""

from __future__ import annotations

from asl_recognition.paths import REPO_ROOT
from asl_recognition.pipeline.clearml_controller import active_steps
from asl_recognition.pipeline.dag import ASL_DAG
from asl_recognition.pipeline.recipe import load_recipe

SMOKE = REPO_ROOT / "configs" / "smoke.yaml"
RUN = REPO_ROOT / "configs" / "run.yaml"
TRAINING_BUDGET = {"train/epochs", "train/max_steps", "train/patience", "train/keep"}
MAX_BATCHES = 10  # epochs x batches per epoch: seconds, not minutes


def test_smoke_recipe_loads_typed_through_the_recipe_loader() -> None:
    values = load_recipe(ASL_DAG, SMOKE)
    assert type(values["train/epochs"]) is int and type(values["train/max_steps"]) is int
    assert values["train/epochs"] * values["train/max_steps"] <= MAX_BATCHES
    assert values["train/external"] == "none"  # no phone-photo folder outside the repository
    for source in values["validate_raw/source"]:
        assert (REPO_ROOT / source.split("=", 1)[1]).is_dir(), source  # bundled, in the repo


def test_smoke_recipe_is_make_runs_recipe_with_a_smaller_training_budget() -> None:
    smoke, run = load_recipe(ASL_DAG, SMOKE), load_recipe(ASL_DAG, RUN)
    assert set(smoke) == set(run) | {"train/max_steps"}
    differ = {k for k in run if smoke[k] != run[k]}
    assert differ <= TRAINING_BUDGET | {"train/external"}, differ
    defaults = ASL_DAG.param_defaults()
    assert [s.name for s in active_steps(ASL_DAG, {**defaults, **smoke})] == [
        s.name for s in active_steps(ASL_DAG, {**defaults, **run})
    ]
