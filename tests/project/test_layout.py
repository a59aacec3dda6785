"""Repository layout rules that keep imports and agents working."""

from __future__ import annotations

from pathlib import Path

from asl_recognition.paths import REPO_ROOT


def test_triton_folder_is_not_a_python_package() -> None:
    # `import triton` must keep resolving to OpenAI Triton, which torch's CUDA build imports.
    assert not list((REPO_ROOT / "triton").rglob("__init__.py"))


def test_top_level_layout() -> None:
    for name in (
        "pipelines",
        "tasks",
        "triton",
        "validation",
        ".github/workflows",
        "requirements.txt",
        "setup.cfg",
        "README.md",
        "Makefile",
        ".ci/run",
        ".pre-commit-config.yaml",
    ):
        assert (REPO_ROOT / name).exists(), name


def test_requirements_are_pinned() -> None:
    files = sorted(REPO_ROOT.glob("requirements*.txt"))
    assert len(files) >= 4, files  # steps, serving, dev, enqueue
    for path in files:
        req = path.name
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert "==" in line, f"{req}: unpinned {line}"


def test_no_function_in_the_package_is_over_80_lines() -> None:
    """Stage functions wire named steps; a long function is a sign a step hides inside it."""
    import ast

    long = []
    for path in sorted((REPO_ROOT / "asl_recognition").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} {lines}")
    assert not long, long


MODULE_LINES = 400


def oversized_modules(root: Path, limit: int = MODULE_LINES) -> list[str]:
    """Modules over ``limit`` lines whose docstring's first line does not say "data table"."""
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        first = (ast.get_docstring(ast.parse(text)) or "").strip().splitlines()[:1]
        if lines > limit and not (first and "data table" in first[0].lower()):
            found.append(f"{path.relative_to(root.parent)} {lines}")
    return found


def test_no_module_in_the_package_is_over_400_lines() -> None:
    """A module holds one job a newcomer can read at once; only a data table that says so in
    its docstring's first line may be longer."""
    assert not oversized_modules(REPO_ROOT / "asl_recognition")


def test_the_module_size_rule_sees_a_long_module_and_spares_a_data_table(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"X{i} = {i}" for i in range(MODULE_LINES)) + "\n"
    (package / "long.py").write_text('"""Two jobs."""\n' + body)
    (package / "table.py").write_text('"""A data table: one row per class."""\n' + body)
    (package / "short.py").write_text('"""One job."""\nX = 1\n')
    assert oversized_modules(package) == [f"pkg/long.py {MODULE_LINES + 1}"]


def test_tests_live_in_one_folder_per_stage() -> None:
    """A newcomer finds a stage's tests beside each other; shared helpers live in asl_testkit."""
    tests = REPO_ROOT / "tests"
    stages = {
        p.name for p in (REPO_ROOT / "asl_recognition").iterdir() if (p / "__init__.py").exists()
    }
    stray = sorted(p.name for p in tests.glob("test_*.py"))
    assert not stray, f"tests at the top of tests/: {stray}"
    folders = {p.parent.name for p in tests.rglob("test_*.py")}
    assert folders <= stages | {"project", "model"}, folders - stages  # model: behaviours
    helpers = [p for p in tests.rglob("*.py") if not p.name.startswith(("test_", "conftest"))]
    assert all(
        "asl_testkit" in p.parts or p.name == "make_mediapipe_reference.py" for p in helpers
    ), helpers


# Entry points whose flags are still declared by hand, each with who finishes it.
PENDING_FLAGS: set[str] = set()
# Must stay deployable alone, without the package: its own argparse, one declaration per flag.
STANDALONE = "triton/client/"
SKIPPED_DIRS = {".venv", ".git", ".cache", "workspace", "node_modules", "__pycache__"}


def hand_written_flags(root: Path) -> dict[str, list[str]]:
    """``add_argument("--flag")`` calls per file (relative path) under ``root``."""
    import ast

    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIPPED_DIRS & set(rel.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                flags = [a.value for a in node.args if isinstance(a, ast.Constant)]
                found.setdefault(rel.as_posix(), []).extend(
                    str(f) for f in flags if str(f).startswith("-")
                )
    return {name: flags for name, flags in found.items() if flags}


def test_flags_are_declared_only_as_options() -> None:
    """Every command line is generated from an ``option()`` dataclass (asl_recognition.options):
    one declaration feeds the CLI, the constructors and the README tables. Positional arguments
    (a folder, ``step.option=value`` overrides) have no option form and are allowed."""
    flags = hand_written_flags(REPO_ROOT)
    client = {name: f for name, f in flags.items() if name.startswith(STANDALONE)}
    for name, declared in client.items():
        assert len(declared) == len(set(declared)), f"{name} declares a flag twice: {declared}"
    stray = {n: f for n, f in flags.items() if n not in client and n not in PENDING_FLAGS}
    assert not stray, f"flags declared by hand instead of in an options dataclass: {stray}"


def test_the_flag_rule_sees_a_hand_written_flag(tmp_path: Path) -> None:
    """The rule above can fail: a script with ``add_argument("--x")`` is reported."""
    (tmp_path / "tool.py").write_text(
        "import argparse\np = argparse.ArgumentParser()\np.add_argument('--x')\n"
        "p.add_argument('folder')\n"
    )
    assert hand_written_flags(tmp_path) == {"tool.py": ["--x"]}
