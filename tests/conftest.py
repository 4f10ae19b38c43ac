"""Shared fixtures: tiny data and configs; one torch thread so tests are steady on shared machines."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ["MMDISTILL_CACHE"] = tempfile.mkdtemp(prefix="mmdistill-test-cache-")  # never the user's cache

TINY_YAML = """\
seed: 0
data: {{name: toy-two-modality, params: {{n: 400}}}}
teacher:
  model: {{modalities: [a, b], encoder: {{type: mlp, hidden: [32], out_dim: 16, dropout: {dropout}}}}}
student:
  model: {{modalities: [b], encoder: {{type: mlp, hidden: [16], out_dim: 8, dropout: {dropout}}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
trainer: {{epochs: {epochs}, batch_size: 32, num_threads: 1}}
cache: {{dir: {cache}}}
"""


@pytest.fixture
def tiny_config(tmp_path: Path):
    """Write a tiny KD config and return its path; keyword args change epochs/dropout."""

    def make(epochs: int = 3, dropout: float = 0.0, name: str = "tiny.yaml") -> Path:
        path = tmp_path / name
        path.write_text(TINY_YAML.format(epochs=epochs, dropout=dropout, cache=tmp_path / "cache"))
        return path

    return make


@pytest.fixture
def toy_splits():
    from mmdistill.data import build_splits

    return build_splits("toy-two-modality", {"n": 400})


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmdistill", *args]
