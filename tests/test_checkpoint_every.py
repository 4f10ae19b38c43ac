"""trainer.checkpoint_every: resumable checkpoints every k epochs and after the final one; resume stays bitwise."""

from __future__ import annotations

import pytest
import torch

from mmdistill.config import EarlyStoppingConfig, TrainerConfig, load_config
from mmdistill.engine import trainer as trainer_mod
from mmdistill.engine.api import distill
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.errors import ConfigError
from mmdistill.models import ModelConfig, build_model


def student(data):
    torch.manual_seed(1)
    return build_model(ModelConfig(modalities=["b"]), data.train.specs(), data.num_classes)


def saved_epochs(monkeypatch) -> list[int]:
    """The epochs after which ``last.safetensors`` is written, recorded as the run goes."""
    saved: list[int] = []
    real = trainer_mod.save_training_state

    def spy(path, module, optimizer, scheduler, state, generators=None):
        saved.append(state["epoch"])
        return real(path, module, optimizer, scheduler, state, generators)

    monkeypatch.setattr(trainer_mod, "save_training_state", spy)
    return saved


@pytest.mark.parametrize("every, expected", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (3, [3, 5]), (9, [5])])
def test_last_checkpoint_every_k_epochs_and_after_the_final_one(toy_splits, tmp_path, monkeypatch, every, expected):
    saved = saved_epochs(monkeypatch)
    trainer = TrainerConfig(epochs=5, batch_size=64, checkpoint_every=every)
    distill(student(toy_splits), None, toy_splits, tmp_path / "r", "supervised", trainer=trainer, quiet=True)
    assert saved == expected
    assert (tmp_path / "r" / "checkpoints" / "best.safetensors").is_file()


def test_an_early_stop_writes_its_checkpoint(toy_splits, tmp_path, monkeypatch):
    saved = saved_epochs(monkeypatch)
    trainer = TrainerConfig(
        epochs=20,
        batch_size=64,
        checkpoint_every=7,
        monitor="loss",
        early_stopping=EarlyStoppingConfig(patience=1, min_delta=1e9),  # no epoch improves on the first
    )
    result = distill(student(toy_splits), None, toy_splits, tmp_path / "r", "supervised", trainer=trainer, quiet=True)
    assert result.stopped_early and saved == [result.epochs_run] == [2]
    state = load_tensors(tmp_path / "r" / "checkpoints" / "last.safetensors")[1]
    assert state["stopped_early"] is True


class Interrupted(Exception):
    pass


def test_a_run_interrupted_between_checkpoints_resumes_bitwise(toy_splits, tmp_path, monkeypatch):
    trainer = TrainerConfig(epochs=4, batch_size=64, checkpoint_every=2)

    def run(out, resume=False):
        return distill(
            student(toy_splits), None, toy_splits, out, "supervised", trainer=trainer, resume=resume, quiet=True
        )

    full = run(tmp_path / "full")
    real_report = trainer_mod.report_epoch

    def stop_after_epoch_3(report):
        real_report(report)
        if report.epoch == 3:
            raise Interrupted

    monkeypatch.setattr(trainer_mod, "report_epoch", stop_after_epoch_3)
    with pytest.raises(Interrupted):
        run(tmp_path / "split")
    assert load_tensors(tmp_path / "split" / "checkpoints" / "last.safetensors")[1]["epoch"] == 2
    monkeypatch.setattr(trainer_mod, "report_epoch", real_report)
    resumed = run(tmp_path / "split", resume=True)
    for name, value in full.student.state_dict().items():
        assert torch.equal(value, resumed.student.state_dict()[name]), name
    assert resumed.test == full.test
    epochs = [line.split(",")[0] for line in (tmp_path / "split" / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4"]


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "often"])
def test_a_bad_checkpoint_every_is_a_config_error_naming_the_key(tmp_path, value):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  name: toy-two-modality\n")
    with pytest.raises(ConfigError, match="trainer.checkpoint_every"):
        load_config(config, [f"trainer.checkpoint_every={value}"], check_machine=False)


def test_a_resume_may_change_checkpoint_every(tiny_config, tmp_path):
    from mmdistill.cli import main

    config, out = str(tiny_config(epochs=2)), str(tmp_path / "run")
    assert main(["train", config, "--out", out, "--quiet", "--no-baseline", "trainer.checkpoint_every=2"]) == 0
    resumed = ["train", config, "--out", out, "--quiet", "--no-baseline", "--resume", "--seeds", "2"]
    resumed.append("trainer.checkpoint_every=1")
    assert main(resumed) == 0
