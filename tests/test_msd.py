"""MSD: the loss terms, the one-pass views, saliency weights, the meta-learned weights, bad input."""

import pytest
import torch

from mmdistill.config import CacheConfig, MaskingConfig, TrainerConfig
from mmdistill.engine.api import build_method, distill
from mmdistill.engine.teacher import teacher_outputs
from mmdistill.errors import ConfigError
from mmdistill.kl import kd_loss, kd_per_example
from mmdistill.masking import Masker
from mmdistill.methods.base import term_value
from mmdistill.models import EncoderConfig, ModelConfig, build_model

TRAINER = TrainerConfig(epochs=3, batch_size=32)


def pair(splits, teacher_mods=("a", "b"), student_mods=("a", "b")):
    specs, n = splits.train.specs(), splits.num_classes
    torch.manual_seed(0)
    teacher = build_model(
        ModelConfig(modalities=list(teacher_mods), encoder=EncoderConfig(hidden=[32], out_dim=16)), specs, n
    )
    student = build_model(
        ModelConfig(modalities=list(student_mods), encoder=EncoderConfig(hidden=[8], out_dim=8)), specs, n
    )
    return teacher, student


def msd(splits, teacher, student, **params):
    masker = Masker(splits.train.specs(), "zeros").fit(splits.train.feature_mean())
    method = build_method("msd", params, masker)
    method.setup(splits.train.__getitems__(range(8)), student, teacher)
    return method


def test_terms_match_their_formulas_with_uniform_weights(toy_splits):
    teacher, student = pair(toy_splits)
    method = msd(toy_splits, teacher, student, temperature=2.0)
    batch = toy_splits.train.__getitems__(range(16))
    t_out = teacher_outputs(teacher.eval(), batch, method.teacher_request(), method.masker)
    terms = method.losses(batch, method.forward_student(student, batch), t_out)
    assert set(terms) == {"ce", "kd", "kd/a", "kd/b"}
    only_a = method.masker.keep_only(batch, "a")
    with torch.no_grad():
        expected = kd_loss(student(only_a), teacher(only_a), 2.0)
    torch.testing.assert_close(term_value(terms["kd/a"]).detach(), expected, rtol=1e-5, atol=1e-6)


def test_views_go_through_the_student_in_one_pass_equal_to_separate_calls(toy_splits):
    teacher, student = pair(toy_splits)
    method = msd(toy_splits, teacher, student)
    batch = toy_splits.train.__getitems__(range(10))
    calls = []
    student.register_forward_hook(lambda mod, inp, out: calls.append(out.shape[0]))
    out = method.forward_student(student, batch)
    assert calls == [30], "full input + 2 modality-only views in a single forward"
    with torch.no_grad():
        torch.testing.assert_close(out.view_logits[1], student(method.masker.keep_only(batch, "b")))
        torch.testing.assert_close(out.logits, student(batch))


def test_kd_per_example_averages_to_batchmean_kd():
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(kd_per_example(s, t, 3.0).mean(), kd_loss(s, t, 3.0))


def test_population_weights_favour_the_salient_modality(tmp_path):
    from mmdistill.data import build_splits

    splits = build_splits("toy-two-modality", {"n": 400, "noise_a": 0.5, "noise_b": 0.01, "dim_a": 16, "dim_b": 16})
    splits.train.tensors["a"] = torch.randn_like(splits.train.tensors["a"])  # a carries no label information
    teacher, _ = pair(splits)
    distill(teacher, None, splits, tmp_path / "t", "supervised", trainer=TrainerConfig(epochs=8))
    _, student = pair(splits)
    method = msd(splits, teacher, student, weighting="population")
    method.prepare(splits.train, teacher, torch.device("cpu"))
    w = method.population_weights
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert w[1] > 1.5 * w[0], f"only b decides the label, so removing b must move the teacher most: {w}"


def test_instance_weights_sum_to_the_number_of_modalities(toy_splits):
    teacher, student = pair(toy_splits)
    method = msd(toy_splits, teacher, student, weighting="instance", instance_temperature=0.5)
    batch = toy_splits.train.__getitems__(range(12))
    w = method.weights(batch, teacher_outputs(teacher.eval(), batch, method.teacher_request(), method.masker))
    assert w.shape == (12, 2)
    torch.testing.assert_close(w.sum(1), torch.full((12,), 2.0))
    assert not torch.allclose(w[:, 0], w[0, 0].expand(12)), "instance weights vary across examples"


def test_learned_weights_are_meta_learned_not_trained_by_the_main_optimizer(toy_splits, tmp_path):
    teacher, student = pair(toy_splits)
    r = distill(
        student,
        teacher,
        toy_splits,
        tmp_path / "l",
        "msd",
        {"weighting": "learned", "heldout_fraction": 0.2, "meta_lr": 0.5},
        trainer=TRAINER,
        cache=CacheConfig(dir=tmp_path / "c"),
    )
    from mmdistill.engine.system.checkpoint import load_tensors

    weights, _ = load_tensors(tmp_path / "l" / "checkpoints" / "last.safetensors")
    last_layer = weights["module.method.weight_net.2.weight"]
    assert last_layer.abs().sum() > 0, "phi starts at zero; the meta step must have moved it"
    assert not any(k.startswith("optim.") and "weight_net" in k for k in weights)
    assert 0 <= r.test["accuracy"] <= 100  # percent


