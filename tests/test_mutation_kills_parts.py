"""The run's parts and their checks (``engine/parts.py``), called directly on tiny data: a method's parameters
refused under their config key, the task settled and checked on every split, the models' modalities and outputs
named in errors, the teacher cached or run online (and the note or refusal that says why), the columns a training
step reads, and a machine that cannot start the run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.data.contracts.split import Splits
from mmdistill.engine import parts
from mmdistill.engine.parts import (
    _check_pair,
    _read_columns,
    _teacher_mode,
    build_method,
    check_teacher_training,
    run_task,
    start_fabric,
)
from mmdistill.engine.teacher import TeacherGroup
from mmdistill.errors import ConfigError, DataError, MachineError, TargetError
from mmdistill.masking import Masker
from mmdistill.models import ModelConfig, build_model
from mmdistill.registry import METHODS


@pytest.fixture(scope="module")
def toy():
    return build_splits("toy-two-modality", {"n": 40})


def _model(data, modalities, classes=4, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(modalities=modalities, encoder={"hidden": [8], "out_dim": 8})
    return build_model(cfg, data.train.specs(), classes)


class Reads(nn.Module):
    """A model reading ``modalities`` that returns ``output(batch)`` (or raises what it returns)."""

    def __init__(self, modalities, output):
        super().__init__()
        self.modalities, self.output, self.weight = tuple(modalities), output, nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        out = self.output(batch)
        if isinstance(out, Exception):
            raise out
        return out


# -- build_method ------------------------------------------------------------------------------------------------
def test_a_methods_bad_parameter_is_named_under_method_params(toy):
    with pytest.raises(ConfigError, match=r"^invalid config: method\.params\.temperature: "):
        build_method("kd", {"temperature": -1}, Masker(toy.train.specs()))


def test_a_bad_parameter_is_named_under_method_params_for_a_task_whose_method_check_lets_it_through(toy):
    """A task of the user's may override ``check_method`` (its own refusals) without validating the parameters."""

    class Lenient(type(parts.get_task("classification"))):
        def check_method(self, method, params=None):
            pass

    with pytest.raises(ConfigError, match=r"^invalid config: method\.params\.temperature: "):
        build_method("kd", {"temperature": -1}, Masker(toy.train.specs()), Lenient())


def test_the_method_removes_modalities_with_the_runs_masker(toy):
    masker = Masker(toy.train.specs(), "zeros")
    assert build_method("kd", {}, masker, "classification").masker is masker


# -- run_task ----------------------------------------------------------------------------------------------------
class Split(SimpleNamespace):
    """A split stub: its ``name``, its dataset's ``task`` and held ``labels``."""

    def __init__(self, name, task=None, labels=None):
        super().__init__(name=name, task=task, labels=labels)

    def __len__(self):
        return 0 if self.labels is None else len(self.labels)


def _splits(task=None, train_labels=None, eval_labels=None):
    return Splits(Split("train", task, train_labels), Split("val", task, eval_labels), Split("test", task, eval_labels))


def test_a_task_the_data_do_not_hold_is_refused_naming_the_split():
    with pytest.raises(ConfigError) as err:
        run_task("regression", _splits())
    assert str(err.value) == (
        "task: the run's task is 'regression' but split 'train' holds 'classification' targets (its dataset's task); "
        "set task: classification, or give data of task 'regression'"
    )
    assert run_task(None, _splits("multilabel")).name == "multilabel"  # None: the data's own task


def test_only_the_training_split_may_not_be_unlabelled_throughout():
    unlabelled, labelled = torch.full((3, 2, 2), 255), torch.zeros(3, 2, 2, dtype=torch.long)
    assert run_task(None, _splits("segmentation", labelled, unlabelled)).name == "segmentation"
    with pytest.raises(TargetError, match="split 'train': every pixel of every label map is ignore_index 255"):
        run_task(None, _splits("segmentation", unlabelled, labelled))


# -- _check_pair -------------------------------------------------------------------------------------------------
def test_a_modality_the_data_lack_is_named_with_the_model_that_reads_it(toy):
    with pytest.raises(ConfigError) as err:
        _check_pair(Reads(["c"], lambda b: b["a"]), None, toy)
    assert str(err.value) == "student reads modality 'c', which the dataset does not have; available: a, b"
    with pytest.raises(ConfigError) as err:
        _check_pair(_model(toy, ["a"]), Reads(["a", "c"], lambda b: b["a"]), toy)
    assert str(err.value) == "teacher reads modality 'c', which the dataset does not have; available: a, b"


