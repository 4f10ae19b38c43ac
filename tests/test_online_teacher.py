"""A teacher that learns alongside the student (``teacher.trainable``): DML, C2KD's learning teacher, the refusals,
and a resume bitwise equal to an uninterrupted run (the teacher's weights and optimizer state in the checkpoint)."""

from __future__ import annotations

import copy

import pytest
import torch

from mmdistill.batch import LABEL
from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.engine.api import distill
from mmdistill.engine.system.checkpoint import load_tensors
from mmdistill.errors import ConfigError
from mmdistill.methods.base import StudentOutputs, TeacherOutputs
from mmdistill.methods.dml import DeepMutualLearning
from mmdistill.models.multimodal import ModelConfig, build_model

LAYERS = {"student_layer": "encoders.b.body.1", "teacher_layer": "encoders.a.body.1"}


def _models(data, dropout=0.0):
    specs = data.train.specs()
    enc = {"hidden": [8], "out_dim": 6, "dropout": dropout}
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=enc), specs, data.num_classes)
    torch.manual_seed(1)
    student = build_model(ModelConfig(modalities=["b"], encoder=enc), specs, data.num_classes)
    return teacher, student


def _trainer(epochs=1):
    return TrainerConfig(epochs=epochs, batch_size=50, num_threads=1)


def test_dml_terms_give_each_network_its_own_loss():
    s = torch.tensor([[0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0]], requires_grad=True)
    method = DeepMutualLearning(DeepMutualLearning.Params())
    out = method.losses({LABEL: torch.tensor([0])}, StudentOutputs(s), TeacherOutputs(t))
    p_t = torch.softmax(t.detach(), -1)[0]  # [e / (e + 1), 1 / (e + 1)]
    expected_kl = float((p_t * (p_t / 0.5).log()).sum())  # KL(p_t || [.5, .5])
    assert float(out["kl"].detach()) == pytest.approx(expected_kl)
    assert float(out["kl_t"].detach()) == pytest.approx(float((0.5 * (0.5 / p_t).log()).sum()))
    out["kl"].backward(retain_graph=True)
    assert t.grad is None and s.grad is not None  # the student's KL does not move the teacher
    s.grad = None
    out["kl_t"].backward()
    assert s.grad is None and t.grad is not None  # and the teacher's does not move the student