def test_msd_with_cache_equals_without(toy_splits, tmp_path):
    finals = []
    for enabled in (True, False):
        teacher, student = pair(toy_splits)
        distill(
            student,
            teacher,
            toy_splits,
            tmp_path / str(enabled),
            "msd",
            {"weighting": "instance"},
            trainer=TRAINER,
            cache=CacheConfig(enabled=enabled, dir=tmp_path / "c"),
        )
        finals.append(student.state_dict())
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], rtol=1e-5, atol=1e-6)


def test_msd_needs_two_modalities(toy_splits, tmp_path):
    teacher, student = pair(toy_splits, student_mods=("b",))
    with pytest.raises(ConfigError, match="needs two or more modalities.*\\['b'\\]"):
        distill(student, teacher, toy_splits, tmp_path / "x", "msd", trainer=TRAINER)


def test_unknown_weighting_is_named(toy_splits):
    with pytest.raises(
        ConfigError, match=r"method\.params\.weighting: .*'uniform', 'population', 'instance' or 'learned'"
    ):
        build_method("msd", {"weighting": "saliency"}, Masker(toy_splits.train.specs()))


def test_learned_without_heldout_split_is_an_error(toy_splits, tmp_path):
    teacher, student = pair(toy_splits)
    with pytest.raises(ConfigError, match="heldout_fraction.*held-out split"):
        distill(student, teacher, toy_splits, tmp_path / "x", "msd", {"weighting": "learned"}, trainer=TRAINER)


def test_learned_null_tokens_cannot_be_cached(toy_splits, tmp_path):
    teacher, student = pair(toy_splits)
    with pytest.raises(ConfigError, match="learned null tokens"):
        distill(
            student,
            teacher,
            toy_splits,
            tmp_path / "x",
            "msd",
            trainer=TRAINER,
            masking=MaskingConfig(strategy="learned"),
            cache=CacheConfig(dir=tmp_path / "c"),
        )


def test_every_weighting_runs_from_a_config_through_the_cli(tiny_config, tmp_path):
    from mmdistill.cli import main

    cfg = tiny_config(epochs=1)
    cfg.write_text(cfg.read_text().replace("modalities: [b]", "modalities: [a, b]"))
    for weighting in ("uniform", "population", "instance", "learned"):
        out = tmp_path / weighting
        assert (
            main(
                [
                    "train",
                    str(cfg),
                    "method.name=msd",
                    f"method.params={{weighting: {weighting}, heldout_fraction: 0.1}}",
                    "--no-baseline",
                    "--quiet",
                    "--out",
                    str(out),
                ]
            )
            == 0
        ), weighting
        assert (out / "seed_0" / "student" / "student.safetensors").is_file()


def test_three_modalities_instance_weights_use_the_removal_views_and_terms_the_modality_only_views():
    """With three modalities the removal views x^(-m) ({b,c}, {a,c}, {a,b}) differ from the modality-only views; the
    instance weights come from KL(p(x) || p(x^(-m))) and each kd/m term from the teacher on x^(m) alone."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from mmdistill.methods.base import StudentOutputs, TeacherOutputs
    from mmdistill.methods.msd import ModalitySpecificDistillation, MSDParams

    method = ModalitySpecificDistillation(MSDParams(weighting="instance", instance_temperature=0.5, temperature=2.0))
    three = SimpleNamespace(modalities=("a", "b", "c"))
    method.setup({}, three, three)
    views = method.teacher_request().views
    assert views == (("a",), ("b",), ("c",), ("b", "c"), ("a", "c"), ("a", "b"))
    for weighting, expect in (("learned", views), ("uniform", views[:3]), ("population", views[:3])):
        other = ModalitySpecificDistillation(MSDParams(weighting=weighting, heldout_fraction=0.1))
        other.setup({}, three, three)
        assert other.teacher_request().views == expect, weighting  # removal views only where the weights read them
    torch.manual_seed(0)
    b, c = 5, 4
    full, view_logits = torch.randn(b, c), torch.randn(len(views), b, c)
    teacher = TeacherOutputs(full, view_logits=view_logits)
    batch = {"label": torch.randint(c, (b,))}
    kl = lambda p, q: (F.softmax(p, -1) * (F.log_softmax(p, -1) - F.log_softmax(q, -1))).sum(-1)  # noqa: E731
    s = torch.stack([kl(full, view_logits[3 + i]) for i in range(3)], 1)
    torch.testing.assert_close(method.weights(batch, teacher), 3 * torch.softmax(s / 0.5, 1))
    student = StudentOutputs(torch.randn(b, c), view_logits=torch.randn(3, b, c))
    terms = method.losses(batch, student, teacher)
    for i, m in enumerate("abc"):
        t, st = F.softmax(view_logits[i] / 2, -1), F.log_softmax(student.view_logits[i] / 2, -1)
        expect = 4 * (t * (t.log() - st)).sum(-1)
        torch.testing.assert_close(terms[f"kd/{m}"].values, expect)
