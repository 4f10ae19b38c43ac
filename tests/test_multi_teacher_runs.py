"""Several teachers in a run: the ``teachers`` config section and ``distill(teacher=[...] | {...})``, a cache file per
teacher, one teacher unchanged in numbers, and the bad inputs refused before anything trains, naming the key."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdistill.config import RunConfig, TrainerConfig, load_config
from mmdistill.engine.api import distill
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.errors import ConfigError
from mmdistill.models import ModelConfig, build_model

ONE_EPOCH = TrainerConfig(epochs=1, batch_size=64, num_threads=1)
ENCODER = {"hidden": [8], "out_dim": 8}


def _model(data, modalities, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(modalities=modalities, encoder=ENCODER), data.train.specs(), data.num_classes)


def _weights(folder):
    return load_tensors(folder / "student.safetensors")[0]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["multi_teacher_kd", "multi_teacher_adaptive", "mst_distill"])
def test_two_teachers_on_different_modalities_distil_with_one_cache_file_per_teacher(toy_splits, tmp_path, method):
    teachers = {"audio": _model(toy_splits, ["a"], 1), "visual": _model(toy_splits, ["b"], 2)}
    cache = tmp_path / "cache"
    result = distill(
        _model(toy_splits, ["b"], 3), teachers, toy_splits, tmp_path / method, method, trainer=ONE_EPOCH,
        cache={"dir": cache}, quiet=True,
    )  # fmt: skip
    assert 0 <= result.test["accuracy"] <= 100
    assert len(list(cache.glob("*.safetensors"))) == 2  # the training split's outputs, one file per teacher


def test_several_teachers_online_train_the_student_as_their_cached_outputs_do(toy_splits, tmp_path):
    teachers = [_model(toy_splits, ["a"], 1), _model(toy_splits, ["b"], 2)]
    for name, cache in (("cached", {"dir": tmp_path / "cache"}), ("online", {"enabled": False})):
        distill(
            _model(toy_splits, ["b"], 3), teachers, toy_splits, tmp_path / name, "mst_distill", trainer=ONE_EPOCH,
            cache=cache, quiet=True,
        )  # fmt: skip
    assert list((tmp_path / "cache").glob("*.safetensors"))
    assert _equal(_weights(tmp_path / "cached"), _weights(tmp_path / "online"))


def test_a_distill_folder_records_its_several_teachers_for_the_commands(toy_splits, tmp_path):
    from mmdistill.evaluation.runs import load_run_models

    teachers = {"audio": _model(toy_splits, ["a"], 1), "visual": _model(toy_splits, ["b"], 2)}
    distill(_model(toy_splits, ["b"], 3), teachers, toy_splits, tmp_path / "run", "multi_teacher_kd", trainer=ONE_EPOCH)
    cfg, _, models = load_run_models(tmp_path / "run")
    assert list(cfg.teachers) == ["audio", "visual"] and cfg.teachers["audio"].model.modalities == ["a"]
    assert list(models) == ["seed_0/student"]  # the teachers' weights are not kept
    distill(
        _model(toy_splits, ["b"], 3), {"own": Wrapped(_model(toy_splits, ["a"], 4)), **teachers}, toy_splits,
        tmp_path / "own", "multi_teacher_kd", trainer=ONE_EPOCH, quiet=True,
    )  # fmt: skip
    assert "teachers.own is a Wrapped built in Python" in (tmp_path / "own" / "result.json").read_text()


class Wrapped(nn.Module):
    """A teacher built in Python (no model config to record)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.modalities = inner, inner.modalities

    def forward(self, batch):
        return self.inner(batch)


def test_one_teacher_in_a_list_trains_kd_exactly_as_a_single_teacher(toy_splits, tmp_path):
    teacher = _model(toy_splits, ["a", "b"], 1)
    for name, given in (("single", teacher), ("listed", [teacher])):
        distill(_model(toy_splits, ["b"], 3), given, toy_splits, tmp_path / name, "kd", trainer=ONE_EPOCH, quiet=True)
    distill(
        _model(toy_splits, ["b"], 3), teacher, toy_splits, tmp_path / "multi", "multi_teacher_kd",
        {"temperature": 4.0, "lam": 0.5}, trainer=ONE_EPOCH, quiet=True,
    )  # fmt: skip
    single = _weights(tmp_path / "single")
    assert _equal(single, _weights(tmp_path / "listed")) and _equal(single, _weights(tmp_path / "multi"))


