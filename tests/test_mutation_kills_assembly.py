"""The run assembly's checks and hand-offs (``engine/assembly.py``), called in this process on tiny data: the trainer
settings a run uses, the refusals build_run makes before anything trains (each naming its key), the parts it builds
and leaves out, each part of a ``train`` seed's settings, a teacher's checkpoint loaded or refused, and train_run's
determinism and worker reports."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmdistill.config import CacheConfig, MaskingConfig, RunConfig, TrainerConfig, validate
from mmdistill.data import build_splits
from mmdistill.data.contracts.dataset import MultimodalDataset
from mmdistill.data.contracts.split import Splits
from mmdistill.engine import assembly
from mmdistill.engine.assembly import (
    RunSpec,
    _check_models,
    _check_teacher_cache,
    _same_weights,
    _teacher_for,
    _with_teachers,
    build_run,
    build_run_model,
    build_run_teacher,
    load_teacher_weights,
    part_spec,
    run_trainer,
    train_run,
)
from mmdistill.engine.parts import build_method
from mmdistill.engine.system.checkpoint import save_tensors
from mmdistill.engine.teacher import TeacherGroup
from mmdistill.errors import CheckpointError, ConfigError, DataError
from mmdistill.masking import Masker
from mmdistill.methods.base import TeacherRequest
from mmdistill.models import ModelConfig, build_model
from mmdistill.tasks import get_task

ONE_EPOCH = TrainerConfig(epochs=1, batch_size=64, num_threads=1)
ENCODER = {"type": "mlp", "hidden": [8], "out_dim": 8}


@pytest.fixture(scope="module")
def toy():
    return build_splits("toy-two-modality", {"n": 40})


def _model(data, modalities, classes=4, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(modalities=modalities, encoder=ENCODER), data.train.specs(), classes)


def _spec(data, tmp_path, student, teacher=None, method="kd", **kw):
    return RunSpec(student, teacher, data, tmp_path / "run", method, trainer=kw.pop("trainer", ONE_EPOCH), **kw)


# -- run_trainer -------------------------------------------------------------------------------------------------
def test_the_monitor_is_the_tasks_default_unless_the_settings_name_one():
    assert run_trainer(None, get_task("regression"), 1).monitor == "mae"
    assert run_trainer(TrainerConfig(), get_task("regression"), 1).monitor == "mae"
    assert run_trainer(TrainerConfig(monitor="loss"), get_task("regression"), 1).monitor == "loss"


def test_a_monitor_the_task_lacks_is_refused_under_the_key_given():
    with pytest.raises(ConfigError, match=r"^teachers\.x\.trainer\.monitor: 'mse' is not a metric of task"):
        run_trainer(TrainerConfig(monitor="mse"), get_task("classification"), 4, "teachers.x.trainer")
    with pytest.raises(ConfigError, match=r"^trainer\.monitor: 'mse' is not a metric"):
        run_trainer(TrainerConfig(monitor="mse"), get_task("classification"), 4)


def test_auroc_is_monitored_on_two_class_data_only():
    assert run_trainer(TrainerConfig(monitor="auroc"), get_task("classification"), 2).monitor == "auroc"
    with pytest.raises(ConfigError) as err:
        run_trainer(TrainerConfig(monitor="auroc"), get_task("classification"), 3)
    assert str(err.value) == (
        "trainer.monitor: 'auroc' is computed for two-class data only, and this dataset has 3 classes; use accuracy, "
        "f1_macro or loss"
    )


# -- the models ----------------------------------------------------------------------------------------------------
def test_models_that_cannot_be_trained_apart_are_refused_saying_what_to_do(toy):
    model = _model(toy, ["a"])
    with pytest.raises(ConfigError) as err:
        _check_models(model, model)
    assert str(err.value) == (
        "teacher and student are the same module; give the student a model of its own (build it again, or "
        "copy.deepcopy(teacher) to start from the teacher's weights)"
    )
    student = _model(toy, ["a"], seed=1)
    student.head = model.head
    with pytest.raises(ConfigError) as err:
        _check_models(student, model)
    assert str(err.value) == (
        "teacher and student share 2 parameter tensor(s), which the frozen teacher would keep from training; give the "
        "student modules of its own (copy.deepcopy the shared parts)"
    )
    with pytest.raises(ConfigError) as err:
        _check_models(_model(toy, ["a"]).requires_grad_(False), None)
    assert str(err.value) == (
        f"student: the {type(model).__name__} has no trainable parameters (none, or all with requires_grad=False), so "
        "training cannot change it; give a model with parameters to train"
    )


def test_a_file_that_is_not_a_checkpoint_does_not_hold_the_teachers_weights(toy, tmp_path):
    teacher = _model(toy, ["a"])
    (tmp_path / "student.safetensors").write_bytes(b"not a checkpoint")
    assert not _same_weights(teacher, tmp_path / "student.safetensors")
    save_tensors(tmp_path / "student.safetensors", teacher.state_dict())
    assert _same_weights(teacher, tmp_path / "student.safetensors")


def test_several_teachers_go_only_to_a_method_that_takes_several(toy):
    kd = build_method("kd", {}, Masker(toy.train.specs()))
    one, two = _model(toy, ["a"]), _model(toy, ["b"])
    assert _teacher_for(TeacherGroup({"x": one}), kd, "kd") is one
    assert _teacher_for(one, kd, "kd") is one
    with pytest.raises(ConfigError) as err:
        _teacher_for(TeacherGroup({"x": one, "y": two}), kd, "kd")
    assert str(err.value) == (
        "teachers: method 'kd' distils from one teacher and this run names 2 (x, y); use multi_teacher_kd, "
        "multi_teacher_adaptive or mst_distill, or give one teacher"
    )


# -- the teacher cache's settings ----------------------------------------------------------------------------------
def test_a_top_k_above_the_classes_is_refused_before_training(toy):
    request = TeacherRequest()
    masker = Masker(toy.train.specs())
    with pytest.raises(ConfigError) as err:
        _check_teacher_cache(CacheConfig(top_k=5), toy.train, request, masker)
    assert str(err.value) == "cache.top_k: 5 is above the data's 4 classes; use 1 ... 4"
    _check_teacher_cache(CacheConfig(top_k=4), toy.train, request, masker)
    no_classes = SimpleNamespace(random=False, cacheable=True)  # a split that does not say (regression, say)
    _check_teacher_cache(CacheConfig(top_k=5), no_classes, request, masker)


def test_the_cache_settings_of_a_teacher_that_runs_online_are_not_checked(toy, capsys):
    request, masker = TeacherRequest(), Masker(toy.train.specs())
    _check_teacher_cache(CacheConfig(top_k=5), toy.train, request, masker, learns=True)
    random = SimpleNamespace(random=True, cacheable=True, num_classes=4)
    _check_teacher_cache(CacheConfig(top_k=5), random, request, masker)
    assert capsys.readouterr().err == ""  # the run says once, when it trains, that the teacher runs online


def test_learned_null_tokens_in_the_teachers_views_cannot_be_cached(toy):
    masker = Masker(toy.train.specs(), "zeros", {"a": "learned"})
    _check_teacher_cache(CacheConfig(), toy.train, TeacherRequest(views=(("a",),)), masker)  # b removed: zeros
    with pytest.raises(ConfigError) as err:
        _check_teacher_cache(CacheConfig(), toy.train, TeacherRequest(views=(("b",),)), masker)
    assert str(err.value) == (
        "cache.enabled: the teacher's modality views use learned null tokens, which change during training, so they "
        "cannot be cached; set cache.enabled=false or another masking strategy"
    )


# -- build_run -----------------------------------------------------------------------------------------------------
def test_build_run_checks_the_runs_task_against_the_data(toy, tmp_path):
    with pytest.raises(ConfigError, match="^task: the run's task is 'regression' but split"):
        build_run(_spec(toy, tmp_path, _model(toy, ["a"]), method="supervised", task="regression"))


def test_build_run_monitors_auroc_on_two_class_data(tmp_path):
    two = build_splits("toy-two-modality", {"n": 40, "num_classes": 2})
    trainer = TrainerConfig(epochs=1, batch_size=64, num_threads=1, monitor="auroc")
    run = build_run(_spec(two, tmp_path, _model(two, ["a"], classes=2), method="supervised", trainer=trainer))
    assert run.trainer.monitor == "auroc"


def test_build_run_checks_the_outputs_in_the_runs_task(tmp_path):
    g = torch.Generator().manual_seed(0)

    def split(name):
        return MultimodalDataset(
            {"a": torch.randn(12, 4, generator=g)}, (torch.rand(12, 4, generator=g) > 0.5).float(), 4, name,
            task="multilabel",
        )  # fmt: skip

    data = Splits(split("train"), split("val"), split("test"))
    with pytest.raises(ConfigError, match="^models predict 3 labels but the dataset has 4$"):
        build_run(_spec(data, tmp_path, _model(data, ["a"], classes=3), method="supervised"))


def test_the_method_and_the_run_mask_with_the_masker_fitted_on_the_training_data(toy, tmp_path):
    spec = _spec(toy, tmp_path, _model(toy, ["b"]), _model(toy, ["a", "b"], seed=1))
    spec.masking = MaskingConfig(strategy="mean")
    run = build_run(spec)
    assert run.method.masker is run.masker
    removed = run.masker.remove({"a": toy.train.tensors["a"][:3], "b": toy.train.tensors["b"][:3]}, ["a"])
    assert torch.allclose(removed["a"], toy.train.tensors["a"].mean(0).expand(3, -1), atol=1e-6)


def test_a_method_that_needs_a_teacher_is_refused_without_one(toy, tmp_path):
    with pytest.raises(ConfigError) as err:
        build_run(_spec(toy, tmp_path, _model(toy, ["b"])))
    assert str(err.value) == "method 'kd' needs a teacher; give teacher (a model or teacher.checkpoint)"


def test_a_teacher_given_to_a_method_without_one_is_left_alone(toy, tmp_path):
    teacher = _model(toy, ["a", "b"], seed=1).train()
    run = build_run(_spec(toy, tmp_path, _model(toy, ["b"]), teacher, method="supervised"))
    assert run.teacher is None
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_a_frozen_teacher_stays_out_of_the_trained_module(toy, tmp_path):
    teacher = _model(toy, ["a", "b"], seed=1)
    run = build_run(_spec(toy, tmp_path, _model(toy, ["b"]), teacher))
    trained = {id(p) for p in run.module.parameters()}
    assert not trained & {id(p) for p in teacher.parameters()}
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_a_teacher_that_learns_runs_online_whatever_the_cache_settings(toy, tmp_path):
    teacher = _model(toy, ["a", "b"], seed=1)
    spec = _spec(toy, tmp_path, _model(toy, ["b"]), teacher, method="dml", teacher_trainable=True)
    spec.cache = CacheConfig(top_k=5)  # 5 > 4 classes: refused for a cached teacher, unused for this one
    run = build_run(spec)
    assert {id(p) for p in teacher.parameters()} <= {id(p) for p in run.module.parameters()}


def test_a_cached_teachers_views_with_learned_null_tokens_are_refused_by_build_run(toy, tmp_path):
    spec = _spec(toy, tmp_path, _model(toy, ["a", "b"]), _model(toy, ["a", "b"], seed=1), method="msd")
    spec.masking = MaskingConfig(strategy="learned")
    with pytest.raises(ConfigError, match="^cache.enabled: the teacher's modality views use learned null tokens"):
        build_run(spec)


def _partly_paired(n=40):
    """The toy data whose every third training row lacks modality ``a`` (``a_present`` 0)."""
    splits = build_splits("toy-two-modality", {"n": n})
    columns, present = dict(splits.train.tensors), torch.ones(len(splits.train))
    present[::3] = 0
    columns["a"] = columns["a"] * present[:, None]
    columns["a_present"] = present
    train = MultimodalDataset(columns, splits.train.labels, splits.train.num_classes, "train")
    return Splits(train, splits.val, splits.test)


def test_partly_paired_rows_are_checked_against_the_modalities_the_teacher_reads(tmp_path):
    data = _partly_paired()
    reads_b = _model(data, ["b"], seed=1)
    run = build_run(_spec(data, tmp_path, _model(data, ["b"]), reads_b, method="dist"))
    assert run.method.paired_on == ("b",)  # rows lacking "a" leave nothing out for a teacher of "b"
    with pytest.raises(ConfigError, match=r"^method.name: 'dist' cannot leave out the rows that lack the teacher's"):
        build_run(_spec(data, tmp_path, _model(data, ["b"]), _model(data, ["a", "b"], seed=1), method="dist"))


class Anonymous(nn.Module):
    """A teacher that does not say which modalities it reads."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(16, 4)

    def forward(self, batch):
        return self.layer(batch["b"])


