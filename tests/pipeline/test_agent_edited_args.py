"""Values a person types into a step's ``Args`` in the web UI, run as clearml-agent runs the step.

Each test starts ``python -u tasks/<step>.py`` with no arguments from an agent's checkout, with
the agent's variables, against the **mock** ClearML server on loopback
(``asl_testkit.clearml_stub``), as ``test_clean_agent.py`` does. The step must run with the value
the web UI shows, or refuse it in one line; it never writes outside its workspace.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from asl_testkit.clearml_stub import MockClearmlServer, SeededTask, agent_checkout, agent_env

from asl_recognition.paths import REPO_ROOT, SAMPLE_DATA
from asl_recognition.serving.repo_manifest import problems

pytestmark = pytest.mark.clean_agent

DEADLINE_S = 240


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent's checkout of this working tree (uncommitted work included)."""
    return agent_checkout(REPO_ROOT, tmp_path_factory.mktemp("agent") / "checkout")


@pytest.fixture(scope="module")
def one_per_class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundled photo of every class: a raw folder validate_raw accepts with a minimum of 1."""
    root = tmp_path_factory.mktemp("raw")
    for folder in sorted(p for p in SAMPLE_DATA.iterdir() if p.is_dir()):
        (root / folder.name).mkdir()
        first = sorted(folder.glob("*.jpg"))[0]
        shutil.copy2(first, root / folder.name / first.name)
    return root


def run_step(
    script: str, params: dict[str, str], checkout: Path, folder: Path
) -> tuple[subprocess.CompletedProcess, MockClearmlServer]:
    """``python -u <script>`` as the agent starts it for a task holding ``params``."""
    task_id = f"task-{Path(script).stem}"
    with MockClearmlServer() as server:
        seeded = SeededTask(Path(script).stem, "ASL", "data_processing", params, script)
        server.seed_task(task_id, seeded)
        env = agent_env(task_id, server, folder / "home")
        env.update(ASL_WORKSPACE=str(folder / "workspace"), ASL_HAND_MODELS=str(folder / "hm"))
        done = subprocess.run(
            [sys.executable, "-u", script],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
    return done, server


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_dataset_name_cannot_put_its_report_outside_the_workspace(
    checkout: Path, one_per_class: Path, tmp_path: Path, where: str
) -> None:
    """``Args/name`` names the report folder ``reports/<name>/``: ``../../escaped`` or an
    absolute name had written report.json, scan.csv and the Data Docs outside the workspace,
    and published the dataset under that name."""
    escaped = tmp_path / "escaped"
    name = "../../escaped" if where == "relative" else str(escaped)
    params = {"Args/source": str(one_per_class), "Args/min_per_class": "1", "Args/name": name}
    done, server = run_step("tasks/validate_raw.py", params, checkout, tmp_path)
    last = [line for line in done.stderr.splitlines() if line.strip()][-1:]
    assert done.returncode == 2, done.stderr[-3000:]
    assert last and last[0].startswith("validate_raw: error: --name "), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not escaped.exists(), sorted(p.name for p in escaped.rglob("*"))
    assert server.tasks["task-validate_raw"]["status"] == "failed"
    assert not [t for t in server.tasks.values() if "dataset" in t["system_tags"]]


def test_the_uploaded_repository_holds_only_the_models_the_build_wrote(
    checkout: Path, tmp_path: Path
) -> None:
    """``Args/repo`` naming a folder that holds other files (``.`` is the agent's checkout, a
    home folder has ``.ssh``): only the built model folders go into the ``triton_repo``
    artifact; the whole folder had been zipped and uploaded to the files server."""
    from asl_testkit.tiny_models import contract_onnx

    from asl_recognition.classes import CLASSES, write_class_file

    onnx = contract_onnx(tmp_path / "model" / "model.onnx")
    write_class_file(str(tmp_path / "model" / "classes.txt"), CLASSES)
    repo = tmp_path / "shared_folder"
    (repo / ".ssh").mkdir(parents=True)
    (repo / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (repo / "notes.txt").write_text("not a model\n")
    params = {
        "Args/onnx": str(onnx),
        "Args/classes": str(tmp_path / "model" / "classes.txt"),
        "Args/repo": str(repo),
    }
    done, server = run_step("tasks/build_triton_repo.py", params, checkout, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (blob,) = [data for name, data in server.files.items() if name.endswith(".zip")]
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        archive.extractall(tmp_path / "downloaded")
    assert tops == {"asl", "asl_onnx", "asl_metrics", ".asl-manifest.json"}, sorted(tops)
    # the record travels with the models: a downloaded copy is checked, and passes
    assert problems(tmp_path / "downloaded") == []
    (tmp_path / "downloaded" / "asl_onnx" / "config.pbtxt").write_text("edited")
    assert problems(tmp_path / "downloaded") == ["asl_onnx/config.pbtxt"]
    assert (repo / "notes.txt").exists() and (repo / "asl_onnx" / "config.pbtxt").exists()


def test_a_storage_url_as_source_is_refused_in_one_line_naming_it(
    checkout: Path, tmp_path: Path
) -> None:
    """No step downloads a storage URL: ``Args/source`` = ``https://.../raw.zip`` had been read
    as the local path ``<checkout>/https:/...`` and refused as a file that does not exist."""
    url = "https://files.example.com/asl_raw.zip"
    params = {"Args/source": url, "Args/min_per_class": "1"}
    done, _ = run_step("tasks/validate_raw.py", params, checkout, tmp_path)
    last = [line for line in done.stderr.splitlines() if line.strip()][-1:]
    assert done.returncode == 2, done.stderr[-3000:]
    assert last == [
        f"validate_raw: error: --source {url!r}: a storage URL, which validate_raw does not "
        "download: download it and give the folder or .zip"
    ], done.stderr[-3000:]


def test_a_clone_refused_at_its_options_shows_no_outputs_of_the_run_it_copied(
    checkout: Path, tmp_path: Path
) -> None:
    """A web-UI clone (or reset) keeps the ``Outputs/*`` of the run it copies; one refused at
    its options had shown that run's dataset id, success and counts as its own."""
    params = {
        "Args/min_per_class": "ten",
        "Outputs/raw_dataset_id": "0123456789abcdef0123456789abcdef",
        "Outputs/success": "True",
        "Outputs/valid": "87000",
    }
    done, server = run_step("tasks/validate_raw.py", params, checkout, tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "--min-per-class: 'ten' is not a number" in done.stderr
    assert server.tasks["task-validate_raw"]["hyperparams"].get("Outputs", {}) == {}
