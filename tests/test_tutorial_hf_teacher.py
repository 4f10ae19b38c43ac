"""docs/tutorial_hf_teacher.md runs as written: its files are written and every snippet runs, in the tutorial's
order (fewer memes and epochs), in this process (one import of transformers)."""

from __future__ import annotations

import json
import re
import runpy
import shlex
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from mmdistill.cli import main

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial_hf_teacher.md"
BLOCK = re.compile(r"<!-- (file: \S+|run) -->\n```(\w+)\n(.*?)```", re.DOTALL)
SMALLER = [
    ('("train", 160), ("dev_seen", 40), ("test_seen", 40)', '("train", 32), ("dev_seen", 16), ("test_seen", 16)'),
    ("epochs: 3", "epochs: 1"),
    ("epochs=3", "epochs=1"),
]


def shrunk(body: str) -> str:
    for long, short in SMALLER:
        body = body.replace(long, short)
    return body


def test_every_code_block_is_a_file_or_runs():
    text = TUTORIAL.read_text()
    assert len(re.findall(r"^```\w+$", text, re.MULTILINE)) == len(BLOCK.findall(text))


def test_tutorial_hf_teacher_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMDISTILL_CACHE", str(tmp_path / "cache"))
    blocks = BLOCK.findall(TUTORIAL.read_text())
    assert [m for m, _, _ in blocks if m != "run"] == ["file: make_models.py", "file: hf_teacher.yaml"]
    ran = []
    for marker, language, body in blocks:
        if marker != "run":
            assert shrunk(body) != body, f"{marker}: no size to shrink"
            (tmp_path / marker.removeprefix("file: ")).write_text(shrunk(body))
            continue
        if language == "python":
            exec(compile(shrunk(body), "tutorial", "exec"), {"__name__": "tutorial"})
            ran.append("python")
            continue
        for line in body.strip().splitlines():
            words = shlex.split(line)
            if words[0] == "python":
                runpy.run_path(words[1], run_name="__main__")
            else:
                assert words[0] == "mmdistill" and main(words[1:]) == 0, line
            ran.append(line)
    assert len(ran) == 7, "make_models, 4 commands on the YAML run, the Python route, the audio snippet"
    metrics = json.loads((tmp_path / "runs" / "hf" / "metrics.json").read_text())
    assert "student.accuracy" in metrics["summary"]
    assert (tmp_path / "runs" / "hf" / "robustness" / "missing.csv").is_file()
    assert (tmp_path / "runs" / "hf" / "report.html").is_file()
    assert (tmp_path / "runs" / "py-hint" / "student.safetensors").is_file()
    assert "(64, 32)" in capsys.readouterr().out