def test_a_teacher_that_does_not_declare_its_modalities_is_refused_by_name(toy, tmp_path):
    with pytest.raises(
        ConfigError, match="^Anonymous must declare the modalities it reads as a `modalities` attribute"
    ):
        build_run(_spec(toy, tmp_path, _model(toy, ["b"]), Anonymous()))


# -- one part of a ``train`` seed ----------------------------------------------------------------------------------
def _config(tmp_path, **sections) -> RunConfig:
    raw = {
        "data": {"name": "toy-two-modality", "params": {"n": 40}},
        "teacher": {"model": {"modalities": ["a", "b"], "encoder": ENCODER}},
        "student": {"model": {"modalities": ["b"], "encoder": ENCODER}},
        "method": {"name": "kd", "params": {"temperature": 3.0}},
        "masking": {"strategy": "mean"},
        "trainer": {"epochs": 2, "batch_size": 16},
        "cache": {"dir": str(tmp_path / "cache")},
        "task": {"name": "classification"},
        **sections,
    }
    return validate(RunConfig, raw)


def test_a_teacher_part_trains_supervised_with_its_own_trainer_or_the_runs(toy, tmp_path):
    cfg = _config(tmp_path)
    spec = part_spec(cfg, "teacher", toy, 3, tmp_path / "t")
    assert (spec.method, spec.teacher, spec.trainer, spec.task, spec.seed) == (
        "supervised",
        None,
        cfg.trainer,
        cfg.task,
        3,
    )
    own = _config(tmp_path, teacher={"model": {"modalities": ["a"], "encoder": ENCODER}, "trainer": {"epochs": 5}})
    assert part_spec(own, "teacher", toy, 3, tmp_path / "t").trainer.epochs == 5


