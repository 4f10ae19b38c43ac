"""docs/tutorial_own_dataset.md runs as written: its Python blocks, in order, in one namespace."""

import re
import tempfile
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial_own_dataset.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_the_tutorial_code_runs(tmp_path, monkeypatch):
    blocks = python_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 4, "the tutorial's code blocks were not found"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the tutorial's temp folders land in tmp_path
    namespace: dict = {"__name__": "tutorial"}
    for block in blocks:
        exec(compile(block, str(TUTORIAL), "exec"), namespace)
    assert namespace["augmented_train"].random
    assert 0.0 <= namespace["student_run"].test["accuracy"] <= 100.0
    assert namespace["student_run"].epochs_run == 3
