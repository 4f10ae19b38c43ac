"""The type checker's settings: every module of the package is checked (none exempt from its errors)."""

from __future__ import annotations

import re
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def mypy_exempt_modules(pyproject: str) -> list[str]:
    """The modules of mmdistill named in a ``[[tool.mypy.overrides]]`` table that sets ``ignore_errors = true``
    (read as text: tomllib is not in Python 3.10)."""
    tables = re.split(r"^\[", pyproject, flags=re.M)
    exempt = []
    for table in tables:
        if table.startswith("[tool.mypy.overrides]]") and re.search(r"^ignore_errors\s*=\s*true", table, re.M):
            exempt += re.findall(r"[\"'](mmdistill[\w.*]*)[\"']", table)
    return exempt


def test_no_module_of_the_package_is_exempt_from_the_type_checker():
    assert mypy_exempt_modules(PYPROJECT.read_text()) == []


def test_an_exempt_module_is_found():
    text = '[tool.mypy]\n[[tool.mypy.overrides]]\nmodule = ["mmdistill.engine.parts", "yaml"]\nignore_errors = true\n'
    assert mypy_exempt_modules(text) == ["mmdistill.engine.parts"]
