"""Each method's settings have their effect: KD's lam, hint's beta, MSD's meta step and instance_temperature."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mmdistill.batch import LABEL
from mmdistill.engine.api import build_method
from mmdistill.engine.teacher import teacher_outputs
from mmdistill.masking import Masker
from mmdistill.methods.base import StudentOutputs, TeacherOutputs, weighted_total
from mmdistill.models import EncoderConfig, ModelConfig, build_model
from mmdistill.models.hooks import FeatureHooks


def kl_rows(logits_p, logits_q):
    """KL(softmax(p) || softmax(q)) of each row, written out."""
    log_p, log_q = F.log_softmax(logits_p, -1), F.log_softmax(logits_q, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def pair(splits):
    specs, n = splits.train.specs(), splits.num_classes
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[32], out_dim=16)), specs, n)
    student = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[8], out_dim=8)), specs, n)
    return teacher, student, Masker(specs, "zeros").fit(splits.train.feature_mean())


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_kd_lam_weighs_the_kd_term_and_one_minus_lam_the_ce_term(lam):
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 5), 3 * torch.randn(6, 5), torch.randint(5, (6,))
    method = build_method("kd", {"lam": lam, "temperature": 2.0}, None)
    total = weighted_total(method.losses({LABEL: y}, StudentOutputs(s), TeacherOutputs(t)), method.loss_weights())
    ce, kd = F.cross_entropy(s, y), 4.0 * kl_rows(t / 2, s / 2).mean()
    assert abs(ce - kd) > 0.2, "the two terms must differ for a swap to show"
    assert total.item() == pytest.approx(((1 - lam) * ce + lam * kd).item(), rel=1e-6)


@pytest.mark.parametrize("beta", [0.0, 3.0])
def test_hint_beta_weighs_the_hint_term(toy_splits, beta):
    teacher, student, masker = pair(toy_splits)
    layers = {"student_layer": "encoders.a.body.0", "teacher_layer": "encoders.a.body.0"}
    method = build_method("hint", {**layers, "beta": beta}, masker)
    batch = toy_splits.train.__getitems__(range(16))
    method.setup(batch, student, teacher)
    t_out = teacher_outputs(teacher.eval(), batch, method.teacher_request(), masker)
    total = weighted_total(method.losses(batch, method.forward_student(student, batch), t_out), method.loss_weights())
    with FeatureHooks(student, [layers["student_layer"]]) as fs, FeatureHooks(teacher, [layers["teacher_layer"]]) as ft:
        logits = student(batch)
        teacher(batch)
    hint = F.mse_loss(method.projector(fs[layers["student_layer"]]), ft[layers["teacher_layer"]])
    assert hint.item() > 0.01
    assert total.item() == pytest.approx((F.cross_entropy(logits, batch[LABEL]) + beta * hint).item(), rel=1e-5)


def msd_method(splits, teacher, student, masker, **params):
    method = build_method("msd", params, masker)
    method.setup(splits.train.__getitems__(range(8)), student, teacher)
    return method


def heldout_loss_after_lookahead(method, student, batch, t_out, held) -> float:
    """CE on ``held`` at theta - inner_lr * grad_theta L(theta, phi): what the meta step lowers by moving phi."""
    params = dict(student.named_parameters())
    terms = method.losses(batch, method.forward_student(student, batch), t_out)
    grads = torch.autograd.grad(weighted_total(terms, method.loss_weights()), list(params.values()))
    ahead = {n: q - method.params.inner_lr * g for (n, q), g in zip(params.items(), grads)}
    with torch.no_grad():
        return F.cross_entropy(functional_call(student, ahead, (held,)), held[LABEL]).item()


def test_msd_meta_step_lowers_the_heldout_loss_and_leaves_the_student_alone(toy_splits):
    teacher, student, masker = pair(toy_splits)
    method = msd_method(
        toy_splits,
        teacher,
        student,
        masker,
        weighting="learned",
        heldout_fraction=0.25,
        meta_lr=10.0,
        inner_lr=1.0,
        temperature=2.0,
    )
    train = method.prepare(toy_splits.train, teacher, torch.device("cpu"))
    held = method.heldout.__getitems__(range(len(method.heldout)))
    method._heldout_batch = lambda size, device: held  # the whole held-out part: a deterministic meta step
    batch = train.__getitems__(range(48))
    t_out = teacher_outputs(teacher.eval(), batch, method.teacher_request(), masker)
    theta = {k: v.clone() for k, v in student.state_dict().items()}
    phi = [q.clone() for q in method.weight_net.parameters()]
    before = heldout_loss_after_lookahead(method, student, batch, t_out, held)
    w_before = method.weights(batch, t_out)
    method.train()
    method.before_step(student, batch, t_out)
    after = heldout_loss_after_lookahead(method, student, batch, t_out, held)
    assert after < before - 1e-5, (before, after)
    assert not torch.allclose(method.weights(batch, t_out), w_before), "the step's loss sees the new weights"
    assert any(not torch.equal(a, b) for a, b in zip(phi, method.weight_net.parameters()))
    assert all(torch.equal(theta[k], v) for k, v in student.state_dict().items()), "theta is the optimizer's"
    assert not any(q.requires_grad for q in method.weight_net.parameters()), "phi stays out of the main optimizer"


def test_msd_before_step_does_nothing_for_fixed_weightings(toy_splits):
    teacher, student, masker = pair(toy_splits)
    method = msd_method(toy_splits, teacher, student, masker, weighting="instance")
    batch = toy_splits.train.__getitems__(range(8))
    state = torch.get_rng_state()
    method.before_step(student, batch, teacher_outputs(teacher.eval(), batch, method.teacher_request(), masker))
    assert torch.equal(state, torch.get_rng_state())


def test_msd_instance_temperature_scales_the_log_weight_ratio(toy_splits):
    teacher, student, masker = pair(toy_splits)
    batch = toy_splits.train.__getitems__(range(12))
    with torch.no_grad():
        full = teacher.eval()(batch)
        s_a = kl_rows(full, teacher(masker.keep_only(batch, "b")))  # saliency of a: KL(p_t(x) || p_t(x without a))
        s_b = kl_rows(full, teacher(masker.keep_only(batch, "a")))
    for tau in (0.25, 4.0):
        method = msd_method(toy_splits, teacher, student, masker, weighting="instance", instance_temperature=tau)
        w = method.weights(batch, teacher_outputs(teacher, batch, method.teacher_request(), masker))
        # w = 2 * softmax(s / tau): log(w_a / w_b) = (s_a - s_b) / tau
        torch.testing.assert_close(torch.log(w[:, 0] / w[:, 1]), (s_a - s_b) / tau, rtol=1e-4, atol=1e-5)
    assert (s_a - s_b).abs().max() > 0.02, "the saliencies must differ for tau to show"


def test_msd_meta_step_is_one_sgd_step_of_phi_on_the_lookahead_heldout_loss(toy_splits):
    """phi' = phi - meta_lr * d/dphi CE_held(theta - inner_lr * grad_theta L(theta, phi)), gradient by autograd."""
    teacher, student, masker = pair(toy_splits)
    method = msd_method(
        toy_splits, teacher, student, masker, weighting="learned", heldout_fraction=0.25, meta_lr=10.0, inner_lr=1.0
    )
    train = method.prepare(toy_splits.train, teacher, torch.device("cpu"))
    held = method.heldout.__getitems__(range(len(method.heldout)))
    method._heldout_batch = lambda size, device: held
    batch = train.__getitems__(range(48))
    t_out = teacher_outputs(teacher.eval(), batch, method.teacher_request(), masker)
    phi = list(method.weight_net.parameters())
    for q in phi:
        q.requires_grad_(True)
    params = dict(student.named_parameters())
    terms = method._terms(batch, method.forward_student(student, batch), t_out, method.weights(batch, t_out))
    grads = torch.autograd.grad(weighted_total(terms, method.loss_weights()), list(params.values()), create_graph=True)
    ahead = {n: q - 1.0 * g for (n, q), g in zip(params.items(), grads)}
    held_loss = F.cross_entropy(functional_call(student, ahead, (held,)), held[LABEL])
    want = [(q - 10.0 * g).detach() for q, g in zip(phi, torch.autograd.grad(held_loss, phi))]
    for q in phi:
        q.requires_grad_(False)
    phi0 = [q.clone() for q in phi]
    method.train()
    method.before_step(student, batch, t_out)
    for got, expected in zip(method.weight_net.parameters(), want):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert sum(float((g - q).abs().sum()) for g, q in zip(want, phi0)) > 1e-4, "phi must move for the test to show"
