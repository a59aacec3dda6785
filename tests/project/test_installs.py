"""Install checks: what an agent and the CI runner install is enough for what they run.

- ``requirements.txt`` (what every step installs on an agent) resolves for the agent image's
  Python and platform (``python:3.11-slim-bookworm``: CPython 3.11, glibc 2.36), and not for
  Python 3.10, so the check can fail. pip reads this machine's config (local wheel folders,
  ``/etc/xdg/pip`` constraints) as it would anywhere; a runner without them resolves from PyPI.
- The enqueue job of ``.github/workflows/pipeline.yml`` is run as the runner runs it: its own
  ``run:`` install lines in a fresh venv, on a fresh copy of the repository, then its enqueue
  command in ``--mode dry-run`` (no server). Every package it installs is imported there.
- The other workflows install every pinned tool their ``run:`` lines call (a static check).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from asl_recognition.paths import REPO_ROOT

STEPS_REQS = "requirements.txt"
REQS_FILES = ("requirements.txt", "requirements-serving.txt", "requirements-dev.txt")  # make's
OTHER_REQS = ("requirements-serving.txt", "requirements-dev.txt")
ENQUEUE_REQS = "requirements-enqueue.txt"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
DAG_MARKER = "=== PipelineController DAG ==="
# The agent image (python:3.11-slim-bookworm) has glibc 2.36: every manylinux tag up to it.
IMAGE_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)] + [
    "manylinux2014_x86_64"
]


def canonical(name: str) -> str:
    """PEP 503 name: ``PyYAML`` -> ``pyyaml``, ``tritonclient[http,grpc]`` -> ``tritonclient``."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def pins(filename: str) -> dict[str, str]:
    """canonical name -> version of every ``name==version`` line of a requirements file."""
    found = {}
    for line in (REPO_ROOT / filename).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonical(name)] = version
    return found


def supported_by_pyproject(python_version: str) -> bool:
    """pyproject.toml's ``requires-python`` (its ``>=`` and ``<`` clauses) admits the version."""
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    version = tuple(int(part) for part in python_version.split("."))
    for clause in requires["requires-python"].split(","):
        op, bound = re.fullmatch(r"\s*(>=|<)\s*([\d.]+)\s*", clause).groups()
        limit = tuple(int(part) for part in bound.split("."))
        if (op == ">=" and version < limit) or (op == "<" and version >= limit):
            return False
    return True


