"""The README and the docs pages stay true to the code: generated blocks, the two-command quick
start, real paths, links and anchors that resolve, a README short enough to read, and no internal
issue numbers."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from asl_testkit.cli import run_script

from asl_recognition.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
GENERATOR = REPO_ROOT / "scripts" / "task_options.py"
README_MAX_LINES = 400
# Repository paths as the pages write them (in prose, inline code and code blocks); a path that
# follows "/" or "." is part of a longer one (../shared/data/..., $PWD/data/...) and is skipped.
REPO_PATH_RE = re.compile(
    r"(?<![\w./$-])((?:tasks|pipelines|scripts|triton|asl_recognition|data|docs|config|validation"
    r"|bench|tests|\.github|\.ci)/[\w./-]*)"
)
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE_RE = re.compile(r"^```.*?^```[^\n]*$", re.M | re.S)
# "issue 13", "issues 1/5 and 2/5", "(#19.3)", "#20.1": which internal ticket produced a result
# means nothing to a reader; say what the result is.
ISSUE_RE = re.compile(r"\bissues?\s+#?\d+|(?<![\w&/#])#\d+(?:\.\d+)?\b", re.I)


def pages() -> list[Path]:
    """The README and every docs page."""
    return [README, *sorted(DOCS.glob("*.md"))]


def page_ids() -> list[str]:
    return [p.relative_to(REPO_ROOT).as_posix() for p in pages()]


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return run_script(str(GENERATOR), *args, timeout=300)


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (code blocks skipped; repeats numbered as GitHub does)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE_RE.sub("", text), re.M):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def links(text: str) -> list[str]:
    """Link targets outside code blocks."""
    return LINK_RE.findall(FENCE_RE.sub("", text))


def broken_links(page: Path) -> list[str]:
    """Relative links (resolved from the page's folder) that name no file, or no heading in it."""
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"^(https?:|mailto:)", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest.read_text("utf-8"))):
            broken.append(f"{target} (no such heading)")
    return broken


def test_generated_blocks_match_the_code(tmp_path) -> None:
    proc = run_generator("--check")
    assert proc.returncode == 0, proc.stderr
    # The check can fail: a page whose option table lost a row is reported, then rewritten.
    for name in ("options.md", "monitoring.md"):
        shutil.copy(DOCS / name, tmp_path / name)
    stale = tmp_path / "options.md"
    text = stale.read_text(encoding="utf-8")
    assert "| `--epochs EPOCHS` |" in text
    stale.write_text(
        "\n".join(line for line in text.splitlines() if "`--epochs EPOCHS`" not in line) + "\n",
        encoding="utf-8",
    )
    proc = run_generator("--check", "--docs", str(tmp_path))
    assert proc.returncode == 1
    assert "options.md are out of date" in proc.stderr and "--write" in proc.stderr
    assert run_generator("--write", "--docs", str(tmp_path)).returncode == 0
    assert stale.read_text(encoding="utf-8") == text


def test_a_page_without_its_block_is_named(tmp_path, monkeypatch) -> None:
    """Read in process: ``updated_pages`` only reads and splices, nothing is rendered."""
    spec = importlib.util.spec_from_file_location("_task_options_under_test", GENERATOR)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, generator)  # its dataclasses look it up
    spec.loader.exec_module(generator)
    (tmp_path / "options.md").write_text("# Options\n", encoding="utf-8")
    with pytest.raises(ValueError) as refused:
        generator.updated_pages(tmp_path, {"task-options": "| table |\n"})
    assert str(refused.value) == (
        f"{tmp_path / 'options.md'}: no '<!-- task-options:start -->'"
        " ... '<!-- task-options:end -->' block"
    )


def test_generated_blocks_live_in_the_docs_pages_the_readme_links() -> None:
    readme = README.read_text(encoding="utf-8")
    for name, page in (("task-options", "options.md"), ("alerts", "monitoring.md")):
        assert f"<!-- {name}:start -->" in (DOCS / page).read_text(encoding="utf-8")
        assert f"<!-- {name}:start -->" not in readme
        assert f"(docs/{page}" in readme


def test_every_entry_script_has_an_options_table() -> None:
    options = section((DOCS / "options.md").read_text(encoding="utf-8"), "Task options")
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


def test_the_readme_is_short_enough_to_read() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move long parts to docs/"


def test_results_are_left_to_measured_runs() -> None:
    results = (DOCS / "results.md").read_text(encoding="utf-8")
    assert "<!-- results:start -->" in results and "<!-- results:end -->" in results


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (README.parent / t.partition("#")[0]).resolve()
        for t in links(README.read_text(encoding="utf-8"))
        if not re.match(r"^(https?:|mailto:|#)", t)
    }
    assert [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked] == []


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_every_repository_path_exists(page: Path) -> None:
    missing = []
    for path in REPO_PATH_RE.findall(page.read_text(encoding="utf-8")):
        path = path.rstrip(".,:;")
        if path.startswith("bench/results/"):  # a bench's output (gitignored), written when run
            continue
        if not (REPO_ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{page.name} mentions paths that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_no_internal_issue_numbers(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = [m.group(0) for m in ISSUE_RE.finditer(text)]
    assert not found, f"{page.name} names internal issue numbers: {found}"


def test_the_readme_links_its_own_sections() -> None:
    targets = [t for t in links(README.read_text(encoding="utf-8")) if t.startswith("#")]
    assert targets, "the README's table of contents links its sections"
    assert slug("Running with a ClearML server") == "running-with-a-clearml-server"


def test_the_checks_would_catch_what_they_look_for(tmp_path) -> None:
    found = REPO_PATH_RE.findall(
        "see `tasks/no_such_task.py` and ../shared/data/x and $PWD/data/y"
    )
    assert found == ["tasks/no_such_task.py"]
    assert not (REPO_ROOT / found[0]).exists()
    assert LINK_RE.findall("![shot](docs/missing.png) [x](#anchor)") == [
        "docs/missing.png",
        "#anchor",
    ]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Same\n\n## Same\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# T\n\n```bash\n# not a heading\n[x](#not-a-link)\n```\n"
        "[ok](docs/a.md#a-page) [ok](docs/a.md#same-1) [ok](#t)\n"
        "[bad](docs/a.md#same-2) [bad](docs/b.md) [bad](#not-a-heading)\n",
        encoding="utf-8",
    )
    assert broken_links(readme) == [
        "docs/a.md#same-2 (no such heading)",
        "docs/b.md (no such file)",
        "#not-a-heading (no such heading)",
    ]
    assert (tmp_path / "docs" / "a.md").read_text().count("Same") == 2
    text = "issue 13, issues 1/5 and 2/5, (#19.3), Issue #4, but not &#123; or page#2 or 4 issues"
    assert [m.group(0) for m in ISSUE_RE.finditer(text)] == [
        "issue 13",
        "issues 1",
        "#19.3",
        "Issue #4",
    ]
