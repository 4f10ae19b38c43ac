"""Every tutorial under examples/ runs (so none can rot); fewer epochs and a temp output folder."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("tutorial_*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_tutorial_runs(script, tmp_path):
    env = dict(cli_env(), MMDISTILL_TUTORIAL_OUT=str(tmp_path / "out"), MMDISTILL_TUTORIAL_EPOCHS="2")
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accuracy" in proc.stdout
