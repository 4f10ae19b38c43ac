"""The one KL formula (mmdistill.kl) and its users: same numbers as before, no NaN on zero probabilities."""

import torch
import torch.nn.functional as F

from mmdistill.kl import kd_loss, kd_per_example
from mmdistill.methods.msd_saliency import saliency_from_logits
from mmdistill.mfh.ensemble import kd_kl_mean


def test_kd_loss_is_bitwise_torchs_batchmean_kl_div_value_and_gradient():
    torch.manual_seed(0)
    s, t = torch.randn(1000, 37, requires_grad=True), 5 * torch.randn(1000, 37)  # the sum order shows at this size
    ours = kd_loss(s, t, 4.0)
    (g_ours,) = torch.autograd.grad(ours, s)
    log_p_s, log_p_t = F.log_softmax(s / 4.0, -1), F.log_softmax(t / 4.0, -1)
    torch_form = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * 16.0
    (g_torch,) = torch.autograd.grad(torch_form, s)
    assert torch.equal(ours, torch_form) and torch.equal(g_ours, g_torch), (
        "figures computed with F.kl_div must not move"
    )


def test_batchmean_is_the_mean_of_the_per_example_form_over_every_leading_dim():
    s, t = torch.randn(3, 7, 5), torch.randn(3, 7, 5)
    assert kd_per_example(s, t, 2.0).shape == (3, 7)
    torch.testing.assert_close(kd_per_example(s, t, 2.0).mean(), kd_loss(s, t, 2.0))


def test_kl_saliency_is_kd_at_temperature_one():
    full, removed = torch.randn(6, 4), torch.randn(2, 6, 4)
    s = saliency_from_logits(full, removed, None, "kl")
    assert torch.equal(s, torch.stack([kd_per_example(r, full) for r in removed]))


def test_the_mfh_reference_kd_is_finite_when_a_teacher_probability_is_zero():
    t = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    s = torch.tensor([[2.0, -1.0], [0.0, 0.0]])
    value = kd_kl_mean(s, t)
    expected = (-F.log_softmax(s, -1)[0, 0]) / 4  # row 2 is exact, row 1: 1 * (log 1 - log p_s0), 0 log 0 = 0
    torch.testing.assert_close(value, expected)
