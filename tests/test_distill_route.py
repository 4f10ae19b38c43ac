"""The Python route ``distill()``: a run already in ``out_dir`` is never replaced silently, ``distill()`` never writes
into another command's run folder or over its teacher's weights, and it shows progress by default."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from mmdistill.config import TrainerConfig
from mmdistill.engine.api import distill
from mmdistill.errors import ConfigError, OutputExistsError
from mmdistill.models import ModelConfig, build_model

ONE_EPOCH = TrainerConfig(epochs=1, batch_size=64, num_threads=1)


def _model(data, modalities, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(modalities=modalities, encoder={"hidden": [8], "out_dim": 8}), data.train.specs(), 4)


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _supervised(data, out, seed=0, **kw):
    return distill(_model(data, ["b"], seed), None, data, out, "supervised", trainer=ONE_EPOCH, quiet=True, **kw)


def test_a_finished_distill_run_is_refused_kept_continued_or_replaced_on_request(toy_splits, tmp_path):
    out = tmp_path / "run"
    _supervised(toy_splits, out)
    before = _snapshot(out)
    with pytest.raises(OutputExistsError, match=r"already holds a finished distill\(\) run .*resume=True.*overwrite"):
        _supervised(toy_splits, out, seed=1)
    assert _snapshot(out) == before, "a refused call changes nothing"

    again = _supervised(toy_splits, out, seed=1, resume=True)  # continued: the finished run is kept, not retrained
    assert again.epochs_run == 1
    kept = _snapshot(out)
    assert [kept[k] == before[k] for k in ("student.safetensors", "checkpoints/last.safetensors")] == [True, True]

    _supervised(toy_splits, out, seed=1, overwrite=True)  # replaced on request: another seed, other weights
    assert _snapshot(out)["student.safetensors"] != before["student.safetensors"]

    with pytest.raises(ConfigError, match="resume=True and overwrite=True"):
        _supervised(toy_splits, out, resume=True, overwrite=True)


def test_overwrite_replaces_only_mmdistills_own_folder_and_nothing_mixed_in(toy_splits, tmp_path):
    out = tmp_path / "run"
    _supervised(toy_splits, out)
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    with pytest.raises(OutputExistsError, match=r"overwrite=True replaces only mmdistill's own outputs.*notes\.txt"):
        _supervised(toy_splits, out, overwrite=True)
    assert _snapshot(out) == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    with pytest.raises(OutputExistsError, match="did not create"):
        _supervised(toy_splits, foreign, overwrite=True)
    assert [p.name for p in foreign.iterdir()] == ["data.csv"]


def test_an_interrupted_distill_run_is_refused_without_resume_or_overwrite(toy_splits, tmp_path):
    out = tmp_path / "run"
    _supervised(toy_splits, out)
    (out / "result.json").unlink()  # as if killed before the end
    before = _snapshot(out)
    with pytest.raises(OutputExistsError, match=r"interrupted distill\(\) run .*resume=True"):
        _supervised(toy_splits, out)
    assert _snapshot(out) == before
    _supervised(toy_splits, out, resume=True)
    assert (out / "result.json").is_file()


def test_distill_never_writes_into_a_train_run_folder(toy_splits, tmp_path, tiny_config):
    from mmdistill.config import load_config
    from mmdistill.engine.protocol import run_config

    run = tmp_path / "train_run"
    cfg = load_config(tiny_config(epochs=1), ["data.params.n=200", "trainer.batch_size=64"])
    run_config(cfg, run, seeds=[0], baseline=False, quiet=True)
    before = _snapshot(run)
    for out in (run, run / "seed_0" / "student", run / "elsewhere"):
        with pytest.raises(OutputExistsError, match="'train' run"):
            _supervised(toy_splits, out, overwrite=True)
    assert _snapshot(run) == before, "the train run is untouched"


def test_distill_refuses_the_folder_that_holds_its_teachers_weights(toy_splits, tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher = _model(toy_splits, ["a", "b"])
    distill(teacher, None, toy_splits, teacher_dir, "supervised", trainer=ONE_EPOCH, quiet=True)
    before = _snapshot(teacher_dir)
    student = _model(toy_splits, ["b"], seed=1)
    for how in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(OutputExistsError, match="holds the weights of this run's teacher"):
            distill(student, teacher, toy_splits, teacher_dir, "kd", trainer=ONE_EPOCH, quiet=True, **how)
    assert _snapshot(teacher_dir) == before


def test_distill_shows_progress_by_default_and_quiet_silences_it(toy_splits, tmp_path, capfd):
    """stderr is not a terminal here: one line per epoch (a progress bar on a terminal), as the CLI shows."""
    two_epochs = TrainerConfig(epochs=2, batch_size=64, num_threads=1)
    distill(_model(toy_splits, ["b"]), None, toy_splits, tmp_path / "shown", "supervised", trainer=two_epochs)
    assert [line.split(" loss")[0] for line in capfd.readouterr().err.splitlines() if ": epoch " in line] == [
        "train: epoch 1/2",
        "train: epoch 2/2",
    ]
    student = _model(toy_splits, ["b"])
    distill(student, None, toy_splits, tmp_path / "quiet", "supervised", trainer=two_epochs, quiet=True)
    assert ": epoch " not in capfd.readouterr().err
