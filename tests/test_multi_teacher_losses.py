"""The multi-teacher losses and MST-Distill's terms against values worked by hand on two classes.

Notation: u = (1/2, 1/2) (logits [0, 0]); q = (3/4, 1/4) (logits [ln 3, 0] at T = 1, [2 ln 3, 0] at T = 2).
KL(q || u) = 3/4 ln(3/2) + 1/4 ln(1/2); KL(u || q) = 1/2 ln(2/3) + 1/2 ln 2.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mmdistill.methods.base import StudentOutputs, TeacherOutputs
from mmdistill.methods.mst_distill import MaskNet, balance_loss, mask_loss, routed_kd
from mmdistill.methods.multi_teacher_adaptive import AdaptiveMultiTeacherKD, example_teacher_weights
from mmdistill.methods.multi_teacher_base import TeacherGroupOutputs
from mmdistill.methods.multi_teacher_kd import MultiTeacherKD, fixed_teacher_weights

LN3 = math.log(3.0)
KL_Q_U = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
KL_U_Q = 0.5 * math.log(2 / 3) + 0.5 * math.log(2.0)


def group(*teacher_logits: list[list[float]]) -> TeacherGroupOutputs:
    members = [TeacherOutputs(torch.tensor(t)) for t in teacher_logits]
    return TeacherGroupOutputs.of(tuple(str(i) for i in range(len(members))), members)


def student(rows: int) -> StudentOutputs:
    return StudentOutputs(torch.zeros(rows, 2))


def batch(rows: int) -> dict:
    return {"label": torch.zeros(rows, dtype=torch.long)}


def method(cls, **params):
    return cls(cls.Params(**params))


def test_fixed_weights_weigh_each_teachers_kd_term_and_scale_by_t_squared():
    algo = method(MultiTeacherKD, temperature=2.0, weights=[3.0, 1.0])
    algo.setup(batch(1), None, SimpleNamespace(members={"0": None, "1": None}))
    terms = algo.losses(batch(1), student(1), group([[2 * LN3, 0.0]], [[0.0, 0.0]]))
    assert terms["kd"].item() == pytest.approx(0.75 * 4 * KL_Q_U, rel=1e-6)


def test_the_default_weights_are_the_plain_average():
    assert fixed_teacher_weights(None, ("a", "b", "c")).tolist() == pytest.approx([1 / 3] * 3)
    assert fixed_teacher_weights({"b": 1.0, "a": 3.0}, ("a", "b")).tolist() == pytest.approx([0.75, 0.25])


def test_confidence_weights_are_each_teachers_max_probability_normalised_per_example():
    logits = torch.tensor([[[LN3, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, LN3]]])
    weights = example_teacher_weights(logits, "confidence")
    assert weights.tolist() == [pytest.approx([0.6, 0.4]), pytest.approx([0.4, 0.6])]


def test_entropy_weights_are_a_softmax_of_minus_each_teachers_entropy():
    entropy_q = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    w_q = math.exp(-entropy_q) / (math.exp(-entropy_q) + math.exp(-math.log(2.0)))
    weights = example_teacher_weights(torch.tensor([[[LN3, 0.0], [0.0, 0.0]]]), "entropy")
    assert weights[0].tolist() == pytest.approx([w_q, 1 - w_q], rel=1e-6)


def test_adaptive_kd_weighs_each_examples_teachers_by_their_confidence():
    algo = method(AdaptiveMultiTeacherKD, temperature=1.0, weighting="confidence")
    # example 1: teacher 0 sure (q), teacher 1 uniform; example 2: teacher 0 uniform, teacher 1 sure (q reversed)
    out = group([[LN3, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, LN3]])
    terms = algo.losses(batch(2), student(2), out)
    assert terms["kd"].item() == pytest.approx(0.6 * KL_Q_U, rel=1e-6)  # 0.6 KL(q||u) in each example


def test_router_kd_averages_the_top_k_teachers_of_each_example():
    teachers = torch.tensor([[[0.0, 0.0], [LN3, 0.0]], [[LN3, 0.0], [0.0, 0.0]]])  # (B=2, K=2, C=2)
    gate = torch.tensor([[0.3, 0.7], [0.9, 0.1]])  # example 1 picks teacher 1 (q), example 2 teacher 0 (q)
    s = torch.zeros(2, 2)
    assert routed_kd(s, teachers, gate, 1, 1.0).item() == pytest.approx(KL_Q_U, rel=1e-6)
    assert routed_kd(s, teachers, gate, 2, 1.0).item() == pytest.approx(KL_Q_U / 2, rel=1e-6)
    assert routed_kd(s, teachers * 2, gate, 1, 2.0).item() == pytest.approx(4 * KL_Q_U, rel=1e-6)


def test_balance_loss_is_kl_of_uniform_to_the_mean_gate_over_k():
    gate = torch.tensor([[0.3, 0.7], [0.9, 0.1]])  # mean gate (0.6, 0.4)
    expected = (0.5 * math.log(0.5 / 0.6) + 0.5 * math.log(0.5 / 0.4)) / 2
    assert balance_loss(gate).item() == pytest.approx(expected, rel=1e-5)
    assert balance_loss(torch.tensor([[0.5, 0.5]])).item() == pytest.approx(0.0, abs=1e-7)


def test_mask_loss_pulls_each_masked_teacher_towards_the_fixed_student():
    masked = torch.tensor([[[LN3, 0.0], [0.0, 0.0]]], requires_grad=True)  # (B=1, K=2, C=2)
    s = torch.zeros(1, 2, requires_grad=True)
    loss = mask_loss(s, masked, 1.0)
    assert loss.item() == pytest.approx(KL_U_Q / 2, rel=1e-6)
    loss.backward()
    assert s.grad is None and masked.grad is not None and masked.grad.abs().sum() > 0


def test_mask_net_gives_one_value_in_0_1_per_feature():
    torch.manual_seed(0)
    mask = MaskNet(5, 4, 2)(torch.randn(3, 5))
    assert mask.shape == (3, 5) and bool(((mask > 0) & (mask < 1)).all())


def test_fixed_weights_serve_segmentation_with_its_own_per_pixel_kd_term():
    from mmdistill.engine.parts import build_method
    from mmdistill.tasks import get_task

    task = get_task({"name": "segmentation", "params": {"ignore_index": 99}})
    algo = build_method("multi_teacher_kd", {"weights": [1.0, 3.0], "temperature": 2.0}, None, task)
    algo.setup(batch(1), None, SimpleNamespace(members={"0": None, "1": None}))
    g = torch.Generator().manual_seed(0)
    s, t0, t1 = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    label = torch.randint(0, 3, (2, 4, 4), generator=g)
    label[0, 0] = 99  # ignored pixels
    out = group(t0.tolist(), t1.tolist())
    assert out.logits.shape == (2, 2, 3, 4, 4)
    terms = algo.losses({"label": label}, StudentOutputs(s), out)
    expected = 0.25 * task.kd_loss(s, t0, 2.0, label) + 0.75 * task.kd_loss(s, t1, 2.0, label)
    assert terms["kd"].item() == pytest.approx(expected.item(), rel=1e-6)