def resolve(python_version: str, report: Path) -> subprocess.CompletedProcess:
    """``pip install --dry-run`` of requirements.txt for another interpreter and platform."""
    abi = "cp" + python_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    cmd += ["--only-binary=:all:", "--python-version", python_version]
    cmd += ["--implementation", "cp", "--abi", abi, "--quiet", "--report", str(report)]
    for platform in IMAGE_PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["-r", str(REPO_ROOT / STEPS_REQS)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("python_version", ["3.11", "3.12"])
def test_steps_requirements_resolve_for_the_agent_image(tmp_path: Path, python_version) -> None:
    """The agent image's 3.11, and 3.12 (Ubuntu 24.04's python3 on a venv-mode agent)."""
    report = tmp_path / "report.json"
    proc = resolve(python_version, report)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert supported_by_pyproject(python_version)
    chosen = {
        canonical(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    for name, version in pins(STEPS_REQS).items():
        assert chosen.get(name) == version, f"{name}=={version} resolved as {chosen.get(name)}"


def test_the_project_itself_requires_the_runtime_pins(tmp_path: Path) -> None:
    """A clearml-agent set to uv runs ``uv sync`` on a checkout with a
    pyproject.toml, installing the project and what it requires, and ignores both the task's
    package list and requirements.txt (clearml-agent 3.0.3: helper/package/uv_api.py,
    commands/worker.py). The project declared no dependencies, so such an agent installed
    nothing and every step failed on ``import clearml``. Built by pip from a copy of the
    project's metadata (pyproject.toml, requirements.txt, the package's __init__.py)."""
    for name in ("pyproject.toml", STEPS_REQS, "asl_recognition/__init__.py"):
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, tmp_path / "src" / name)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed"]
    cmd += ["--quiet", "--report", str(report), str(tmp_path / "src")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (project,) = json.loads(report.read_text())["install"]
    required = {}
    for line in project["metadata"].get("requires_dist", []):
        name, version = re.fullmatch(r"([\w.-]+)(?:\[[\w,]+\])?==([\w.]+)", line).groups()
        required[canonical(name)] = version
    assert required == pins(STEPS_REQS)


@pytest.mark.parametrize("python_version", ["3.10", "3.13"])
def test_other_pythons_cannot_install_the_steps_requirements(
    tmp_path: Path, python_version
) -> None:
    """The check can fail: the agent's interpreter matters (Ubuntu 22.04's python3 is 3.10; numpy
    1.26.4, held below 2 by nvidia-pytriton, has no cp313 wheel), as pyproject.toml says."""
    proc = resolve(python_version, tmp_path / "report.json")
    assert proc.returncode != 0
    pinned = pins(STEPS_REQS)
    named = re.search(r"No matching distribution found for ([\w.\[\],-]+)==", proc.stderr)
    assert named and canonical(named.group(1)) in pinned, proc.stderr[-2000:]
    assert not supported_by_pyproject(python_version)


def test_each_pin_lives_in_one_file_and_the_enqueue_pins_match() -> None:
    files = {name: pins(name) for name in (STEPS_REQS, *OTHER_REQS)}
    seen: dict[str, str] = {}
    for filename, pinned in files.items():
        for name in pinned:
            assert name not in seen, f"{name} pinned in {seen.get(name)} and {filename}"
            seen[name] = filename
    steps = files[STEPS_REQS]
    for name, version in pins(ENQUEUE_REQS).items():
        assert steps.get(name) == version, f"{ENQUEUE_REQS}: {name}=={version} vs {STEPS_REQS}"


def test_only_local_serving_uses_the_tritonserver_wheel() -> None:
    """nvidia-pytriton (requirements-serving.txt) stays out of the steps' install: the one
    module that finds its binary is the local launcher, which no pipeline step starts."""
    users = sorted(
        str(path.relative_to(REPO_ROOT))
        for folder in ("asl_recognition", "tasks", "pipelines")
        for path in (REPO_ROOT / folder).rglob("*.py")
        if "pytriton" in path.read_text(encoding="utf-8")
    )
    assert users == ["asl_recognition/serving/triton_server.py"]
    assert "nvidia-pytriton" in pins("requirements-serving.txt")
    assert "nvidia-pytriton" not in pins(STEPS_REQS)


# Imported but installed by something other than pip, each with where it comes from.
NOT_FROM_PIP = {
    "triton_python_backend_utils": "Triton's Python backend provides it to the served steps",
    "mediapipe": "tests/hands/make_mediapipe_reference.py runs in its own venv (its docstring)",
}
CODE_FOLDERS = ("asl_recognition", "tasks", "pipelines", "triton", "scripts", "bench", "tests")


def imported_top_names() -> dict[str, str]:
    """Top-level name -> one file importing it, for every absolute import in the project's code."""
    import ast

    found: dict[str, str] = {}
    for folder in CODE_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(REPO_ROOT)))
    return found


def test_every_third_party_import_is_pinned_directly() -> None:
    """Every import is pinned in a requirements file, not left to another package's own range
    (PyJWT came only through clearml's ``pyjwt<3,>=2.4``): the name -> distribution map is the
    installed one, so a module nobody installs fails here too."""
    import importlib.metadata

    local = {p.stem for folder in CODE_FOLDERS for p in (REPO_ROOT / folder).rglob("*.py")}
    local |= {p.parent.name for p in REPO_ROOT.rglob("__init__.py") if ".venv" not in p.parts}
    distributions = importlib.metadata.packages_distributions()
    pinned = {name for f in (STEPS_REQS, *OTHER_REQS) for name in pins(f)}
    unpinned = []
    for name, where in sorted(imported_top_names().items()):
        if name in sys.stdlib_module_names or name in local or name in NOT_FROM_PIP:
            continue
        owners = {canonical(d) for d in distributions.get(name, [])}
        if not owners & pinned:
            unpinned.append(f"{name} ({where}): {sorted(owners) or 'not installed'}")
    assert not unpinned, unpinned


def workflow_jobs() -> dict[str, dict]:
    """``<file>:<job>`` -> job, for every workflow."""
    jobs = {}
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            jobs[f"{path.name}:{name}"] = job
    return jobs


def run_lines(job: dict) -> tuple[list[str], list[str]]:
    """The job's ``run:`` scripts: (those that pip install, the others)."""
    runs = [step["run"] for step in job["steps"] if "run" in step]
    installs = [run for run in runs if "pip install" in run]
    return installs, [run for run in runs if run not in installs]


def installed_by(install: str) -> set[str]:
    """Canonical names one install line installs (its ``$(grep ...)`` evaluated by bash); each
    argument must be ``-r FILE`` or a ``NAME==VERSION`` pinned as in the requirements files."""
    words = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + install.split("pip install", 1)[1]],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    names: set[str] = set()
    args = iter(word for word in words if word)
    for arg in args:
        if arg == "-r":
            names |= set(pins(next(args)))
            continue
        name, _, version = arg.partition("==")
        assert version and pins_everywhere().get(canonical(name)) == version, f"{install}: {arg}"
        names.add(canonical(name))
    return names


