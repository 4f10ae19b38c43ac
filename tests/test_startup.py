"""Start-up: the single-CPU-process train path does not import Lightning Fabric.

Timings live in benchmarks/bench_startup.py and docs/benchmarks.md; these tests check what makes them.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import cli, cli_env

from mmdistill.config import TrainerConfig
from mmdistill.engine.system.launch import SingleCPUProcess, make_fabric, needs_fabric


def test_importing_the_engine_api_imports_neither_lightning_nor_torchmetrics():
    code = (
        "import sys\nimport mmdistill.engine.api\n"
        "heavy = sorted(m for m in ('lightning_fabric', 'torchmetrics', 'torch._dynamo') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_single_cpu_train_run_imports_neither_lightning_nor_torchmetrics(tiny_config, tmp_path):
    """lightning_fabric is never imported; a classification run in one process counts its metrics itself, so
    torchmetrics (with the transformers and scipy.signal it imports) is never imported either."""
    env = dict(cli_env(), MMDISTILL_TRACE_STARTUP="1", PYTHONVERBOSE="1")
    proc = subprocess.run(
        cli("train", str(tiny_config(epochs=1)), "--seeds", "1", "--out", str(tmp_path / "r"), "--quiet"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    first_step = [i for i, line in enumerate(lines) if "first training step at unix time" in line]
    assert len(first_step) == 1, "MMDISTILL_TRACE_STARTUP=1 prints exactly one line"
    assert not [line for line in lines if line.startswith("import 'lightning_fabric'")]
    assert not [line for line in lines if line.startswith("import 'torchmetrics'")]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({}, False),
        ({"devices": 2, "strategy": "ddp"}, True),
        ({"devices": 2}, True),
        ({"precision": "bf16-mixed"}, True),
        ({"strategy": "ddp"}, True),
        ({"num_nodes": 2}, True),
    ],
)
def test_fabric_only_where_the_run_needs_it(overrides, expected, monkeypatch):
    for var in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    cfg = TrainerConfig(**overrides)
    assert needs_fabric(cfg) is expected
    if not expected:
        assert isinstance(make_fabric(cfg), SingleCPUProcess)
    monkeypatch.setenv("LOCAL_RANK", "0")  # started by a launcher (torchrun): Fabric sets up the process group
    assert needs_fabric(cfg) is True


def test_the_stand_in_seeds_exactly_as_fabric(monkeypatch):
    from lightning_fabric import Fabric

    def draws():
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    for var in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    assert Fabric.seed_everything(123, verbose=False) == 123
    fabric_draws, fabric_env = draws(), (os.environ["PL_GLOBAL_SEED"], os.environ["PL_SEED_WORKERS"])
    for var in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(var)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    assert SingleCPUProcess().seed_everything(123, verbose=False) == 123
    assert draws() == fabric_draws
    assert (os.environ["PL_GLOBAL_SEED"], os.environ["PL_SEED_WORKERS"]) == fabric_env
