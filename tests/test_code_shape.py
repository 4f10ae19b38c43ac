"""The shape the codebase keeps: no function in the package longer than 80 lines, and no task named outside the
tasks in the engine, the run configuration or the collate code (a task describes itself)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmdistill"
MAX_LINES = 80
TASK_NAMES = re.compile(r"""["'](classification|multilabel|regression|segmentation)["']""")


def long_functions(root: Path, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function or method in ``root``'s .py files longer than ``limit``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_the_package_is_longer_than_80_lines():
    assert long_functions(SRC) == []


def test_a_long_function_is_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"def too_long():\n{body}\n")
    (tmp_path / "short.py").write_text("def fine():\n    return 1\n")
    assert [f.split(" ", 1)[1] for f in long_functions(tmp_path)] == ["too_long (81 lines)"]


def test_no_task_name_in_the_engine_the_config_or_the_collate_code():
    files = [*sorted((SRC / "engine").rglob("*.py")), SRC / "config.py", SRC / "data" / "contracts" / "collate.py"]
    named = [
        f"{p.relative_to(SRC)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if TASK_NAMES.search(line)
    ]
    assert named == []
