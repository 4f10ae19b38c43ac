"""The run assembly refuses, before any model trains, what would otherwise be refused only after one trained (the
teacher of a ``train`` run, or the student of a ``distill()`` call): the cache's settings, the data's fingerprint, a
non-finite validation or test item, the same module as teacher and student, a student without trainable
parameters; and an error of the cache's disk names the cache, not the output folder."""

from __future__ import annotations

import errno

import pytest
import torch
from torch.utils.data import Dataset

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.engine.api import distill
from mmdistill.errors import CheckpointError, ConfigError, DataError, MachineError
from mmdistill.failures import explain
from mmdistill.models import ModelConfig, build_model

ONE_EPOCH = TrainerConfig(epochs=1, batch_size=64, num_threads=1)


def _model(data, modalities, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(modalities=modalities, encoder={"hidden": [8], "out_dim": 8}), data.train.specs(), 4)


class Rows(Dataset):
    """Items of a column split as dicts; ``fingerprint`` (when given) is what ``fingerprint()`` returns."""

    num_classes = 4

    def __init__(self, split, nan_row: int | None = None, fingerprint="rows-v1"):
        self.split, self.nan_row = split, nan_row
        self.fingerprint = lambda: fingerprint

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        batch = self.split.__getitems__([i])
        item = {"a": batch["a"][0].clone(), "b": batch["b"][0].clone(), "label": batch["label"][0]}
        if i == self.nan_row:
            item["b"][0] = float("nan")
        return item


def _items(data, **test_kw):
    return {"train": Rows(data.train), "val": Rows(data.val), "test": Rows(data.test, **test_kw)}


def test_the_same_module_as_teacher_and_student_is_refused(toy_splits, tmp_path):
    model = _model(toy_splits, ["a", "b"])
    with pytest.raises(ConfigError, match="teacher and student are the same module"):
        distill(model, model, toy_splits, tmp_path / "same", "kd", trainer=ONE_EPOCH)
    student = _model(toy_splits, ["a", "b"], seed=1)
    student.encoders = model.encoders  # shares the teacher's encoders
    with pytest.raises(ConfigError, match="teacher and student share .* parameter tensor"):
        distill(student, model, toy_splits, tmp_path / "shared", "kd", trainer=ONE_EPOCH)
    assert not (tmp_path / "same").exists() and not (tmp_path / "shared").exists()


def test_a_student_without_trainable_parameters_is_refused(toy_splits, tmp_path):
    student = _model(toy_splits, ["b"]).requires_grad_(False)
    with pytest.raises(ConfigError, match="student: .* has no trainable parameters"):
        distill(student, None, toy_splits, tmp_path / "run", "supervised", trainer=ONE_EPOCH)
    assert not (tmp_path / "run").exists()


def test_a_bad_cache_memory_setting_is_refused_before_the_teacher_trains(tiny_config, tmp_path, monkeypatch):
    from mmdistill.config import load_config
    from mmdistill.engine.protocol import run_config

    monkeypatch.setenv("MMDISTILL_CACHE_MEMORY_MB", "lots")
    cfg = load_config(tiny_config(epochs=1), ["data.params.n=200"])
    with pytest.raises(CheckpointError, match="MMDISTILL_CACHE_MEMORY_MB='lots'"):
        run_config(cfg, tmp_path / "run", seeds=[0], quiet=True)
    assert not (tmp_path / "run").exists(), "refused before the teacher trained: nothing written"


def test_a_folder_under_a_cache_files_name_is_refused_before_training(toy_splits, tmp_path):
    cache = tmp_path / "cache"
    (cache / ("0" * 32 + ".safetensors")).mkdir(parents=True)
    teacher, student = _model(toy_splits, ["a", "b"]), _model(toy_splits, ["b"], seed=1)
    with pytest.raises(ConfigError, match=r"cache\.dir: .*0{32}\.safetensors is not a teacher-cache file"):
        distill(student, teacher, toy_splits, tmp_path / "run", "kd", trainer=ONE_EPOCH, cache=CacheConfig(dir=cache))
    assert not (tmp_path / "run").exists()


def test_a_fingerprint_that_gives_none_is_refused_before_training(toy_splits, tmp_path):
    teacher, student = _model(toy_splits, ["a", "b"]), _model(toy_splits, ["b"], seed=1)
    items = _items(toy_splits)
    items["train"].fingerprint = lambda: None
    with pytest.raises(ConfigError, match=r"fingerprint\(\) returned None, not a string"):
        distill(student, teacher, out_dir=tmp_path / "run", method="kd", trainer=ONE_EPOCH, **items)
    assert not (tmp_path / "run").exists()


def test_a_nan_in_a_test_item_is_refused_before_training(toy_splits, tmp_path):
    student = _model(toy_splits, ["b"])
    with pytest.raises(DataError, match=r"item 3, key 'b': NaN/Inf"):
        distill(student, None, out_dir=tmp_path / "run", method="supervised", **_items(toy_splits, nan_row=3))
    assert not (tmp_path / "run").exists(), "refused before the student trained: nothing written"


def test_a_full_cache_disk_is_reported_as_the_cache_not_the_output_folder(toy_splits, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as os.pwrite reports it: no file name

    monkeypatch.setattr("mmdistill.engine.system.checkpoint.RowsWriter.write", full_disk)
    teacher, student = _model(toy_splits, ["a", "b"]), _model(toy_splits, ["b"], seed=1)
    with pytest.raises(MachineError) as caught:
        distill(
            student, teacher, toy_splits, tmp_path / "run", "kd", trainer=ONE_EPOCH, cache=CacheConfig(dir=tmp_path)
        )
    code, line = explain(caught.value, where=f"writing to --out {tmp_path / 'run'}")
    assert code == 1 and line.startswith(f"cache.dir: cannot write the teacher cache in {tmp_path} (No space left")
    assert "--out" not in line