def test_the_student_part_distils_with_the_configs_settings_and_nokd_without(toy, tmp_path):
    cfg, teacher = _config(tmp_path), _model(toy, ["a", "b"])
    spec = part_spec(cfg, "student", toy, 3, tmp_path / "s", teacher)
    assert (spec.method, spec.method_params, spec.teacher) == ("kd", {"temperature": 3.0}, teacher)
    assert (spec.masking, spec.trainer, spec.cache, spec.task, spec.seed) == (
        cfg.masking, cfg.trainer, cfg.cache, cfg.task, 3,
    )  # fmt: skip
    assert not spec.teacher_trainable
    nokd = part_spec(cfg, "nokd", toy, 3, tmp_path / "n", teacher)
    assert (nokd.method, nokd.method_params, nokd.trainer, nokd.seed) == ("supervised", None, cfg.trainer, 3)
    learning = _config(tmp_path, method={"name": "dml"})
    learning.teacher.trainable = True
    assert part_spec(learning, "student", toy, 3, tmp_path / "s", teacher).teacher_trainable


# -- a teacher's checkpoint ----------------------------------------------------------------------------------------
def test_a_teachers_checkpoint_is_loaded_unless_asked_not_to(toy, tmp_path):
    trained = _model(toy, ["a", "b"], seed=7)
    save_tensors(tmp_path / "t.safetensors", trained.state_dict())
    section = {"model": {"modalities": ["a", "b"], "encoder": ENCODER}, "checkpoint": str(tmp_path / "t.safetensors")}
    cfg = _config(tmp_path, teacher=section)
    loaded = build_run_model(cfg, "teacher", toy)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())
    fresh = build_run_model(cfg, "teacher", toy, load_checkpoint=False)
    assert not torch.equal(fresh.state_dict()["head.1.weight"], trained.state_dict()["head.1.weight"])
    assert torch.equal(build_run_teacher(cfg, toy).state_dict()["head.1.weight"], trained.state_dict()["head.1.weight"])
    group = _config(tmp_path, teacher=None, teachers={"x": section})
    member = build_run_teacher(group, toy).members["x"]
    assert torch.equal(member.state_dict()["head.1.weight"], trained.state_dict()["head.1.weight"])
    assert build_run_teacher(_config(tmp_path, teacher=None, method={"name": "supervised"}), toy) is None
    unloaded = build_run_teacher(cfg, toy, load_checkpoint=False), build_run_teacher(group, toy, load_checkpoint=False)
    for teacher in (unloaded[0], unloaded[1].members["x"]):  # fresh weights: the commands that rebuild the models
        assert not torch.equal(teacher.state_dict()["head.1.weight"], trained.state_dict()["head.1.weight"])