def test_teachers_whose_class_counts_differ_are_refused(toy_splits, tmp_path):
    odd = build_model(ModelConfig(modalities=["a"], encoder=ENCODER), toy_splits.train.specs(), 3)
    with pytest.raises(ConfigError, match=r"^teachers\.odd predicts 3 classes but teachers\.good predicts 4"):
        distill(
            _model(toy_splits, ["b"]), {"good": _model(toy_splits, ["a"]), "odd": odd}, toy_splits, tmp_path / "r",
            "multi_teacher_kd", trainer=ONE_EPOCH,
        )  # fmt: skip
    assert not (tmp_path / "r").exists()


class Elsewhere(nn.Module):
    modalities = ("depth",)

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(1, 4)

    def forward(self, batch):
        return self.w(batch["depth"])


def test_a_teacher_with_no_modality_the_data_have_is_refused(toy_splits, tmp_path):
    with pytest.raises(ConfigError, match=r"^teachers\.1 reads modality 'depth', which the dataset does not have"):
        distill(
            _model(toy_splits, ["b"]), [_model(toy_splits, ["a"]), Elsewhere()], toy_splits, tmp_path / "r",
            "multi_teacher_kd", trainer=ONE_EPOCH,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], r"^method\.params\.weights: 1 weight\(s\) for 2 teacher\(s\)"),
        ([1.0, 1.0, 1.0], r"^method\.params\.weights: 3 weight\(s\) for 2 teacher\(s\)"),
        ({"a": 1.0, "c": 1.0}, r"^method\.params\.weights: names \['a', 'c'\] do not match the teachers"),
        ([-1.0, 2.0], r"method\.params\.weights: weight -1\.0 is out of range; every weight is a number in \[0, "),
        ({"a": True, "b": 1.0}, r"method\.params\.weights: weight True is not a number"),
        ([0.0, 0.0], r"^method\.params\.weights: every weight is 0"),
    ],
)
def test_weights_that_do_not_fit_the_teachers_are_refused(toy_splits, tmp_path, weights, message):
    teachers = {"a": _model(toy_splits, ["a"]), "b": _model(toy_splits, ["b"])}
    with pytest.raises(ConfigError, match=message):
        distill(
            _model(toy_splits, ["b"]), teachers, toy_splits, tmp_path / "r", "multi_teacher_kd",
            {"weights": weights}, trainer=ONE_EPOCH,
        )  # fmt: skip


def test_a_router_for_a_single_teacher_is_refused(toy_splits, tmp_path):
    for given in (_model(toy_splits, ["a"]), [_model(toy_splits, ["a"])]):
        with pytest.raises(ConfigError, match=r"^teachers: method 'mst_distill' routes among 2 or more teachers"):
            distill(_model(toy_splits, ["b"]), given, toy_splits, tmp_path / "r", "mst_distill", trainer=ONE_EPOCH)


def test_mst_distill_trains_the_student_by_kd_the_masks_by_their_term_and_the_router_by_the_balance(toy_splits):
    from mmdistill.engine.api import build_method
    from mmdistill.engine.teacher import TeacherGroup, teacher_outputs

    group = TeacherGroup({"a": _model(toy_splits, ["a"], 1), "b": _model(toy_splits, ["b"], 2)}).eval()
    student, algo = _model(toy_splits, ["b"], 3), build_method("mst_distill", {}, None)
    batch = toy_splits.train.__getitems__(range(16))
    algo.setup(batch, student, group)
    t_out = teacher_outputs(group, batch, algo.teacher_request(), None)
    for term, trained, untouched in (
        ("kd", student, algo.masks),
        ("mask", algo.masks, student),
        ("balance", algo.router, algo.masks),
    ):
        student.zero_grad(), algo.zero_grad()
        algo.losses(batch, algo.forward_student(student, batch), t_out)[term].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters()), term
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in untouched.parameters()), term