@pytest.mark.parametrize("who", ["student", "teacher"])
def test_a_forward_that_fails_on_the_sample_names_its_model(toy, who):
    broken = Reads(["a"], lambda b: ValueError("no forward"))
    student, teacher = (broken, _model(toy, ["a"])) if who == "student" else (_model(toy, ["a"]), broken)
    with pytest.raises(ConfigError, match=rf"^{who}: "):
        _check_pair(student, teacher, toy)


def test_outputs_that_disagree_name_who_predicts_how_many(toy):
    with pytest.raises(ConfigError) as err:
        _check_pair(_model(toy, ["a"], classes=3), _model(toy, ["a", "b"]), toy)
    assert str(err.value) == "teacher predicts 4 classes but the student predicts 3; they must agree"
    with pytest.raises(ConfigError) as err:
        _check_pair(_model(toy, ["a"], classes=3), None, toy)
    assert str(err.value) == "models predict 3 classes but the dataset has 4"
    group = TeacherGroup({"x": _model(toy, ["a"]), "y": _model(toy, ["b"], classes=3)})
    with pytest.raises(ConfigError, match=r"^teachers\.y predicts 3 classes but teachers\.x predicts 4"):
        _check_pair(_model(toy, ["a"]), group, toy)


def test_the_outputs_are_checked_in_the_runs_task_form(toy):
    with pytest.raises(ConfigError, match=r"^student\.model: task 'segmentation' needs logits \(B, C, H, W\)"):
        _check_pair(_model(toy, ["a"]), None, toy, parts.get_task("segmentation"))


def test_an_output_of_one_column_may_drop_its_column_axis(toy):
    """A (B,) output is one column: it fits data of one column (a scalar regression target, say) and no other."""
    one = SimpleNamespace(train=toy.train, num_classes=1)
    _check_pair(Reads(["a"], lambda b: b["a"][:, 0]), None, one)  # device: the default, CPU
    with pytest.raises(ConfigError, match="^models predict 1 classes but the dataset has 4$"):
        _check_pair(Reads(["a"], lambda b: b["a"][:, 0]), None, toy)


# -- _read_columns -----------------------------------------------------------------------------------------------
class Narrowing(SimpleNamespace):
    def narrowed(self, modalities):
        return Narrowing(modality_names=list(modalities))


def test_an_online_teacher_adds_its_modalities_to_the_students_reads():
    train = Narrowing(modality_names=["a", "b", "c"])
    student, teacher = Reads(["a"], None), Reads(["b"], None)
    assert _read_columns(train, student, teacher).modality_names == ["a", "b"]
    assert _read_columns(train, student, None).modality_names == ["a"]


# -- check_teacher_training --------------------------------------------------------------------------------------
def test_a_learning_teacher_needs_a_method_that_trains_it():
    masker = Masker([])
    kd = build_method("kd", {}, masker)
    with pytest.raises(ConfigError) as err:
        check_teacher_training("kd", kd, True, CacheConfig())
    trainers = [m for m in METHODS.names() if METHODS.get(m).teacher_training != "never"]
    assert "kd" not in trainers and "dml" in trainers
    assert str(err.value) == (
        "teacher.trainable: method 'kd' gives the teacher no loss of its own, so it would not learn; use a method "
        f"that trains it alongside ({', '.join(trainers)}) or set teacher.trainable: false"
    )
    dml = build_method("dml", {}, masker)
    with pytest.raises(
        ConfigError, match=r"set teacher\.trainable: true \(distill\(\.\.\., teacher_trainable=True\)\)"
    ):
        check_teacher_training("dml", dml, False, CacheConfig())
    with pytest.raises(ConfigError) as err:
        check_teacher_training("dml", dml, True, CacheConfig(enabled=True))
    assert str(err.value).endswith(
        "its outputs change at every step and cannot be cached; leave cache.enabled unset or set it to false"
    )
    check_teacher_training("dml", dml, True, CacheConfig())  # the default cache setting: the teacher runs online


# -- _teacher_mode -----------------------------------------------------------------------------------------------
def _train(random=False, cacheable=True, keyed=None):
    """A training split stub; ``keyed``: what its augmented fingerprint does (None: it has none)."""
    split = SimpleNamespace(random=random, cacheable=cacheable)
    if keyed is not None:
        split.augmented_fingerprint = keyed
    return split


def _fingerprint():
    return "rows-v1+flip"


def _no_fingerprint():
    raise DataError("the transform has no fingerprint")


