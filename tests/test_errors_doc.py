"""docs/errors.md is the public promise: every test it cites must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cited_tests(text: str) -> list[tuple[str, str]]:
    """(file, test name) for every ``test_x.py::name`` and every following ``, ::other`` in the same cell."""
    out = []
    for cell in re.findall(r"`(test_\w+\.py::[^`]+)`", text):
        file, rest = cell.split("::", 1)
        for name in re.split(r",\s*::", rest):
            out.append((file, name.split("[")[0].strip()))
    return out


def test_every_test_cited_in_errors_md_exists():
    cited = cited_tests((ROOT / "docs" / "errors.md").read_text())
    assert len(cited) > 50
    missing = []
    for file, name in cited:
        path = ROOT / "tests" / file
        if not path.is_file() or not re.search(rf"^def {re.escape(name)}\(", path.read_text(), re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/errors.md cites tests that do not exist: {missing}"
