"""What a run leaves behind: metrics.csv append-only and trimmed on resume, determinism settings restored,
evaluation metrics reused, and the plain-PyTorch step equal to Fabric's."""

import csv
import os

import pytest
import torch
from test_training import models

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.engine import metrics as metrics_mod
from mmdistill.engine import trainer as trainer_mod
from mmdistill.engine.api import distill
from mmdistill.engine.metrics import evaluate
from mmdistill.engine.system.logging import RunLogger
from mmdistill.engine.trainer import eval_batches


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_metrics_csv_is_appended_not_rewritten_and_resume_drops_rows_atomically(tmp_path):
    log = RunLogger(tmp_path, 5, quiet=True)
    log.log_epoch(1, {"train/loss": 1.0, "val/accuracy": 0.5})
    inode = os.stat(tmp_path / "metrics.csv").st_ino
    log.log_epoch(2, {"train/loss": 0.9, "val/accuracy": 0.6})
    log.log_epoch(3, {"train/loss": 0.8, "val/accuracy": 0.7})
    assert os.stat(tmp_path / "metrics.csv").st_ino == inode, "an epoch appends a row; the file is not replaced"
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("4,0.7")  # a kill in the middle of appending epoch 4's row
    log.close()
    again = RunLogger(tmp_path, 5, quiet=True)
    again.resume_at(2)  # the checkpoint was of epoch 2
    assert [r["epoch"] for r in _rows(tmp_path / "metrics.csv")] == ["1", "2"]
    assert os.stat(tmp_path / "metrics.csv").st_ino != inode, "rows are dropped by an atomic rewrite"
    again.log_epoch(3, {"train/loss": 0.8, "val/accuracy": 0.7})
    again.close()
    rows = _rows(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[2] == {
        "epoch": "3",
        "train/loss": "0.8",
        "val/accuracy": "70",  # logged in percent
    }
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_partial_last_row_is_not_kept_when_the_next_epoch_appends(tmp_path):
    log = RunLogger(tmp_path, 3, quiet=True)
    log.log_epoch(1, {"a": 1.0})
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("2,")
    log.log_epoch(2, {"a": 2.0})
    log.close()
    assert (tmp_path / "metrics.csv").read_text() == "epoch,a\n1,1\n2,2\n"


@pytest.mark.parametrize("before", [(False, False), (True, False), (True, True)])
def test_distill_restores_the_callers_determinism_settings(toy_splits, tmp_path, monkeypatch, before):
    seen = []
    real_fit = trainer_mod.fit

    def spy(*args, **kwargs):
        seen.append(
            (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        )
        return real_fit(*args, **kwargs)

    monkeypatch.setattr("mmdistill.engine.assembly.fit", spy)
    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    try:
        _, student = models(toy_splits)
        distill(student, None, toy_splits, tmp_path / "r", "supervised", trainer=TrainerConfig(epochs=1, batch_size=64))
        after = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
    assert seen == [(True, True)], "a CPU run trains with deterministic kernels (warn only)"
    assert after == before


def test_evaluate_reuses_its_metric_objects_and_resets_them(toy_splits, monkeypatch):
    from mmdistill.tasks.classification import Classification

    built = []
    real = Classification.metrics
    monkeypatch.setattr(Classification, "metrics", lambda self, n, *a, **k: built.append(n) or real(self, n, *a, **k))
    metrics_mod._reusable.cache_clear()
    _, student = models(toy_splits)
    n = toy_splits.num_classes
    first = [
        evaluate(student, eval_batches(split, 64), n) for split in (toy_splits.val, toy_splits.test, toy_splits.val)
    ]
    assert built == [n], "one set of metric objects for every evaluation with the same classes and device"
    metrics_mod._reusable.cache_clear()
    fresh = [evaluate(student, eval_batches(split, 64), n) for split in (toy_splits.val, toy_splits.test)]
    assert first[0] == fresh[0] == first[2] and first[1] == fresh[1], "no state carried over from a previous evaluation"


def test_the_plain_pytorch_step_gives_the_weights_of_fabrics_step(toy_splits, tmp_path, monkeypatch):
    trainer = TrainerConfig(epochs=2, batch_size=32, grad_clip=0.5)
    finals = []
    for plain in (True, False):
        monkeypatch.setattr(trainer_mod, "_plain_pytorch_step", lambda fabric, cfg, plain=plain: plain)
        teacher, student = models(toy_splits)
        distill(
            student,
            teacher,
            toy_splits,
            tmp_path / str(plain),
            "kd",
            trainer=trainer,
            cache=CacheConfig(dir=tmp_path / "c"),
        )
        finals.append(student.state_dict())
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
    assert (tmp_path / "True" / "metrics.csv").read_text() == (tmp_path / "False" / "metrics.csv").read_text()