RANDOM = (
    "the training data are random (a transform or dataset.random=True): an example's input changes every epoch, so a "
    "cached teacher output would belong to another input (cache.augmentations: K caches K seeded augmentations of "
    "each example)"
)
KEYLESS = "the training dataset has no fingerprint() to key a cache by (a string that changes when the data change)"


def test_the_teacher_runs_online_when_the_cache_is_off_or_the_teacher_learns(capsys):
    assert _teacher_mode(CacheConfig(enabled=False), _train(random=True)) == "online"
    assert _teacher_mode(CacheConfig(), _train(), learns=True) == "online"
    assert _teacher_mode(CacheConfig(), _train()) == "cache"
    assert capsys.readouterr().err == ""


def test_augmentations_on_data_without_random_draws_cache_one_view_with_a_note(capsys):
    assert _teacher_mode(CacheConfig(augmentations=2), _train()) == "cache"
    assert capsys.readouterr().err == (
        "mmdistill: cache.augmentations: 2: the training data draw no random numbers (no random transform), so each "
        "example has one view; caching that one (K = 1)\n"
    )
    assert _teacher_mode(CacheConfig(augmentations=2), _train(), quiet=True) == "cache"
    assert capsys.readouterr().err == ""


def test_random_data_are_cached_on_augmentations_only_when_they_can_be_keyed():
    keyed = _train(random=True, keyed=_fingerprint)
    assert _teacher_mode(CacheConfig(augmentations=2), keyed, quiet=True) == "cache"
    assert _teacher_mode(CacheConfig(), keyed, quiet=True) == "online"  # one augmentation: nothing to cache
    with pytest.raises(ConfigError) as err:
        _teacher_mode(CacheConfig(augmentations=2), _train(random=True, keyed=_no_fingerprint))
    assert str(err.value) == (
        "cache.augmentations: cannot cache the teacher's outputs on augmentations: the transform has no fingerprint"
    )
    with pytest.raises(ConfigError, match=r"on augmentations: the training split is a SimpleNamespace, not an item"):
        _teacher_mode(CacheConfig(augmentations=2), _train(random=True))


def test_keyless_data_with_augmentations_asked_run_the_teacher_online(capsys):
    assert _teacher_mode(CacheConfig(augmentations=2), _train(cacheable=False)) == "online"
    assert (
        capsys.readouterr().err == f"mmdistill: the teacher runs online on each training batch (no cache): {KEYLESS}\n"
    )


@pytest.mark.parametrize(("train", "why"), [(_train(random=True), RANDOM), (_train(cacheable=False), KEYLESS)])
def test_a_cache_asked_for_on_uncacheable_data_is_refused_saying_why(train, why, capsys):
    with pytest.raises(ConfigError) as err:
        _teacher_mode(CacheConfig(enabled=True), train)
    assert str(err.value) == (
        f"cache.enabled: cannot cache the teacher's outputs: {why}; set cache.enabled=false (the teacher then runs "
        "online on each training batch, in eval mode, without gradients)"
    )
    assert _teacher_mode(CacheConfig(), train) == "online"
    assert capsys.readouterr().err == f"mmdistill: the teacher runs online on each training batch (no cache): {why}\n"
    assert _teacher_mode(CacheConfig(), train, quiet=True) == "online"
    assert capsys.readouterr().err == ""


# -- start_fabric ------------------------------------------------------------------------------------------------
def test_ddp_spawn_is_refused_with_the_strategy_to_use():
    with pytest.raises(ConfigError) as err:
        start_fabric(TrainerConfig().model_copy(update={"strategy": "ddp_spawn"}))
    assert str(err.value) == (
        "trainer.strategy: 'ddp_spawn' cannot run mmdistill's training loop (Fabric needs a launch function); use "
        "trainer.strategy=ddp, which starts the worker processes itself"
    )


@pytest.mark.parametrize(
    ("raised", "shown"),
    [
        (RuntimeError("no device here\nmore detail"), "no device here"),
        (ValueError(""), "ValueError"),
        (ImportError("x" * 400), "x" * 300),
    ],
)
def test_a_machine_that_cannot_start_the_run_is_one_message(monkeypatch, raised, shown):
    def fail(trainer):
        raise raised

    monkeypatch.setattr(parts, "make_fabric", fail)
    with pytest.raises(MachineError) as err:
        start_fabric(TrainerConfig(num_threads=1))
    assert str(err.value) == (
        f"trainer.accelerator=cpu, trainer.devices=1, trainer.strategy=auto: this machine cannot start the run "
        f"({shown}); use trainer.accelerator=cpu or settings this machine has"
    )