def pins_everywhere() -> dict[str, str]:
    return {k: v for f in (STEPS_REQS, *OTHER_REQS) for k, v in pins(f).items()}


@pytest.mark.parametrize("job_id", sorted(workflow_jobs()))
def test_each_workflow_installs_the_pinned_tools_it_calls(job_id: str) -> None:
    """A tool named like a pinned package (black, isort, flake8, ...) that a ``run:`` line
    calls must come from that job's own install lines (``make`` installs for itself)."""
    installs, others = run_lines(workflow_jobs()[job_id])
    installed = set().union(*(installed_by(line) for line in installs))
    called = {
        shlex.split(line)[0]
        for run in others
        for line in run.splitlines()
        if line.strip() and not line.strip().startswith("#")
    }
    tools = {canonical(word) for word in called} & set(pins_everywhere())
    assert tools <= installed, f"{job_id} calls {sorted(tools - installed)} without installing"


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as a runner checks it out: tracked and new (not ignored) files only,
    committed in a fresh git repository; no .venv, no caches, no workspace."""
    root = tmp_path_factory.mktemp("checkout") / "repo"
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        source = REPO_ROOT / rel
        if source.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / rel)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "checkout"], cwd=root, check=True)
    return root


def runner_env(venv: Path, workspace: Path) -> dict[str, str]:
    """The runner's environment: the venv first on PATH, no ClearML server or task variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLEARML_", "TRAINS_", "ASL_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["ASL_WORKSPACE"] = str(workspace)
    return env