@pytest.mark.parametrize("layers", [("head.0", "encoders.a.body.0"), ("encoders.a.body.0", "head.1")])
def test_mst_distill_refuses_layers_that_do_not_lead_to_the_teachers_logits(toy_splits, tmp_path, layers):
    feature, classifier = layers
    teachers = {"a": _model(toy_splits, ["a"], 1), "b": _model(toy_splits, ["a"], 2)}
    with pytest.raises(ConfigError, match=r"^method\.params\.classifier_layer: .* does not give the teacher's logits"):
        distill(
            _model(toy_splits, ["b"]), teachers, toy_splits, tmp_path / "r", "mst_distill",
            {"feature_layer": feature, "classifier_layer": classifier}, trainer=ONE_EPOCH,
        )  # fmt: skip


def test_mst_distill_names_a_layer_a_teacher_lacks(toy_splits, tmp_path):
    teachers = {"a": _model(toy_splits, ["a"], 1), "b": _model(toy_splits, ["b"], 2)}
    with pytest.raises(ConfigError, match=r"^method\.params\.feature_layer: layer 'fusion' not found"):
        distill(
            _model(toy_splits, ["b"]), teachers, toy_splits, tmp_path / "r", "mst_distill",
            {"feature_layer": "fusion"}, trainer=ONE_EPOCH,
        )  # fmt: skip


def test_a_single_teacher_method_with_several_teachers_is_refused(toy_splits, tmp_path):
    teachers = [_model(toy_splits, ["a"]), _model(toy_splits, ["b"])]
    with pytest.raises(ConfigError, match=r"^teachers: method 'kd' distils from one teacher and this run names 2"):
        distill(_model(toy_splits, ["b"]), teachers, toy_splits, tmp_path / "r", "kd", trainer=ONE_EPOCH)


MODEL = {"modalities": ["a"], "encoder": ENCODER}


def test_teachers_section_takes_a_list_or_a_mapping():
    listed = RunConfig.model_validate({"student": {"model": MODEL}, "teachers": [{"model": MODEL}, {"model": MODEL}]})
    assert list(listed.teachers) == ["0", "1"]
    named = RunConfig.model_validate({"student": {"model": MODEL}, "teachers": {"x": {"model": MODEL}}})
    assert list(named.teacher_sections()) == ["teachers.x"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"teacher": {"model": MODEL}, "teachers": [{"model": MODEL}]},
            r"^invalid config: teachers: give teacher \(one teacher\) or teachers \(several\), not both",
        ),
        ({"teachers": []}, r"^invalid config: teachers: no teacher given"),
        ({"teachers": {"a.b": {"model": MODEL}}}, r"^invalid config: teachers: name 'a\.b' is not a teacher name"),
        ({"teachers": {"x": {"model": MODEL, "checkpoint": "/nonexistent.safetensors"}}}, "teachers.x.checkpoint"),
    ],
)
def test_a_bad_teachers_section_is_one_error_naming_the_key(tmp_path, raw, message):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"student": {"model": MODEL}, **raw}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_config_teacher_reading_a_modality_the_data_lack_is_named(tmp_path):
    from mmdistill.data import build_splits
    from mmdistill.engine.assembly import build_run_teacher

    teachers = {"x": {"model": MODEL}, "y": {"model": {**MODEL, "modalities": ["c"]}}}
    cfg = RunConfig.model_validate({"student": {"model": MODEL}, "teachers": teachers})
    with pytest.raises(ConfigError, match=r"^teachers\.y\.model\.modalities: dataset has no modality 'c'"):
        build_run_teacher(cfg, build_splits("toy-two-modality", {"n": 200}))


def test_a_sweep_over_a_base_config_with_several_teachers_is_refused():
    from types import SimpleNamespace

    from mmdistill.sweep.plan import needs_teachers

    spec = SimpleNamespace(methods=["multi_teacher_kd"], base={"teachers": {"x": {"model": MODEL}}})
    with pytest.raises(ConfigError, match=r"^base\.teachers: a sweep compares every method with KD from one teacher"):
        needs_teachers(spec)
