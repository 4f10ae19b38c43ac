"""The type checker's settings: every module of the package is checked (none exempt from its errors)."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def mypy_exempt_modules(pyproject: str) -> list[str]:
    """The modules of mmdistill whose mypy errors are ignored (``ignore_errors`` overrides)."""
    overrides = tomllib.loads(pyproject)["tool"]["mypy"].get("overrides", [])
    exempt = []
    for override in overrides:
        if override.get("ignore_errors"):
            modules = override["module"]
            exempt += [m for m in ([modules] if isinstance(modules, str) else modules) if m.startswith("mmdistill")]
    return exempt


def test_no_module_of_the_package_is_exempt_from_the_type_checker():
    assert mypy_exempt_modules(PYPROJECT.read_text()) == []


def test_an_exempt_module_is_found():
    text = '[tool.mypy]\n[[tool.mypy.overrides]]\nmodule = ["mmdistill.engine.parts", "yaml"]\nignore_errors = true\n'
    assert mypy_exempt_modules(text) == ["mmdistill.engine.parts"]
