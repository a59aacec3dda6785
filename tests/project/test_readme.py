"""The README stays true to the code: generated blocks, the two-command quick start, real paths."""

from __future__ import annotations

import re
import subprocess

from asl_testkit import run_script

from asl_recognition.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
GENERATOR = REPO_ROOT / "scripts" / "task_options.py"
# Repository paths as the README writes them (in prose, inline code and code blocks); a path that
# follows "/" or "." is part of a longer one (../shared/data/..., $PWD/data/...) and is skipped.
REPO_PATH_RE = re.compile(
    r"(?<![\w./$-])((?:tasks|pipelines|scripts|triton|asl_recognition|data|docs|config|validation"
    r"|bench|tests|\.github|\.ci)/[\w./-]*)"
)
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script(str(GENERATOR), *args, timeout=300)


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_generated_blocks_match_the_code(tmp_path) -> None:
    proc = run_generator("--check")
    assert proc.returncode == 0, proc.stderr
    # The check can fail: a README whose option table lost a row is reported, then rewritten.
    stale = tmp_path / "README.md"
    text = README.read_text(encoding="utf-8")
    assert "| `--epochs EPOCHS` |" in text
    stale.write_text(
        "\n".join(line for line in text.splitlines() if "`--epochs EPOCHS`" not in line) + "\n",
        encoding="utf-8",
    )
    proc = run_generator("--check", "--readme", str(stale))
    assert proc.returncode == 1
    assert "out of date" in proc.stderr and "--write" in proc.stderr
    assert run_generator("--write", "--readme", str(stale)).returncode == 0
    assert stale.read_text(encoding="utf-8") == text


def test_every_entry_script_has_an_options_table() -> None:
    options = section(README.read_text(encoding="utf-8"), "Task options")
    for script in sorted((REPO_ROOT / "tasks").glob("*.py")) + sorted(
        (REPO_ROOT / "pipelines").glob("*.py")
    ):
        assert f"### `python {script.relative_to(REPO_ROOT).as_posix()}`" in options


def test_quick_start_is_exactly_make_run_and_make_test() -> None:
    quick = section(README.read_text(encoding="utf-8"), "Quick start")
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", quick, re.M | re.S)
    assert len(blocks) == 1, "the quick start holds one code block"
    commands = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()]
    assert [c for c in commands if c] == ["make run", "make test"]


def test_results_section_is_left_to_measured_runs() -> None:
    results = section(README.read_text(encoding="utf-8"), "Results")
    assert "<!-- results:start -->" in results and "<!-- results:end -->" in results


def test_every_repository_path_in_the_readme_exists() -> None:
    text = README.read_text(encoding="utf-8")
    missing = []
    for target in LINK_RE.findall(text):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        path = target.split("#", 1)[0]
        if path and not (REPO_ROOT / path).exists():
            missing.append(f"link {target}")
    for path in REPO_PATH_RE.findall(text):
        path = path.rstrip(".,:;")
        if path.startswith("bench/results/"):  # a bench's output (gitignored), written when run
            continue
        if not (REPO_ROOT / path).exists():
            missing.append(f"path {path}")
    assert not missing, f"README mentions paths that do not exist: {sorted(set(missing))}"


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_anchor_link_names_a_heading() -> None:
    text = README.read_text(encoding="utf-8")
    anchors = {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}
    targets = [t[1:] for t in LINK_RE.findall(text) if t.startswith("#")]
    assert targets, "the README's table of contents links its sections"
    assert [t for t in targets if t not in anchors] == []
    assert slug("Running with a ClearML server") == "running-with-a-clearml-server"


def test_path_check_would_catch_a_missing_file() -> None:
    found = REPO_PATH_RE.findall(
        "see `tasks/no_such_task.py` and ../shared/data/x and $PWD/data/y"
    )
    assert found == ["tasks/no_such_task.py"]
    assert not (REPO_ROOT / found[0]).exists()
    assert LINK_RE.findall("![shot](docs/missing.png) [x](#anchor)") == [
        "docs/missing.png",
        "#anchor",
    ]
