"""Two teachers on different modalities distilled into one student from the CLI (``mmdistill train``): each teacher
trained in its own folder, the run SIGKILLed while the student trains and resumed, bitwise equal to a run that was
never interrupted. The method is MST-Distill, whose router and masks train with the student and must resume too."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
from conftest import cli, cli_env

from mmdistill.engine.system.checkpoint import load_tensors

TWO_TEACHERS_YAML = """\
seed: 0
data: {{name: toy-two-modality, params: {{n: 300}}}}
teachers:
  clean: {{model: {{modalities: [a], encoder: {{type: mlp, hidden: [16], out_dim: 8, dropout: 0.2}}}}}}
  noisy: {{model: {{modalities: [b], encoder: {{type: mlp, hidden: [16], out_dim: 8, dropout: 0.2}}}}}}
student:
  model: {{modalities: [b], encoder: {{type: mlp, hidden: [16], out_dim: 8, dropout: 0.2}}}}
method: {{name: {method}, params: {{temperature: 2.0}}}}
trainer: {{epochs: 6, batch_size: 32, num_threads: 1}}
cache: {{dir: {cache}}}
"""

PARTS = ("teacher_clean", "teacher_noisy", "student", "nokd")


def _weights(run, part):
    return load_tensors(run / "seed_0" / part / "student.safetensors")[0]


def _run(*args):
    proc = subprocess.run(cli(*args), env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_teachers_sigkill_then_resume_is_bitwise_equal(tmp_path):
    config = tmp_path / "two.yaml"
    config.write_text(TWO_TEACHERS_YAML.format(method="mst_distill", cache=tmp_path / "cache"))
    _run("train", str(config), "--out", str(tmp_path / "full"), "--quiet", "--no-baseline")
    victim = subprocess.Popen(
        cli("train", str(config), "--out", str(tmp_path / "killed"), "--quiet", "--no-baseline"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = tmp_path / "killed" / "seed_0" / "student" / "checkpoints" / "last.safetensors"
    deadline = time.time() + 200
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the run must have been killed before finishing"

    _run("train", str(config), "--out", str(tmp_path / "killed"), "--quiet", "--no-baseline", "--resume")
    for part in PARTS[:3]:
        full, resumed = _weights(tmp_path / "full", part), _weights(tmp_path / "killed", part)
        assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full), part
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert full["summary"] == resumed["summary"]
    assert set(full["runs"][0]) >= {"teacher_clean", "teacher_noisy", "student"}
    assert {"teacher_clean.accuracy", "teacher_noisy.accuracy"} <= set(full["summary"])
    summary = (tmp_path / "killed" / "summary.md").read_text()
    assert "| teacher_clean |" in summary and "| teacher_noisy |" in summary