def test_a_checkpoint_that_does_not_fit_names_the_teachers_key(toy, tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, _model(toy, ["a", "b"], classes=3).state_dict())
    with pytest.raises(CheckpointError, match=r"^teachers\.x\.checkpoint: .* does not fit teachers\.x\.model: size "):
        load_teacher_weights(_model(toy, ["a", "b"]), path, "teachers.x")
    save_tensors(path, {k: v for k, v in _model(toy, ["a", "b"]).state_dict().items() if k != "head.1.bias"})
    with pytest.raises(CheckpointError) as err:
        load_teacher_weights(_model(toy, ["a", "b"]), path)
    assert str(err.value) == (
        f"teacher.checkpoint: {path} does not fit teacher.model: missing keys ['head.1.bias'], unexpected keys []"
    )
    keys, extra = list(_model(toy, ["a", "b"]).state_dict()), [f"extra.{i}" for i in range(6)]
    save_tensors(path, {k: torch.zeros(1) for k in extra})
    with pytest.raises(CheckpointError) as err:
        load_teacher_weights(_model(toy, ["a", "b"]), path)
    assert f"missing keys {keys[:5]}, unexpected keys {extra[:5]}" in str(err.value), "the first five of each"
    quantised = {k: v.to(torch.int8) for k, v in _model(toy, ["a", "b"]).state_dict().items()}
    save_tensors(path, quantised)
    with pytest.raises(CheckpointError, match=rf"^teacher\.checkpoint: {re.escape(str(path))} holds .* as torch\.int8"):
        load_teacher_weights(_model(toy, ["a", "b"]), path)


