"""End to end: ``mmdistill train`` (in process, as ``mmdistill.cli.main``) runs each of the methods below
(dkd, dist, logit_std_kd, at, pkt, rkd, sp, crd, c2kd, mfh_general, mlld, fd_cmkd, dml with a teacher that learns
alongside, and the several-teacher methods, mst_distill from two teachers) on the tiny config (1 epoch, no no-KD
student).

Each run must finish and log every named term of the method, finite, in the student's metrics.csv.
AT needs spatial maps: its run swaps the MLP
encoders for 1-D CNNs on the 16-dim vectors.
"""

from __future__ import annotations

import csv
import math

import pytest

from mmdistill.cli import main

MLP_LAYERS = "student_layer: encoders.b.body.2, teacher_layer: encoders.a.body.2"
CNN = [
    "student.model.encoder={type: cnn1d, channels: [4], out_dim: 8}",
    "teacher.model.encoder={type: cnn1d, channels: [6], out_dim: 16}",
]

TWO_TEACHERS = (  # a teacher on both modalities and one on a alone
    "teachers={both: {model: {modalities: [a, b], encoder: {hidden: [16], out_dim: 8}}}, "
    "a: {model: {modalities: [a], encoder: {hidden: [16], out_dim: 8}}}}"
)

CASES = {
    "dkd": (["method.params={temperature: 2.0, warmup_steps: 3}"], ["ce", "tckd", "nckd"]),
    "dist": (["method.params={tau: 2.0}"], ["ce", "inter", "intra"]),
    "logit_std_kd": (["method.params={temperature: 2.0}"], ["ce", "kd"]),
    "at": (
        CNN + ["method.params={student_layer: encoders.b.body.0, teacher_layer: encoders.a.body.0, form: paper}"],
        ["ce", "at"],
    ),
    "pkt": ([f"method.params={{{MLP_LAYERS}}}"], ["ce", "pkt"]),
    "rkd": ([f"method.params={{{MLP_LAYERS}}}"], ["ce", "rkd_distance", "rkd_angle"]),
    "sp": ([f"method.params={{{MLP_LAYERS}}}"], ["ce", "sp"]),
    "crd": ([f"method.params={{{MLP_LAYERS}, nce_k: 64, feat_dim: 8}}"], ["ce", "crd_s", "crd_t"]),
    "c2kd": ([f"method.params={{{MLP_LAYERS}}}"], ["ce", "proxy_s", "output_s", "proxy_t", "ofsd_s", "ofsd_t"]),
    "mfh_general": (
        ["method.params={teacher_layer: encoders.a.body.3, keep_ratio: 0.5, salience_epochs: 20}"],
        ["ce", "kd"],
    ),
    "mlld": (["method.params={temperatures: [1.0, 2.0]}"], ["ce", "instance", "batch", "class"]),
    "fd_cmkd": (
        [f"method.params={{{MLP_LAYERS}}}"],
        ["ce", "low", "high", "align_low", "align_high", "task_low", "task_high"],
    ),
    "dml": (["method.params={}", "teacher.trainable=true"], ["ce", "kl", "ce_t", "kl_t"]),
    "multi_teacher_kd": (["method.params={weights: [1.0]}"], ["ce", "kd"]),
    "multi_teacher_adaptive": (["method.params={weighting: entropy}"], ["ce", "kd"]),
    "mst_distill": (["method.params={}", "teacher=null", TWO_TEACHERS], ["ce", "kd", "balance", "mask"]),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_train_runs_every_new_method(tiny_config, tmp_path, method):
    extra, terms = CASES[method]
    config = tiny_config(epochs=1)
    out = tmp_path / "run"
    argv = ["train", str(config), f"method.name={method}", *extra, "--no-baseline", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    with open(out / "seed_0" / "student" / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    for term in terms:
        assert f"train/{term}" in row, f"{method}: term {term} not logged; columns {list(row)}"
        assert math.isfinite(float(row[f"train/{term}"])), f"{method}: {term} = {row[f'train/{term}']}"
