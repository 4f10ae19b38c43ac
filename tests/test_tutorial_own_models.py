"""docs/tutorial_own_models.md runs as written: its files are written, its commands run (fewer examples and epochs)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

from conftest import cli, cli_env

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial_own_models.md"


def test_tutorial_own_models_runs(tmp_path):
    text = TUTORIAL.read_text()
    files = re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", text, re.DOTALL)
    runs = re.findall(r"<!-- run -->\n```bash\n(.*?)```", text, re.DOTALL)
    assert [name for name, _ in files] == ["my_models.py", "own_models.yaml", "my_parts.py", "parts.yaml"]
    for name, body in files:
        if name.endswith(".yaml"):  # smaller and shorter than in the tutorial, nothing else changed
            assert "n: 1200" in body and "epochs: 10" in body, name
            body = body.replace("n: 1200", "n: 100").replace("epochs: 10", "epochs: 1")
        (tmp_path / name).write_text(body)
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"  # the tutorial's `export PYTHONPATH=$PWD`
    commands = [line for block in runs for line in block.strip().splitlines()]
    assert len(commands) == 4 and all(c.startswith("mmdistill ") for c in commands)
    for command in commands:
        proc = subprocess.run(
            cli(*shlex.split(command)[1:]),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"{command}: {proc.stderr[-3000:]}"
    metrics = json.loads((tmp_path / "runs" / "own" / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1, 2] and "student-nokd.accuracy" in metrics["paired"]
    assert (tmp_path / "runs" / "own" / "robustness" / "missing.csv").is_file()
    assert (tmp_path / "runs" / "own" / "report.html").is_file()
    assert "scale: 0.5" in (tmp_path / "runs" / "parts" / "config.yaml").read_text()