def test_a_train_runs_teacher_section_names_its_checkpoint_in_errors(toy, tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, _model(toy, ["a", "b"], classes=3).state_dict())
    section = {"model": {"modalities": ["a", "b"], "encoder": ENCODER}, "checkpoint": str(path)}
    with pytest.raises(CheckpointError, match=r"^teachers\.x\.checkpoint: "):
        build_run_teacher(_config(tmp_path, teacher=None, teachers={"x": section}), toy)


# -- a distill() folder's record of several teachers ---------------------------------------------------------------
def test_several_teachers_are_recorded_by_their_model_configs_or_not_at_all(toy, tmp_path):
    record = _config(tmp_path, teacher=None)
    group = TeacherGroup({"x": _model(toy, ["a"]), "y": _model(toy, ["b"])})
    recorded = _with_teachers(record, group)
    assert recorded.teachers["y"].model.modalities == ["b"]
    assert _with_teachers(record, TeacherGroup({"x": _model(toy, ["a"]), "y": nn.Linear(2, 4)})) == (
        "teachers.y is a Linear built in Python, not by mmdistill.models.build_model from a model config"
    )
    why = _with_teachers(_config(tmp_path), group)  # a record that already has a teacher: no valid config
    first_line = "teachers: give teacher (one teacher) or teachers (several), not both"
    assert why.startswith(f"the run's settings do not form a valid config ({first_line}")
    assert why.endswith(")") and "\n" not in why


# -- train_run -----------------------------------------------------------------------------------------------------
class _Built:
    def __init__(self, fit):
        self.fit = fit


def test_train_run_fits_the_run_built_on_the_devices_given_with_deterministic_kernels(toy, tmp_path, monkeypatch):
    seen = {}

    def built(spec, fabric=None):
        seen["fabric"] = fabric
        return _Built(lambda **options: (torch.are_deterministic_algorithms_enabled(), options))

    monkeypatch.setattr(assembly, "build_run", built)
    devices = object()
    spec = _spec(toy, tmp_path, _model(toy, ["b"]), trainer=None)
    before = torch.are_deterministic_algorithms_enabled()
    assert train_run(spec, devices, quiet=True) == (True, {"quiet": True})
    assert seen["fabric"] is devices
    assert torch.are_deterministic_algorithms_enabled() == before


def test_a_dataloader_workers_death_is_reported_as_a_data_error(toy, tmp_path, monkeypatch):
    def dies(**options):
        raise RuntimeError("DataLoader worker (pid 4242) exited unexpectedly with exit code 1")

    monkeypatch.setattr(assembly, "build_run", lambda spec, fabric=None: _Built(dies))
    monkeypatch.setenv("MMDISTILL_DEBUG", "1")  # the worker's report chained as the cause
    with pytest.raises(DataError, match="a DataLoader worker exited") as err:
        train_run(_spec(toy, tmp_path, _model(toy, ["b"])))
    assert "exited unexpectedly" in str(err.value.__cause__)

    def fails(**options):
        raise RuntimeError("something else")

    monkeypatch.setattr(assembly, "build_run", lambda spec, fabric=None: _Built(fails))
    with pytest.raises(RuntimeError, match="^something else$"):
        train_run(_spec(toy, tmp_path, _model(toy, ["b"])))


def test_resume_and_overwrite_together_are_refused_before_any_work(toy, tmp_path):
    run = build_run(_spec(toy, tmp_path, _model(toy, ["b"]), method="supervised"))
    with pytest.raises(ConfigError) as err:
        run.fit(resume=True, overwrite=True)
    assert (
        str(err.value) == "distill: resume=True and overwrite=True: give one of them (continue the run, or replace it)"
    )
    assert not (tmp_path / "run").exists()
