"""docs/architecture.md is a true map: every module of the package is on it, and what it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "mmdistill"
ROOMS = "engine|data|methods|tasks|models|evaluation|advisor|sweep|studies|commands|mfh"


def modules_missing_from(doc: str) -> list[str]:
    """The package's modules (path below ``src/mmdistill``) that the map names neither by path nor by file name."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py":
            continue
        if not any(f"{named}`" in doc for named in (f"`{path.name}", f"/{path.name}", f"`{rel}")):
            missing.append(rel)
    return missing


def _defines(source: str, name: str) -> bool:
    defined = rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b|^\s*{name}\s*[:=]|^\s*(?:from\s+\S+\s+)?import\s.*\b{name}\b"
    return re.search(defined, source, re.M) is not None


def stale_references_in(doc: str) -> list[str]:
    """Paths (``engine/trainer.py``) and dotted names (``engine.parts.run_task``) in the map that do not exist: for a
    dotted name, the longest prefix that is a module must define or import the next part."""
    stale = []
    for ref in sorted(set(re.findall(r"`([\w/-]+/[\w-]+\.py)`", doc))):
        if not ((PACKAGE / ref).is_file() or (REPO / ref).is_file()):
            stale.append(ref)
    for ref in sorted(set(re.findall(rf"`((?:{ROOMS})(?:\.\w+)+)", doc))):
        parts = [p for p in ref.split(".") if p != "py"]
        for k in range(len(parts), 0, -1):
            base = PACKAGE.joinpath(*parts[:k])
            module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
            if module.is_file():
                break
        if k < len(parts) and not _defines(module.read_text(), parts[k]):
            stale.append(ref)
    return stale


@pytest.fixture(scope="module")
def architecture() -> str:
    return (REPO / "docs" / "architecture.md").read_text()


def test_every_module_of_the_package_is_on_the_map(architecture):
    assert modules_missing_from(architecture) == []


def test_every_path_and_dotted_name_on_the_map_exists(architecture):
    assert stale_references_in(architecture) == []


def test_a_moved_module_and_an_unlisted_one_are_found():
    doc = "`engine.runfolder.check`, `engine/runfolder.py`, `engine.parts.run_task`, `trainer.py`"
    assert stale_references_in(doc) == ["engine/runfolder.py", "engine.runfolder.check"]
    assert "engine/trainer.py" not in modules_missing_from(doc)
    assert "engine/parts.py" in modules_missing_from(doc)
