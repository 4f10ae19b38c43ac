"""Docs hygiene.

* The docs and the code speak for themselves: no internal issue or session numbers ("issue 12", "session 5") in
  docs, code, comments or tests. A citation of another project's issue (a line that also names a repository or a
  URL, e.g. "github.com/jperezrua/mfas issues 13 and 17") is allowed.
* Every relative link in README.md and docs/*.md points to an existing file, and its #anchor to a heading there.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("docs", "src", "tests", "benchmarks", "examples", "scripts", "README.md", "pyproject.toml")
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg", ".ini"}

INTERNAL_REFERENCE = re.compile(r"\b(issue|session)s?[ -]?#?[0-9]+", re.IGNORECASE)
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


# -- links between the docs --------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def outside_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (a link shown as code is not a link)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        kept.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: inline code and link syntax dropped, lower case, punctuation removed
    (letters, digits, ``_`` and ``-`` kept), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a markdown file (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for line in markdown_headings(path.read_text(encoding="utf-8")):
        slug = heading_anchor(line.lstrip("#"))
        n = seen.get(slug, 0)
        found.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return found


def markdown_headings(text: str) -> list[str]:
    """The ATX headings (``## ...``) of a markdown text, outside fenced code."""
    headings, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            headings.append(line)
    return headings


def broken_links(path: Path) -> list[str]:
    """Relative links of a markdown file whose file (or, in a markdown file, heading) does not exist."""
    problems = []
    for target in LINK.findall(outside_code(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{target}: no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"{target}: no heading with anchor #{anchor} in {linked.relative_to(ROOT)}")
    return problems


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]  # the results folders' pages too


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_an_existing_file_and_heading(doc):
    assert not broken_links(doc), f"{doc.relative_to(ROOT)}: broken links:\n" + "\n".join(broken_links(doc))


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("mfeat — UCI Multiple Features (real, 6 views)", "mfeat--uci-multiple-features-real-6-views"),
        (
            "Reference models for raw inputs: parameters and forward+backward time",
            "reference-models-for-raw-inputs-parameters-and-forwardbackward-time",
        ),
        ("`resnet` — a small ResNet (He et al., CVPR 2016)", "resnet--a-small-resnet-he-et-al-cvpr-2016"),
        ("How to add ...", "how-to-add-"),
    ],
)
def test_heading_anchors_follow_github(heading, anchor):
    assert heading_anchor(heading) == anchor


def test_a_missing_file_or_heading_is_reported_and_code_is_not_read_as_links(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Title\n\n## A section\n\n## A section\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](other.md) [ok](other.md#a-section) [ok](other.md#a-section-1) [ok](#here) [web](https://x.org/y.md)\n"
        "# Here\n"
        "[gone](missing.md) [bad anchor](other.md#no-such-section) ![figure](figures/none.png)\n"
        "```\n[in a code block](not-a-link.md)\n```\n"
        "`[inline code](not-a-link-either.md)`\n"
    )
    problems = broken_links(doc)
    assert [p.split(":")[0] for p in problems] == ["missing.md", "other.md#no-such-section", "figures/none.png"]
