"""DKD, CRD and C2KD against values worked out by hand from the papers' formulas on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmdistill.batch import INDEX, LABEL
from mmdistill.methods.base import StudentOutputs, TeacherOutputs
from mmdistill.methods.c2kd import C2KD, kendall_tau_b, non_target_kl
from mmdistill.methods.crd import ContrastiveRD, critic, momentum_update, nce_loss
from mmdistill.methods.dkd import DecoupledKD, dkd_terms

LN = math.log


def close(value, expected, tol=1e-6):
    assert float(value) == pytest.approx(float(expected), abs=tol)


# ---- DKD ----------------------------------------------------------------------------------------
# student logits [0, 0, 0] -> p_s = [1/3, 1/3, 1/3]; teacher [ln 2, ln 2, 0] -> exp = [2, 2, 1] -> p_t = [.4, .4, .2]
# label 0: b_t = [.4, .6], b_s = [1/3, 2/3]     TCKD = .4 ln(.4 / (1/3)) + .6 ln(.6 / (2/3)) = .4 ln 1.2 + .6 ln .9
# non-target (classes 1, 2): p^t = [2/3, 1/3], p^s = [1/2, 1/2]   NCKD = 2/3 ln(4/3) + 1/3 ln(2/3)
TCKD_T1 = 0.4 * LN(1.2) + 0.6 * LN(0.9)
NCKD_T1 = 2 / 3 * LN(4 / 3) + 1 / 3 * LN(2 / 3)
S_LOGITS = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
T_LOGITS = torch.tensor([[LN(2), LN(2), 0.0]], dtype=torch.float64)
LABEL0 = torch.tensor([0])


def test_dkd_terms_by_hand():
    tckd, nckd = dkd_terms(S_LOGITS, T_LOGITS, LABEL0, 1.0)
    close(tckd, TCKD_T1)
    close(nckd, NCKD_T1)


def test_dkd_terms_scale_with_t_squared():
    # doubling the logits and T = 2 gives the same distributions, so each term is T^2 = 4 times the T = 1 value
    tckd, nckd = dkd_terms(2 * S_LOGITS, 2 * T_LOGITS, LABEL0, 2.0)
    close(tckd, 4 * TCKD_T1)
    close(nckd, 4 * NCKD_T1)


def test_dkd_method_weights_and_warmup():
    method = DecoupledKD(DecoupledKD.Params(temperature=1.0, alpha=1.0, beta=8.0, warmup_steps=4)).train()
    batch = {LABEL: LABEL0}
    out = method.losses(batch, StudentOutputs(S_LOGITS), TeacherOutputs(T_LOGITS))  # step 1 of 4: factor 1/4
    close(out["tckd"], TCKD_T1 / 4)
    close(out["nckd"], NCKD_T1 / 4)
    close(out["ce"], LN(3))  # CE of uniform logits over 3 classes
    assert method.loss_weights() == {"ce": 1.0, "tckd": 1.0, "nckd": 8.0}
    for step in range(1, 6):  # the trainer hands the method each step taken
        method.after_step(step, epoch=1)
        out = method.losses(batch, StudentOutputs(S_LOGITS), TeacherOutputs(T_LOGITS))
    close(out["tckd"], TCKD_T1)  # warmed up: factor 1
    method.after_step(6, epoch=1)
    assert int(method.state_dict()["steps"]) == 6  # the step counter is state: a resumed run continues the ramp


# ---- CRD ----------------------------------------------------------------------------------------


def test_nce_loss_by_hand():
    # N = 4 bank rows, K = 2 negatives: noise K/N = .5. h = [1.5, .5, .25]
    # -(ln(1.5 / 2) + ln(.5 / 1) + ln(.5 / .75)) = -ln(.75 * .5 * 2/3) = -ln .25 = ln 4
    close(nce_loss(torch.tensor([[1.5, 0.5, 0.25]], dtype=torch.float64), n_data=4), LN(4))


def test_critic_by_hand():
    anchor = torch.tensor([[1.0, 0.0]])
    rows = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # dot products 1, 0, -1; / T = .5 -> 2, 0, -2
    torch.testing.assert_close(critic(anchor, rows, 0.5), torch.tensor([[math.exp(2), 1.0, math.exp(-2)]]))


def test_momentum_update_by_hand():
    bank = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    momentum_update(bank, torch.tensor([1]), torch.tensor([[1.0, 0.0]]), 0.25)  # .25 [0, 1] + .75 [1, 0] = [.75, .25]
    torch.testing.assert_close(bank, torch.tensor([[0.0, 1.0], [3 / 10**0.5, 1 / 10**0.5]]))  # / sqrt(.625)


def _crd(n_rows=6):
    params = ContrastiveRD.Params(student_layer="s", teacher_layer="t", feat_dim=2, nce_k=3, nce_t=0.5, nce_m=0.25)
    method = ContrastiveRD(params)
    model = nn.Sequential(nn.Linear(3, 3))
    model.modalities = ("x",)
    method.embed_s, method.embed_t = nn.Identity(), nn.Identity()  # features are the embeddings (normalised below)
    for name in ("bank_s", "bank_t"):
        method.register_buffer(name, torch.zeros(0, 2))
    method.register_buffer("z_s", torch.tensor(-1.0))
    method.register_buffer("z_t", torch.tensor(-1.0))

    class Rows:
        def __len__(self):
            return n_rows

    method.prepare(Rows(), None, torch.device("cpu"))
    return method


def test_crd_method_composes_the_formula_and_keeps_its_state():
    method = _crd().train()
    v_s, v_t = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]])  # normalised: [.6, .8], [0, 1]
    batch = {LABEL: torch.tensor([1]), INDEX: torch.tensor([2])}
    bank_s0, bank_t0 = method.bank_s.clone(), method.bank_t.clone()
    method.generator("cpu").manual_seed(5)  # the method's own random stream, never the global RNG
    out = method.losses(
        batch, StudentOutputs(torch.zeros(1, 2), {"s": v_s}), TeacherOutputs(torch.zeros(1, 2), {"t": v_t})
    )
    assert torch.equal(method.bank_s, bank_s0) and float(method.z_s) < 0, "losses only computes"
    method.after_step(1, epoch=1)  # the trainer, after the optimizer step: the bank update and Z
    negatives = torch.randint(6, (1, 3), generator=torch.Generator().manual_seed(5))
    idx = torch.cat([torch.tensor([[2]]), negatives], 1)  # the same negatives: row 2 first
    h_s = critic(torch.tensor([[0.6, 0.8]]), bank_t0[idx], 0.5)
    h_t = critic(torch.tensor([[0.0, 1.0]]), bank_s0[idx], 0.5)
    z_s, z_t = h_s.mean() * 6, h_t.mean() * 6  # Z fixed from the first batch
    close(out["crd_s"], nce_loss(h_s / z_s, 6), 1e-5)
    close(out["crd_t"], nce_loss(h_t / z_t, 6), 1e-5)
    close(method.z_s, z_s, 1e-5)
    # row 2 moved three quarters of the way to the new embedding (nce_m .25) and was renormalised; other rows untouched
    expected = torch.nn.functional.normalize(0.25 * bank_s0[2] + 0.75 * torch.tensor([0.6, 0.8]), dim=0)
    torch.testing.assert_close(method.bank_s[2], expected)
    others = [0, 1, 3, 4, 5]
    torch.testing.assert_close(method.bank_s[others], bank_s0[others])
    torch.testing.assert_close(method.bank_t[others], bank_t0[others])
    state = method.state_dict()
    assert {"bank_s", "bank_t", "z_s", "z_t"} <= set(state)  # in every checkpoint: resume is bitwise


def test_crd_eval_mode_changes_no_state():
    method = _crd().eval()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    batch = {LABEL: torch.tensor([1]), INDEX: torch.tensor([2])}
    method.losses(
        batch,
        StudentOutputs(torch.zeros(1, 2), {"s": torch.ones(1, 2)}),
        TeacherOutputs(torch.zeros(1, 2), {"t": torch.ones(1, 2)}),
    )
    for k, v in method.state_dict().items():
        torch.testing.assert_close(v, before[k])


# ---- C2KD ---------------------------------------------------------------------------------------


def test_kendall_tau_b_by_hand():
    # a = [1, 2, 3], b = [1, 3, 2]: pairs (0,1) +1, (0,2) +1, (1,2) -1 -> (2 - 1) / 3 = 1/3
    # a = [1, 1, 2], b = [1, 2, 3]: (0,1) is tied in a; 2 concordant; tau_b = 2 / sqrt((3 - 1) * (3 - 0)) = 2 / sqrt(6)
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 2.0]])
    b = torch.tensor([[1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    torch.testing.assert_close(kendall_tau_b(a, b), torch.tensor([1 / 3, 2 / 6**0.5]))


# teacher proxy [5, ln 2, 0], label 0 -> [0, ln 2, 0] -> softmax [1/4, 1/2, 1/4]
# student proxy [7, 0, 0], label 0 -> [0, 0, 0] -> [1/3, 1/3, 1/3]
# KL = 1/4 ln(3/4) + 1/2 ln(3/2) + 1/4 ln(3/4)
NT_KL = 0.5 * LN(0.75) + 0.5 * LN(1.5)


def test_non_target_kl_by_hand():
    close(non_target_kl(torch.tensor([[5.0, LN(2), 0.0]]), torch.tensor([[7.0, 0.0, 0.0]]), LABEL0), NT_KL)


def test_c2kd_selects_agreeing_examples_and_distils_both_ways():
    method = C2KD(C2KD.Params(student_layer="s", teacher_layer="t"))
    method.proxy_s, method.proxy_t = nn.Identity(), nn.Identity()  # the hooked features are the proxies' logits
    pi_t = torch.tensor([[5.0, LN(2), 0.0], [0.0, 1.0, 2.0]])
    pi_s = torch.tensor([[7.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    # example 0: tau_b([5, .69, 0], [7, 0, 0]) = (1 + 1 + 0) / sqrt(3 * 2) > 0 -> selected; example 1: tau = -1 -> not
    s_logits = torch.zeros(2, 3)
    out = method.losses(
        {LABEL: torch.tensor([0, 0])},
        StudentOutputs(s_logits, {"s": pi_s}),
        TeacherOutputs(torch.zeros(2, 3), {"t": pi_t}),
    )
    close(out["ofsd_s"], NT_KL / 2)  # (KL_0 + 0) / B
    # reverse direction, example 0: KL([1/3]*3 || [1/4, 1/2, 1/4]) = 1/3 (ln(4/3) + ln(2/3) + ln(4/3))
    close(out["ofsd_t"], (LN(4 / 3) + LN(2 / 3) + LN(4 / 3)) / 3 / 2)
    # proxy_s = KL(softmax(s) || softmax(pi_s)), s uniform: mean over the examples of ln 1/3 - mean_c log softmax(pi_s)
    lsm = torch.log_softmax(pi_s, -1)
    close(out["proxy_s"], (LN(1 / 3) - lsm.mean(-1)).mean())
    assert set(method.loss_weights()) == set(out)


def test_crd_bank_scores_paths_agree():
    """Every bank row scored and counted (N <= K), the drawn rows picked from one product, or gathered rows
    (N > FULL_PRODUCT_ROWS x (1 + K)): the same scores, <anchor, row> / nce_t."""
    from mmdistill.methods.crd import FULL_PRODUCT_ROWS, bank_scores

    g = torch.Generator().manual_seed(0)
    anchor, bank = torch.randn(4, 3, generator=g), torch.randn(100, 3, generator=g)
    for k in (120, 5, 100 // FULL_PRODUCT_ROWS - 2):
        idx = torch.randint(100, (4, 1 + k), generator=g)
        scores = bank_scores(torch.stack([anchor, -anchor]), (bank, bank), idx[:, 0], idx[:, 1:], 0.5)
        negative = scores.negative if scores.counts is None else scores.negative.gather(2, idx[:, 1:].expand(2, 4, k))
        if scores.counts is not None:
            torch.testing.assert_close(scores.counts.sum(1), torch.full((4,), float(k)))
        for side, sign in ((0, 1.0), (1, -1.0)):
            want = torch.log(critic(sign * anchor, bank[idx], 0.5))
            torch.testing.assert_close(torch.cat([scores.positive[side].unsqueeze(1), negative[side]], 1), want)


def test_rkd_angles_from_the_gram_matrix_equal_the_difference_vector_form():
    from mmdistill.methods.rkd import _angles

    f = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    e = torch.nn.functional.normalize(f.unsqueeze(0) - f.unsqueeze(1), p=2, dim=2)  # the authors' code
    torch.testing.assert_close(_angles(f), torch.bmm(e, e.transpose(1, 2)).flatten())


def test_rkd_gradients_are_finite():
    """The diagonal (an example with itself) has zero distance: its sqrt must not make NaN gradients."""
    from mmdistill.methods.rkd import rkd_terms

    hs = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    d, a = rkd_terms(hs, torch.randn(6, 9, generator=torch.Generator().manual_seed(3)))
    (25 * d + 50 * a).backward()
    assert torch.isfinite(hs.grad).all() and hs.grad.abs().sum() > 0
