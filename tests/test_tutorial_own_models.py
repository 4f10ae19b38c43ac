"""docs/tutorial_own_models.md runs as written: its files are written, and every snippet (shell and Python) runs, in
the tutorial's order, against the tutorial's own ``my_models.py`` (fewer examples and epochs)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import cli, cli_env

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial_own_models.md"
BLOCK = re.compile(r"<!-- (file: \S+|run) -->\n```(\w+)\n(.*?)```", re.DOTALL)
SMALLER = [("n: 1200", "n: 100"), ("epochs: 10", "epochs: 1"), ('{"n": 400}', '{"n": 100}'), ("epochs=5", "epochs=1")]


def shrunk(body: str) -> str:
    """The same snippet with fewer examples and epochs (nothing else changed)."""
    for long, short in SMALLER:
        body = body.replace(long, short)
    return body


def test_every_code_block_is_a_file_or_runs():
    """A code block without a marker would be neither written nor run, so it could name what my_models.py lacks."""
    text = TUTORIAL.read_text()
    assert len(re.findall(r"^```\w+$", text, re.MULTILINE)) == len(BLOCK.findall(text))


def test_tutorial_own_models_runs(tmp_path):
    blocks = BLOCK.findall(TUTORIAL.read_text())
    files = [(marker.removeprefix("file: "), body) for marker, _, body in blocks if marker != "run"]
    assert [name for name, _ in files] == ["my_models.py", "own_models.yaml", "my_parts.py", "parts.yaml"]
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"  # the tutorial's `export PYTHONPATH=$PWD`
    ran = []
    for marker, language, body in blocks:
        if marker != "run":
            assert shrunk(body) != body or marker.endswith(".py"), f"{marker}: no size to shrink"
            (tmp_path / marker.removeprefix("file: ")).write_text(shrunk(body))
            continue
        if language == "python":
            commands = [[sys.executable, "-c", shrunk(body)]]
        else:
            lines = body.strip().splitlines()
            assert all(line.startswith("mmdistill ") for line in lines), lines
            commands = [cli(*shlex.split(line)[1:]) for line in lines]
        for command in commands:
            proc = subprocess.run(
                command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
            )
            assert proc.returncode == 0, f"{command[-1][:200]}: {proc.stderr[-3000:]}"
            ran.append(command)
    assert len(ran) == 8, "4 commands on the YAML run, the Python snippet, 3 commands on its folder"
    metrics = json.loads((tmp_path / "runs" / "own" / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1, 2] and "student-nokd.accuracy" in metrics["paired"]
    assert (tmp_path / "runs" / "own" / "robustness" / "missing.csv").is_file()
    assert (tmp_path / "runs" / "own" / "report.html").is_file()
    assert "scale: 0.5" in (tmp_path / "runs" / "parts" / "config.yaml").read_text()
    assert (tmp_path / "runs" / "py-kd" / "config.yaml").is_file(), "the Python snippet's folder is a run folder"