@pytest.mark.parametrize(("method", "params"), [("dml", {}), ("c2kd", LAYERS)])
def test_a_trainable_teacher_learns_during_training(toy_splits, tmp_path, method, params):
    teacher, student = _models(toy_splits)
    before = copy.deepcopy(teacher.state_dict())
    distill(student, teacher, toy_splits, tmp_path / "run", method, params, trainer=_trainer(), teacher_trainable=True,
            quiet=True)  # fmt: skip
    changed = [k for k, v in teacher.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the teacher's weights must change when it learns alongside"
    saved = load_tensors(tmp_path / "run" / "checkpoints" / "last.safetensors")[0]
    assert any(k.startswith("module.teacher.") for k in saved)


def test_c2kd_with_a_frozen_teacher_leaves_it_unchanged(toy_splits, tmp_path):
    teacher, student = _models(toy_splits)
    before = copy.deepcopy(teacher.state_dict())
    distill(student, teacher, toy_splits, tmp_path / "run", "c2kd", LAYERS, trainer=_trainer(), quiet=True,
            cache=CacheConfig(dir=tmp_path / "cache"))  # fmt: skip
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_c2kd_adds_the_teacher_backbone_terms_when_the_teacher_learns():
    from mmdistill.methods.c2kd import C2KD

    method = C2KD(C2KD.Params(student_layer="s", teacher_layer="t"))
    method.proxy_s, method.proxy_t = torch.nn.Identity(), torch.nn.Identity()
    t = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    feats = torch.tensor([[1.0, 0.0, 0.0]])
    args = (
        {LABEL: torch.tensor([2])},
        StudentOutputs(torch.zeros(1, 3), {"s": feats}),
        TeacherOutputs(t, {"t": feats}),
    )
    assert "ce_t" not in method.losses(*args)
    method.teacher_learns = True
    out = method.losses(*args)
    expected_ce = -float(torch.log_softmax(t.detach(), -1)[0, 2])
    assert float(out["ce_t"].detach()) == pytest.approx(expected_ce)
    log_p = torch.log_softmax(feats, -1)  # output_t = KL(softmax(sg pi_t) || softmax(t))
    expected = float((log_p.exp() * (log_p - torch.log_softmax(t.detach(), -1))).sum())
    assert float(out["output_t"].detach()) == pytest.approx(expected)
    assert set(method.loss_weights()) >= set(out)


def test_resume_with_a_learning_teacher_is_bitwise_equal_to_an_uninterrupted_run(toy_splits, tmp_path):
    base, _ = _models(toy_splits, dropout=0.2)

    def run(out, epochs, resume=False):
        teacher, student = _models(toy_splits, dropout=0.2)
        teacher.load_state_dict(base.state_dict())
        distill(student, teacher, toy_splits, out, "dml", trainer=_trainer(epochs), resume=resume,
                teacher_trainable=True, quiet=True)  # fmt: skip
        return load_tensors(out / "checkpoints" / "last.safetensors")[0]

    full = run(tmp_path / "full", 2)
    first = run(tmp_path / "split", 1)
    resumed = run(tmp_path / "split", 2, resume=True)
    assert full.keys() == resumed.keys()
    for k, v in full.items():  # the student, the teacher, the optimizer's state of both
        assert torch.equal(v, resumed[k]), k
    teacher_keys = [k for k in full if k.startswith("module.teacher.")]
    assert teacher_keys and not all(torch.equal(first[k], full[k]) for k in teacher_keys)  # epoch 2 moved it


def test_a_trainable_teacher_refuses_the_cache_and_methods_that_do_not_train_it(toy_splits, tmp_path):
    teacher, student = _models(toy_splits)
    with pytest.raises(ConfigError, match=r"^cache.enabled: .*teacher.trainable"):
        distill(student, teacher, toy_splits, tmp_path / "a", "dml", trainer=_trainer(), teacher_trainable=True,
                cache=CacheConfig(enabled=True))  # fmt: skip
    with pytest.raises(ConfigError, match=r"^teacher.trainable: method 'kd' .*dml"):
        distill(student, teacher, toy_splits, tmp_path / "b", "kd", trainer=_trainer(), teacher_trainable=True)
    with pytest.raises(ConfigError, match=r"^teacher.trainable: method 'dml' .*set teacher.trainable: true"):
        distill(student, teacher, toy_splits, tmp_path / "c", "dml", trainer=_trainer())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_teacher_trainable_from_a_config_file(tiny_config, tmp_path, capsys):
    """``teacher.trainable: true`` in YAML: the student's run trains the teacher it was given (trained first, by
    CE) alongside; with ``cache.enabled: true`` the run is refused before anything trains."""
    from mmdistill.cli import main

    config = tiny_config(epochs=1)
    text = config.read_text().replace("student:\n", "  trainable: true\nstudent:\n")
    config.write_text(text.replace("{name: kd, params: {temperature: 2.0, lam: 0.5}}", "{name: dml}"))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet", "--no-baseline"]) == 0, capsys.readouterr().err
    trained_first = load_tensors(out / "seed_0" / "teacher" / "student.safetensors")[0]
    learned = load_tensors(out / "seed_0" / "student" / "checkpoints" / "last.safetensors")[0]
    assert trained_first and any(not torch.equal(v, learned[f"module.teacher.{k}"]) for k, v in trained_first.items())
    refused = ["train", str(config), "--out", str(tmp_path / "no"), "--quiet", "cache.enabled=true"]
    assert main(refused) == 2
    err = capsys.readouterr().err
    assert "cache.enabled: " in err and "teacher.trainable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "no").exists()


def test_train_stopped_after_a_learning_teachers_first_epoch_resumes_bitwise(tiny_config, tmp_path, capsys):
    """``mmdistill train`` with ``teacher.trainable``, stopped after the student's epoch 1 (a listener raising, as
    Ctrl-C would) and resumed with ``--resume``: the student and the learned teacher equal an uninterrupted run's."""
    from mmdistill.cli import main
    from mmdistill.engine.epoch_listeners import listening

    config = tiny_config(epochs=2, dropout=0.2)
    text = config.read_text().replace("student:\n", "  trainable: true\nstudent:\n")
    config.write_text(text.replace("{name: kd, params: {temperature: 2.0, lam: 0.5}}", "{name: dml}"))
    argv = ["train", str(config), "--quiet", "--no-baseline", "--out"]
    assert main([*argv, str(tmp_path / "full")]) == 0, capsys.readouterr().err

    def stop_after_the_students_first_epoch(report):
        if report.desc.endswith("student") and report.epoch == 1:
            raise KeyboardInterrupt

    with listening(stop_after_the_students_first_epoch):
        assert main([*argv, str(tmp_path / "stopped")]) == 130
    assert not (tmp_path / "stopped" / "metrics.json").exists()
    assert main([*argv, str(tmp_path / "stopped"), "--resume"]) == 0, capsys.readouterr().err
    for name in ("student.safetensors", "checkpoints/last.safetensors"):
        full = load_tensors(tmp_path / "full" / "seed_0" / "student" / name)[0]
        resumed = load_tensors(tmp_path / "stopped" / "seed_0" / "student" / name)[0]
        assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full), name
    assert any(k.startswith("module.teacher.") for k in full)


def test_a_distill_folder_records_that_its_teacher_learned(toy_splits, tmp_path):
    """The folder's config.yaml says teacher.trainable, and the teacher saved beside it is the trained one."""
    from mmdistill.config import load_config

    teacher, student = _models(toy_splits)
    distill(student, teacher, toy_splits, tmp_path / "run", "dml", trainer=_trainer(), teacher_trainable=True,
            quiet=True)  # fmt: skip
    cfg = load_config(tmp_path / "run" / "config.yaml")
    assert cfg.teacher is not None and cfg.teacher.trainable is True
    saved = load_tensors(tmp_path / "run" / "teacher.safetensors")[0]
    assert all(torch.equal(saved[k], v) for k, v in teacher.state_dict().items())
