"""A built run's training (``Run.fit`` in ``engine/assembly.py``), in this process on tiny data, one epoch: what it
returns and writes (result.json, the student's checkpoint, the record of a ``distill()`` folder or the reason there
is none, nothing of that in a part of a ``train`` run), the progress it shows by default, the columns a step reads
with a cached or an online teacher, a cache stored as asked (top-K logits, one table per teacher), the masker of an
online teacher's views, and one loss checked on a sample."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.data.contracts.item_dataset import as_splits
from mmdistill.engine import assembly
from mmdistill.engine.assembly import RunSpec, build_run
from mmdistill.engine.system import runfolder
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.engine.teacher import TeacherGroup, TeacherTable
from mmdistill.errors import OutputExistsError
from mmdistill.models import ModelConfig, build_model

ONE_EPOCH = TrainerConfig(epochs=1, batch_size=64, num_threads=1)


@pytest.fixture(scope="module")
def toy():
    return build_splits("toy-two-modality", {"n": 40})


def _model(data, modalities, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(modalities=modalities, encoder={"hidden": [8], "out_dim": 8}), data.train.specs(), 4)


@pytest.fixture
def trained_on(monkeypatch):
    """The modalities of each training split the run trains on (what a step reads)."""
    seen: list[list[str]] = []
    real = assembly.fit

    def spy(fabric, module, train, *args):
        seen.append(list(train.modality_names))
        return real(fabric, module, train, *args)

    monkeypatch.setattr(assembly, "fit", spy)
    return seen


def test_a_run_fitted_with_the_defaults_reports_and_writes_its_results(toy, tmp_path, capfd, trained_on):
    spec = RunSpec(
        _model(toy, ["b"]), _model(toy, ["a", "b"], seed=1), toy, tmp_path / "run", "kd", {"temperature": 2.0},
        trainer=ONE_EPOCH, cache=CacheConfig(dir=tmp_path / "cache", top_k=2), seed=5,
    )  # fmt: skip
    result = build_run(spec).fit()
    assert [line.split(" loss")[0] for line in capfd.readouterr().err.splitlines() if ": epoch " in line] == [
        "train: epoch 1/1"
    ]
    assert trained_on == [["b"]], "a cached teacher is looked up by row: the steps read the student's modality only"
    written = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (written["val"], written["test"]) == (result.val, result.test) and "accuracy" in result.val
    assert (written["seed"], written["method"], written["task"]) == (5, "kd", "classification")
    assert "not_a_run_folder" not in written
    assert (result.best_epoch, result.epochs_run, result.stopped_early) == (1, 1, False)
    assert (result.test_checkpoint, result.train_steps) == ("best", 1) and result.train_seconds > 0
    assert result.student is spec.student
    weights, state = load_tensors(tmp_path / "run" / "student.safetensors")
    assert state == {"checkpoint": "best"}
    assert all(torch.equal(weights[k], v) for k, v in spec.student.state_dict().items())
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert record["method"] == {"name": "kd", "params": {"temperature": 2.0}}
    (table_file,) = (tmp_path / "cache").rglob("*.safetensors")
    table, _ = TeacherTable.open(table_file)
    logits = table.lookup(toy.train.__getitems__(range(8)), torch.device("cpu")).logits
    assert all(len(row.unique()) <= 3 for row in logits), "the top 2 logits kept, every other class at one value"


def test_the_test_split_is_left_unread_on_request(toy, tmp_path):
    spec = RunSpec(_model(toy, ["b"]), None, toy, tmp_path / "run", "supervised", trainer=ONE_EPOCH)
    result = build_run(spec).fit(quiet=True, evaluate_test=False)
    assert result.test == {} and result.val
    assert json.loads((tmp_path / "run" / "result.json").read_text())["test"] == {}


class Linear(nn.Module):
    """A student built in Python, not from a model config."""

    modalities = ("b",)

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(16, 4)

    def forward(self, batch):
        return self.layer(batch["b"])


def test_a_distill_folder_without_a_record_says_why_in_result_json(toy, tmp_path):
    build_run(RunSpec(Linear(), None, toy, tmp_path / "run", "supervised", trainer=ONE_EPOCH)).fit(quiet=True)
    written = json.loads((tmp_path / "run" / "result.json").read_text())
    assert written["not_a_run_folder"].startswith("the student is a Linear built in Python")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_part_of_a_train_run_writes_no_record_of_its_own(toy, tmp_path):
    with runfolder.owned(tmp_path / "train", "train", "metrics.json") as folder:
        part = folder.path / "seed_0" / "student"
        build_run(RunSpec(_model(toy, ["b"]), None, toy, part, "supervised", trainer=ONE_EPOCH)).fit(quiet=True)
        written = json.loads((part / "result.json").read_text())
    assert "not_a_run_folder" not in written and not (part / "config.yaml").exists()


def test_several_cached_teachers_are_one_table_each_and_the_steps_read_the_students_modality(toy, tmp_path, trained_on):
    group = TeacherGroup({"x": _model(toy, ["a"], seed=1), "y": _model(toy, ["a", "b"], seed=2)})
    spec = RunSpec(
        _model(toy, ["b"]), group, toy, tmp_path / "run", "multi_teacher_kd", trainer=ONE_EPOCH,
        cache=CacheConfig(dir=tmp_path / "cache"),
    )  # fmt: skip
    build_run(spec).fit(quiet=True)
    assert trained_on == [["b"]]
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2


def test_an_online_teacher_reads_its_own_modalities_and_its_views_through_the_runs_masker(toy, tmp_path, trained_on):
    spec = RunSpec(
        _model(toy, ["b"]), _model(toy, ["a", "b"], seed=1), toy, tmp_path / "run", "kd", trainer=ONE_EPOCH,
        cache=CacheConfig(enabled=False),
    )  # fmt: skip
    build_run(spec).fit(quiet=True)
    assert trained_on == [["a", "b"]]
    views = RunSpec(
        _model(toy, ["a", "b"]), _model(toy, ["a", "b"], seed=1), toy, tmp_path / "msd", "msd",
        {"weighting": "population"}, trainer=ONE_EPOCH, cache=CacheConfig(enabled=False),
    )  # fmt: skip
    run = build_run(views)
    assert run.fit(quiet=True).epochs_run == 1  # MSD's teacher runs on each modality's view
    weights = run.method.population_weights  # the teacher's saliency on the training data, before training
    assert not torch.equal(weights, torch.ones_like(weights))


def test_one_loss_is_checked_on_the_sample_with_or_without_a_teacher(toy, tmp_path):
    build_run(RunSpec(_model(toy, ["b"]), None, toy, tmp_path / "a", "supervised", trainer=ONE_EPOCH)).check_one_loss()
    views = RunSpec(_model(toy, ["a", "b"]), _model(toy, ["a", "b"], seed=1), toy, tmp_path / "b", "msd")
    build_run(views).check_one_loss()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_fitting_again_into_a_finished_folder_is_refused_by_default(toy, tmp_path):
    spec = RunSpec(_model(toy, ["b"]), None, toy, tmp_path / "run", "supervised", trainer=ONE_EPOCH)
    build_run(spec).fit(quiet=True)
    before = (tmp_path / "run" / "student.safetensors").read_bytes()
    again = RunSpec(_model(toy, ["b"], seed=1), None, toy, tmp_path / "run", "supervised", trainer=ONE_EPOCH)
    with pytest.raises(OutputExistsError):
        build_run(again).fit(quiet=True)
    assert (tmp_path / "run" / "student.safetensors").read_bytes() == before


class Logged(Dataset):
    """Toy rows as items; each read appends the reading process's id to ``log``."""

    num_classes = 4

    def __init__(self, split, log):
        self.split, self.log = split, log

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        batch = self.split.__getitems__([i])
        return {"a": batch["a"][0], "b": batch["b"][0], "label": batch["label"][0]}

    def fingerprint(self):
        return f"logged-{self.split.name}"


def test_the_cache_build_and_the_evaluation_read_items_with_the_trainers_workers(toy, tmp_path):
    log = tmp_path / "reads.log"
    data = as_splits(train=Logged(toy.train, log), val=Logged(toy.val, log), test=Logged(toy.test, log))
    workers = TrainerConfig(epochs=1, batch_size=64, num_threads=1, num_workers=1)
    spec = RunSpec(
        _model(toy, ["b"]), _model(toy, ["a", "b"], seed=1), data, tmp_path / "run", "kd", trainer=workers,
        cache=CacheConfig(dir=tmp_path / "cache"),
    )  # fmt: skip
    run = build_run(spec)
    log.unlink()  # the checks before training read in this process
    run.fit(quiet=True)
    readers = set(log.read_text().split())
    assert readers and str(os.getpid()) not in readers
