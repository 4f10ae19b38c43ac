"""On a CUDA GPU (skipped without one): every method, MSD weighting, masking strategy and task trains end to end
with ``trainer.accelerator=gpu``, and ``evaluate`` / ``analyze`` work on the GPU run folder.

The CPU suite cannot see device mix-ups (a CPU tensor meeting a CUDA one inside a loss, a metric or the epoch
means); these runs can (e.g. epoch means whose counts are built on the CPU). Run on
a machine with a GPU: ``python -m pytest -q tests/test_cuda.py`` (about a minute on an H100).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import cli, cli_env
from test_methods_cli import CASES
from test_task_runs_cli import SEG_CONFIG, SEG_SMALL

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")

GPU = ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"]
BUILT_IN = {
    "kd": ([], ["ce", "kd"]),
    "supervised": (["method.params={}"], ["ce"]),
    "hint": (["method.params={student_layer: encoders.b.body.2, teacher_layer: encoders.a.body.2}"], ["ce"]),
}
TWO = "student.model.modalities=[a,b]"  # MSD needs modalities both models read
MSD = {
    "msd-uniform-zeros": ([TWO, "method.params={weighting: uniform}", "masking.strategy=zeros"], []),
    "msd-population-mean": ([TWO, "method.params={weighting: population}", "masking.strategy=mean"], []),
    "msd-instance-learned": (  # learned null tokens change in training: no teacher cache
        [TWO, "method.params={weighting: instance}", "masking.strategy=learned", "cache.enabled=false"],
        [],
    ),
    "msd-learned-zeros": ([TWO, "method.params={weighting: learned, heldout_fraction: 0.2}"], []),
}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cli(*args), env=cli_env(), cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("name", sorted({**CASES, **BUILT_IN, **MSD}))
def test_every_method_trains_on_the_gpu_in_bf16(tiny_config, tmp_path, name):
    extra, terms = {**CASES, **BUILT_IN, **MSD}[name]
    method = "msd" if name.startswith("msd-") else name
    out = tmp_path / "run"
    args = [str(tiny_config(epochs=2)), f"method.name={method}", *extra, *GPU, "--no-baseline", "--quiet"]
    run_cli("train", *args, "--out", str(out), cwd=tmp_path)
    with open(out / "seed_0" / "student" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for term in ["loss", *terms]:
        assert math.isfinite(float(rows[-1][f"train/{term}"])), (name, term, rows[-1])
    test = json.loads((out / "metrics.json").read_text())["runs"][0]["student"]
    assert 0.0 <= test["accuracy"] <= 1.0


def test_a_gpu_run_folder_is_evaluated_and_analyzed(tiny_config, tmp_path):
    out = tmp_path / "run"
    run_cli("train", str(tiny_config(epochs=2)), *GPU, "--seeds", "2", "--quiet", "--out", str(out), cwd=tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "student-nokd.accuracy" in metrics["paired"]
    proc = run_cli("evaluate", str(out), "--missing", "--noise", "--levels", "0", "0.5", "--json", cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert report["missing"] and report["noise"], sorted(report)
    for seed, run in enumerate(metrics["runs"]):  # reloaded weights score what training reported
        for part in ("teacher", "nokd", "student"):
            assert report["metrics"][f"seed_{seed}/{part}"]["accuracy"] == pytest.approx(run[part]["accuracy"])
    run_cli("analyze", "modalities", str(out), cwd=tmp_path)


def test_segmentation_kd_trains_on_the_gpu(tmp_path):
    run_cli("train", str(SEG_CONFIG), *SEG_SMALL, *GPU, "--seeds", "1", "--out", "seg", cwd=tmp_path)
    run = json.loads((tmp_path / "seg" / "metrics.json").read_text())["runs"][0]
    for part in ("teacher", "nokd", "student"):
        assert 0.0 <= run[part]["miou"] <= 1.0, (part, run[part])