def test_the_enqueue_job_installs_enough_for_its_command(
    fresh_checkout: Path, tmp_path: Path
) -> None:
    job = workflow_jobs()["pipeline.yml:enqueue"]
    installs, others = run_lines(job)
    (enqueue,) = [run for run in others if "pipelines/asl_pipeline.py" in run]
    assert "--mode queue" in enqueue
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = runner_env(venv, tmp_path / "workspace")
    for install in installs:
        proc = subprocess.run(
            ["bash", "-e", "-c", install],
            cwd=fresh_checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    # The job's own command, in dry-run; -X importtime lists what it imports (on stderr).
    command = enqueue.replace("--mode queue", "--mode dry-run")
    command = command.replace("python ", "python -X importtime ", 1)
    proc = subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=fresh_checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert DAG_MARKER in proc.stdout
    dag, _ = json.JSONDecoder().raw_decode(proc.stdout.split(DAG_MARKER, 1)[1].lstrip())
    assert "parameters" in dag
    imported = {
        line.split("|")[2].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    owners = subprocess.run(
        [str(venv / "bin" / "python"), "-c", OWNERS],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = {
        canonical(dist)
        for module, dists in json.loads(owners).items()
        if module in imported
        for dist in dists
    }
    unused = set(pins(ENQUEUE_REQS)) - used
    assert not unused, f"{ENQUEUE_REQS} pins {sorted(unused)}, which the enqueue never imports"


OWNERS = "import importlib.metadata as m, json; print(json.dumps(m.packages_distributions()))"


def fake_pythons(folder: Path, version: str) -> Path:
    """python3.11, python3.12 and python3 that all report ``version`` (a 3.13-only machine)."""
    folder.mkdir()
    real = shutil.which("python3.11") or sys.executable
    major, minor = version.split(".")
    for name in ("python3.11", "python3.12", "python3"):
        script = folder / name
        script.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = "-c" ]; then exec {real} -c "import sys; sys.version_info = '
            f'({major}, {minor}, 0); $2"; fi\n'
            f'exec {real} "$@"\n'
        )
        script.chmod(0o755)
    return folder


@pytest.mark.parametrize("version, refused", [("3.13", True), ("3.12", False)])
def test_make_install_picks_a_python_the_pins_support(tmp_path: Path, version, refused) -> None:
    """Debian 13 / Ubuntu 25.04's python3 is 3.13, on which pip ended ``make run`` in a
    ResolutionImpossible on numpy: ``make`` now takes python3.11 or python3.12, or says in one
    line that it needs one, before any venv is made."""
    for name in ("Makefile", *REQS_FILES):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    # tests.yml runs `env PYTHON=<runner's python> make test`, and make hands PYTHON on to
    # pytest: inherited, it is a choice already made, and the refused case installed everything.
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["PATH"] = f"{fake_pythons(tmp_path / 'bin', version)}:{os.environ['PATH']}"
    if refused:
        proc = subprocess.run(
            ["make", "-C", str(tmp_path), "install"], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 2 and not (tmp_path / ".venv").exists()
        assert "need Python 3.11 or 3.12" in proc.stderr and "PYTHON=" in proc.stderr
    else:  # the first supported one is taken (a dry run: no venv is made)
        proc = subprocess.run(
            ["make", "-n", "-C", str(tmp_path), "install"], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0 and "python3.11 -m venv .venv" in proc.stdout


def test_make_install_refuses_a_venv_made_with_another_python(tmp_path: Path) -> None:
    """A .venv left by an earlier ``make run`` on Python 3.13 was reused whatever PYTHON said,
    and pip failed inside it: it is named as the cause, with what to do."""
    for name in ("Makefile", *REQS_FILES):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    fake_pythons(tmp_path / "bin", "3.13")
    (tmp_path / ".venv").mkdir()
    shutil.copytree(tmp_path / "bin", tmp_path / ".venv" / "bin")
    (tmp_path / ".venv" / "bin" / "python").symlink_to(tmp_path / ".venv" / "bin" / "python3")
    proc = subprocess.run(
        ["make", "-C", str(tmp_path), "install", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "make: .venv was made with" in proc.stderr and "remove .venv" in proc.stderr


def test_make_install_remakes_a_venv_left_without_pip(tmp_path: Path) -> None:
    """A make stopped during ``python -m venv`` (its ensurepip step) left .venv/bin/python with
    no pip, and every later ``make`` ended in "No module named pip". The requirements files are
    empty here: only the venv is under test."""
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    for name in REQS_FILES:
        (tmp_path / name).write_text("# empty: the venv alone is under test\n")
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = subprocess.run(
        ["make", "-C", str(tmp_path), "install", f"PYTHON={sys.executable}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no working pip" in proc.stderr
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"])
    assert pip.returncode == 0 and (venv / ".installed").exists()
