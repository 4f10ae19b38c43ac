"""Process-level guarantees: SIGKILL + --resume is bitwise equal to an uninterrupted run; DDP(2) matches 1 process."""

import json
import signal
import subprocess
import time

import pytest
import torch
from conftest import cli, cli_env

from mmdistill.engine.system.checkpoint import load_tensors


def final_weights(run_dir, part):
    return load_tensors(run_dir / "seed_0" / part / "student.safetensors")[0]


def run_cli(*args, timeout=240):
    proc = subprocess.run(cli(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("kill_when", ["teacher/checkpoints/last.safetensors", "student/checkpoints/last.safetensors"])
def test_sigkill_then_resume_is_bitwise_equal(tiny_config, tmp_path, kill_when):
    config = tiny_config(epochs=6, dropout=0.2)
    run_cli("train", str(config), "--out", str(tmp_path / "full"), "--quiet")

    victim = subprocess.Popen(
        cli("train", str(config), "--out", str(tmp_path / "killed"), "--quiet"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = tmp_path / "killed" / "seed_0" / kill_when
    deadline = time.time() + 200
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists(), "the run must have been killed before finishing"

    run_cli("train", str(config), "--out", str(tmp_path / "killed"), "--quiet", "--resume")
    for part in ("teacher", "student", "nokd"):
        a, b = final_weights(tmp_path / "full", part), final_weights(tmp_path / "killed", part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{part} weights differ after resume"
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert full["summary"] == resumed["summary"]


def test_ddp_two_processes_match_one(tiny_config, tmp_path):
    """gloo DDP, 2 CPU processes, global batch 32 (16 per process) vs 1 process with batch 32.

    Same examples per step and averaged gradients, so weights agree up to float reduction
    order: tolerance 1e-4 on the final weights and 1e-3 on the test metrics.
    """
    config = tiny_config(epochs=3, dropout=0.0)
    run_cli("train", str(config), "--out", str(tmp_path / "one"), "--quiet")
    two = run_cli("train", str(config), "trainer.devices=2", "trainer.strategy=ddp", "--out", str(tmp_path / "two"))
    assert two.stdout.count("wrote ") == 1 and two.stdout.count("test accuracy") == 3, "rank 0 prints the summary"
    for part in ("teacher", "student", "nokd"):
        a, b = final_weights(tmp_path / "one", part), final_weights(tmp_path / "two", part)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=f"{part}.{k}")
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())["summary"]
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())["summary"]
    for key in ("student.accuracy", "nokd.accuracy", "teacher.accuracy"):
        assert abs(m1[key]["mean"] - m2[key]["mean"]) <= 1e-3, key


@pytest.mark.parametrize("method", ["hint", "msd"])
def test_ddp_parity_for_feature_and_modality_methods(tiny_config, tmp_path, method):
    """Hint KD (hooked features, learned projector) and MSD (stacked modality views, cached teacher views)
    under 2-process DDP equal the 1-process run, same tolerance as above."""
    config = tiny_config(epochs=2, dropout=0.0)
    extra = {
        "hint": [
            "method.name=hint",
            "method.params={student_layer: encoders.b.body.2, teacher_layer: encoders.a.body.2}",
        ],
        "msd": ["method.name=msd", "method.params={weighting: instance}", "student.model.modalities=[a,b]"],
    }[method]
    run_cli("train", str(config), *extra, "--no-baseline", "--out", str(tmp_path / "one"), "--quiet")
    run_cli(
        "train",
        str(config),
        *extra,
        "--no-baseline",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "--out",
        str(tmp_path / "two"),
        "--quiet",
    )
    a, b = final_weights(tmp_path / "one", "student"), final_weights(tmp_path / "two", "student")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=f"{method}: {k}")
