"""A task of the user's own, registered from one file outside the package, run end to end from YAML.

The module (``own_task_plugin.py``) is copied into tmp_path as ``my_task`` and put on PYTHONPATH; the CLI runs in a
subprocess, so nothing registers the task but the config's ``imports``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import cli, cli_env

PLUGIN = Path(__file__).resolve().parent / "own_task_plugin.py"

CONFIG = """\
imports: [my_task]
task: ordinal
data: {{dataset: "my_task:make_splits", params: {{n: 48{extra}}}}}
teacher: {{model: {{modalities: [a, b], encoder: {{hidden: [8], out_dim: 8}}}}}}
student: {{model: {{modalities: [b], encoder: {{hidden: [8], out_dim: 8}}}}}}
method: {{name: kd, params: {{temperature: 2.0}}}}
trainer: {{epochs: 1, batch_size: 16, num_threads: 1}}
cache: {{enabled: false}}
"""


@pytest.fixture
def user_task(tmp_path):
    pkg = tmp_path / "user"
    pkg.mkdir()
    shutil.copy(PLUGIN, pkg / "my_task.py")
    env = cli_env()
    env["PYTHONPATH"] = f"{pkg}{os.pathsep}{env['PYTHONPATH']}"
    env["OWN_PLUGINS_LOG"] = str(tmp_path / "used.log")
    return env


def train(tmp_path, env, extra=""):
    config = tmp_path / "ordinal.yaml"
    config.write_text(CONFIG.format(extra=extra))
    out = tmp_path / "run"
    cmd = cli("train", str(config), "--out", str(out), "--quiet")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False), out


def test_a_task_registered_in_one_file_runs_from_yaml_with_its_own_metrics(tmp_path, user_task):
    proc, out = train(tmp_path, user_task)
    assert proc.returncode == 0, proc.stderr[-3000:]
    used = set((tmp_path / "used.log").read_text().split())
    assert {"task", "loss", "kd", "check"} <= used  # its loss, its KD term and its target check ran
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "ordinal"
    for part in ("teacher", "nokd", "student"):
        row = metrics["runs"][0][part]
        assert set(row) == {"within_one", "off_by", "loss"}, row
        assert 0.0 <= row["off_by"] <= 3.0
    summary = (out / "summary.md").read_text()
    assert "| model | within-one accuracy | mean class distance |" in summary
    # the monitor defaulted to the task's own metric, which no built-in task has
    assert "monitor: within_one" in (out / "config.yaml").read_text()


def test_the_own_tasks_target_check_guards_item_data(tmp_path, user_task):
    proc, out = train(tmp_path, user_task, extra=", bad_label: true")
    assert proc.returncode != 0
    assert "task 'ordinal': class 7 outside [0, 4) at example index 3" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
