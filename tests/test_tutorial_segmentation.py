"""docs/tutorial_segmentation.md runs as written: its files are written, its commands run (smaller and shorter)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import cli, cli_env

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial_segmentation.md"
SHRINK = {"n_scenes=160": "n_scenes=24", "size=32": "size=16", "epochs: 15": "epochs: 2", "--seeds 3": "--seeds 2"}


def shrunk(text: str) -> str:
    for big, small in SHRINK.items():
        text = text.replace(big, small)
    return text


def test_tutorial_segmentation_runs(tmp_path):
    text = TUTORIAL.read_text()
    files = re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", text, re.DOTALL)
    runs = re.findall(r"<!-- run -->\n```bash\n(.*?)```", text, re.DOTALL)
    assert [name for name, _ in files] == ["seg.yaml", "read_results.py"]
    assert "epochs: 15" in files[0][1]  # what SHRINK changes is still there
    for name, body in files:
        (tmp_path / name).write_text(shrunk(body))
    commands = [shrunk(line) for block in runs for line in block.strip().splitlines()]
    assert len(commands) == 5 and "n_scenes=24" in commands[0] and "--seeds 2" in commands[2]
    outputs = []
    for command in commands:
        argv = shlex.split(command)
        exe = cli(*argv[1:]) if argv[0] == "mmdistill" else [sys.executable, *argv[1:]]
        assert argv[0] in ("mmdistill", "python"), command
        proc = subprocess.run(
            exe, env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
        )
        assert proc.returncode == 0, f"{command}: {proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    assert "train 14 / val 5 / test 5; 4 classes; modalities: rgb[3, 16, 16], depth[1, 16, 16]" in outputs[1]
    metrics = json.loads((tmp_path / "runs" / "seg" / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1]
    for part in ("teacher", "nokd", "student"):
        assert 0.0 <= metrics["summary"][f"{part}.miou"]["mean"] <= 100.0  # percent
    printed = outputs[-1].splitlines()
    assert [line.split()[0] for line in printed[:3]] == ["teacher", "nokd", "student"]
    assert printed[3].startswith("KD - no-KD:") and "nan" not in printed[3]
    missing = [line for line in printed[4:] if "depth" in line or "rgb" in line]
    assert missing, "the missing-modality rows were not printed"
