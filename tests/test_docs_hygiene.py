"""The docs and the code speak for themselves: no internal issue or session numbers ("issue 12", "session 5")
in docs, code, comments or tests. A citation of another project's issue (a line that also names a repository or
a URL, e.g. "github.com/jperezrua/mfas issues 13 and 17") is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("docs", "src", "tests", "benchmarks", "examples", "scripts", "README.md", "pyproject.toml")
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ".ini"}

INTERNAL_REFERENCE = re.compile(r"\b(issue|session)s? ?#?[0-9]+", re.IGNORECASE)
# A citation names where the issue lives: a URL, a host, or an owner/repository path.
CITATION = re.compile(r"https?://|github\.com|gitlab\.com|\b[\w.-]+/[\w.-]+ (issue|pull)", re.IGNORECASE)


def internal_references(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every internal issue or session reference in ``text``."""
    return [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if INTERNAL_REFERENCE.search(line) and not CITATION.search(line)
    ]


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def test_no_internal_issue_or_session_reference_in_docs_code_or_tests():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line[:120]}"
        for path in scanned_files()
        for n, line in internal_references(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not found, "internal issue/session references (say what they mean instead):\n" + "\n".join(found)


def test_the_scan_covers_the_docs_the_package_and_the_tests():
    scanned = {p.relative_to(ROOT).as_posix() for p in scanned_files()}
    assert {"README.md", "docs/architecture.md", "src/mmdistill/engine/api.py", "tests/conftest.py"} <= scanned


@pytest.mark.parametrize(
    "line",
    [
        "Start-up (issue 16): the first step",
        "the 8 of Session 4 are counted",
        "see issue #12",
        "where sessions 1-5 measured 76.95%",
        "# Mutation testing (issues 12)",
    ],
)
def test_an_internal_reference_is_found(line):
    assert internal_references(f"first line\n{line}\n") == [(2, line)]


@pytest.mark.parametrize(
    "line",
    [
        "users quote it (github.com/jperezrua/mfas issues 13 and 17)",
        "as in https://github.com/megvii-research/mdistiller/issues/12",
        "mdistiller/mdistiller issue 12 explains the warm-up",
        "the MFAS issue threads",
        "a tissue 3 mm thick",
    ],
)
def test_a_citation_of_another_project_or_an_ordinary_word_is_not_flagged(line):
    assert internal_references(line) == []
