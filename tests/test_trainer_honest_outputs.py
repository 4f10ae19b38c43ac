"""What the trainer writes says what happened: no "best" epoch without a finite monitored metric, no epoch logged
twice after a kill before the first checkpoint, no resume on other data, no weights cast without a word."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from safetensors.torch import save_file
from test_trainer_spec import run_fit

from mmdistill.data import build_splits
from mmdistill.engine import trainer as tr
from mmdistill.engine.protocol import summarize_runs
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.errors import CheckpointError, DataError


def test_a_nan_monitor_in_every_epoch_makes_no_epoch_best_and_the_run_says_it_used_the_last_weights(
    toy_splits, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(tr, "evaluate", lambda *a, **k: {"accuracy": math.nan, "f1_macro": math.nan, "loss": 1.0})
    result, module = run_fit(toy_splits, tmp_path, epochs=2)
    assert result.best_epoch == 0 and result.best_value is None
    assert result.test_checkpoint == "last (no epoch had a finite val/accuracy, so none is best)"
    assert not (tmp_path / "checkpoints" / "best.safetensors").exists()
    last, _ = load_tensors(tmp_path / "checkpoints" / "last.safetensors")
    for name, value in module.state_dict().items():
        assert torch.equal(value, last[f"module.{name}"]), name
    assert "test metrics of the last (no epoch had a finite val/accuracy" in capsys.readouterr().err
    runs = [{"seed": 0, "student": {"accuracy": 50.0}, "student_test_checkpoint": result.test_checkpoint}]
    said = summarize_runs(runs, "kd", "best")["reporting"]
    assert said == (
        "test metrics of the best-validation-epoch weights, except seed 0 student: "
        "last (no epoch had a finite val/accuracy, so none is best)"
    )


def _epochs_logged(folder) -> list[int]:
    with open(folder / "metrics.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_a_kill_between_the_first_row_and_the_first_checkpoint_does_not_log_epoch_1_twice(
    toy_splits, tmp_path, monkeypatch
):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a SIGKILL after epoch 1's row, before its checkpoint

    monkeypatch.setattr(tr, "save_training_state", killed)
    with pytest.raises(KeyboardInterrupt):
        run_fit(toy_splits, tmp_path, epochs=2)
    assert _epochs_logged(tmp_path) == [1] and not (tmp_path / "checkpoints" / "last.safetensors").exists()
    monkeypatch.undo()
    run_fit(toy_splits, tmp_path, epochs=2, resume=True)
    assert _epochs_logged(tmp_path) == [1, 2]


def test_resume_on_other_data_is_refused_naming_the_split(toy_splits, tmp_path):
    run_fit(toy_splits, tmp_path, epochs=1)
    other = build_splits("toy-two-modality", {"n": 400, "noise_a": 1.5})
    with pytest.raises(
        DataError,
        match=r"--resume: the train data differ from those the run trained on until .*"
        r"last\.safetensors .*the data files or the dataset factory's code changed",
    ):
        run_fit(other, tmp_path, epochs=2, resume=True)
    run_fit(toy_splits, tmp_path, epochs=2, resume=True)  # the same data resume


class Items:
    """Item data without a fingerprint() of its own (as a user's Dataset)."""

    def __init__(self, values):
        self.values = values

    def __len__(self):
        return len(self.values)

    def __getitems__(self, idx):
        return {"a": torch.tensor([[self.values[i]] for i in idx]), "label": torch.tensor([0 for _ in idx])}


def test_item_data_without_a_fingerprint_are_fingerprinted_by_their_length_and_sample_items():
    base = tr.data_fingerprint(Items([1.0, 2.0, 3.0, 4.0]))
    assert base == tr.data_fingerprint(Items([1.0, 2.0, 3.0, 4.0]))
    assert base != tr.data_fingerprint(Items([1.0, 2.0, 3.0, 5.0]))  # the last item changed
    assert base != tr.data_fingerprint(Items([1.0, 2.0, 3.0, 4.0, 5.0]))


def test_an_int8_teacher_checkpoint_without_a_checksum_is_refused_not_cast(tmp_path):
    from mmdistill.engine.assembly import load_teacher_weights

    teacher = torch.nn.Sequential(torch.nn.Linear(3, 2))
    path = tmp_path / "teacher_int8.safetensors"
    save_file({k: v.round().to(torch.int8) for k, v in teacher.state_dict().items()}, str(path))  # no checksum
    with pytest.raises(
        CheckpointError,
        match=r"teacher\.checkpoint: .*holds '0\.(weight|bias)' as torch\.int8 where the "
        r"model has torch\.float32",
    ):
        load_teacher_weights(teacher, path)
