"""RKD's blocked angle term and CRD's batched scoring give the losses and gradients of the direct computations
they replaced (kept here as reference functions), to float rounding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mmdistill.batch import INDEX, LABEL
from mmdistill.methods import crd, rkd
from mmdistill.methods.base import StudentOutputs, TeacherOutputs


def reference_angles(f, eps=1e-12):
    """RKD's angles as first implemented: the whole (B, B, B) tensor from the Gram matrix."""
    g = f @ f.T
    sq = g.diagonal()
    dot = g.unsqueeze(0) - g.unsqueeze(2) - g.unsqueeze(1) + sq.view(-1, 1, 1)
    norm = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * g).clamp(min=eps).sqrt()
    off = 1 - torch.eye(len(f), dtype=f.dtype, device=f.device)
    inv = off / norm
    return (dot * inv.unsqueeze(2) * inv.unsqueeze(1)).flatten()


def reference_normalised_distance(f):
    """RKD's distances as first implemented: from the features, over the mean of the selected non-zero entries."""
    sq = f.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * f @ f.T).clamp(min=1e-12).sqrt()
    d = d * (1 - torch.eye(len(f), dtype=f.dtype))
    return d / d[d > 0].mean()


def reference_rkd_terms(hs, ht):
    fs, ft = hs.flatten(1), ht.flatten(1)
    with torch.no_grad():
        d_t, a_t = reference_normalised_distance(ft), reference_angles(ft)
    return F.smooth_l1_loss(reference_normalised_distance(fs), d_t), F.smooth_l1_loss(reference_angles(fs), a_t)


def features(b, d, seed, collinear=False):
    g = torch.Generator().manual_seed(seed)
    if collinear:  # angles of +-1: against random teacher angles some |A^S - A^T| > 1 (huber's linear part)
        return torch.arange(1.0, b + 1, dtype=torch.float64).unsqueeze(1) * torch.randn(1, d, generator=g).double()
    return torch.randn(b, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("b,collinear", [(2, False), (5, False), (37, False), (64, False), (9, True)])
def test_rkd_terms_and_gradients_equal_the_full_angle_tensor(b, collinear, monkeypatch):
    monkeypatch.setitem(rkd.ANGLES_PER_BLOCK, "cpu", 3 * b * b)  # several blocks, the last one short
    hs = features(b, 7, 0, collinear).reshape(b, 7, 1).requires_grad_(True)
    ht = features(b, 11, 1).reshape(b, 11, 1)
    got, want = rkd.rkd_terms(hs, ht), reference_rkd_terms(hs, ht)
    if collinear:
        assert (reference_angles(hs.detach().flatten(1)) - reference_angles(ht.flatten(1))).abs().max() > 1
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-15)
    for g, w in zip(got, want):
        (grad_got,) = torch.autograd.grad(g, hs, retain_graph=True)
        (grad_want,) = torch.autograd.grad(w, hs, retain_graph=True)
        torch.testing.assert_close(grad_got, grad_want, rtol=1e-10, atol=1e-14)


def test_rkd_angle_term_in_float32_matches_to_float_rounding():
    hs = torch.randn(128, 64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    ht = torch.randn(128, 96, generator=torch.Generator().manual_seed(5))
    got, want = rkd.angle_loss(hs, ht), reference_rkd_terms(hs, ht)[1]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(torch.autograd.grad(got, hs)[0], torch.autograd.grad(want, hs)[0], rtol=1e-4, atol=1e-9)


def test_rkd_angle_term_without_gradient_is_the_same_value():
    hs, ht = features(20, 5, 6), features(20, 5, 7)
    with torch.no_grad():
        value = rkd.angle_loss(hs.requires_grad_(True), ht)
    assert not value.requires_grad
    torch.testing.assert_close(value, reference_rkd_terms(hs.detach(), ht)[1], rtol=1e-12, atol=0)


class LargestTensor(TorchDispatchMode):
    """The most elements of any tensor an operator returns while active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_rkd_angle_term_never_builds_the_b_cubed_tensor(monkeypatch):
    """At most one block of vertices' angles at a time, in the forward and the backward pass."""
    b = 48
    monkeypatch.setitem(rkd.ANGLES_PER_BLOCK, "cpu", 4 * b * b)
    hs, ht = torch.randn(b, 8, requires_grad=True), torch.randn(b, 8)
    with LargestTensor() as seen:
        rkd.rkd_terms(hs, ht)[1].backward()
    assert seen.largest == 4 * b * b < b**3
    with LargestTensor() as seen:
        reference_rkd_terms(hs, ht)[1].backward()
    assert seen.largest == b**3  # what it replaced


class Rows:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def reference_bank_critic(anchor, bank, idx, nce_t):
    """CRD's critic as first implemented: ``exp(<anchor, bank[idx]> / nce_t)``, one matrix per term."""
    if len(bank) <= 4 * idx.shape[1]:
        return torch.exp((anchor @ bank.T.to(anchor.dtype, copy=True)).gather(1, idx) / nce_t)
    return crd.critic(anchor, bank[idx].to(anchor.dtype), nce_t)


def reference_crd_terms(method, batch, hs, ht):
    """``crd_s``, ``crd_t`` and the two Z as ``ContrastiveRD.losses`` first computed them (exp, divide, log)."""
    p = method.params
    v_s = F.normalize(method.embed_s(hs.flatten(1)), dim=1)
    v_t = F.normalize(method.embed_t(ht.flatten(1)), dim=1)
    if len(method.bank_s) > 0:
        rows, bank_s, bank_t = batch[INDEX], method.bank_s, method.bank_t
    else:
        rows = torch.arange(len(v_s))
        bank_s, bank_t = v_s.detach(), v_t.detach()
    n = len(bank_s)
    negatives = torch.randint(n, (len(rows), p.nce_k), generator=method.generator(rows.device))
    idx = torch.cat([rows.unsqueeze(1), negatives], 1)
    scores_s = reference_bank_critic(v_s, bank_t, idx, p.nce_t)
    scores_t = reference_bank_critic(v_t, bank_s, idx, p.nce_t)
    z_s = method.z_s if method.z_s >= 0 else scores_s.detach().mean() * n
    z_t = method.z_t if method.z_t >= 0 else scores_t.detach().mean() * n
    return crd.nce_loss(scores_s / z_s, n), crd.nce_loss(scores_t / z_t, n), z_s, z_t


def crd_method(rows, k, dtype, prepared=True):
    method = crd.ContrastiveRD(
        crd.ContrastiveRD.Params(student_layer="s", teacher_layer="t", feat_dim=4, nce_k=k, nce_t=0.3)
    )
    method.sample_features = lambda batch, s, t: (torch.zeros(1, 2, 3), torch.zeros(1, 5))
    torch.manual_seed(0)
    method.setup({}, nn.Identity(), nn.Identity())
    if prepared:
        method.prepare(Rows(rows), None, torch.device("cpu"))
    return method.to(dtype).train()


@pytest.mark.parametrize(
    "rows,k,prepared",
    [
        (6, 10, True),  # no more bank rows than negatives: every row scored, drawn rows counted
        (40, 7, True),  # more rows: the drawn rows' scores picked from the product
        (400, 3, True),  # more than FULL_PRODUCT_ROWS x (1 + K) rows: the drawn rows only
        (None, 3, False),  # before prepare: the batch is the bank
        (None, 9, False),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_crd_terms_z_and_gradients_equal_the_direct_computation(rows, k, prepared, dtype):
    method, b = crd_method(rows, k, dtype, prepared), 5
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    g = torch.Generator().manual_seed(1)
    for step in (1, 2):  # Z from the first batch, then fixed
        hs = torch.randn(b, 2, 3, generator=g, dtype=dtype, requires_grad=True)
        ht = torch.randn(b, 5, generator=g, dtype=dtype, requires_grad=True)
        batch = {LABEL: torch.zeros(b, dtype=torch.long), INDEX: torch.randperm(rows or b, generator=g)[:b]}
        state = method.generator("cpu").get_state()
        want = reference_crd_terms(method, batch, hs, ht)
        method.generator("cpu").set_state(state)
        out = method.losses(
            batch, StudentOutputs(torch.zeros(b, 3, dtype=dtype), {"s": hs}), TeacherOutputs(None, {"t": ht})
        )
        got = (out["crd_s"], out["crd_t"], method.step_update.z_s, method.step_update.z_t)
        for g_value, w_value in zip(got, want):
            torch.testing.assert_close(g_value, w_value.to(g_value.dtype), **tol)
        params = [hs, ht, *method.embed_s.parameters(), *method.embed_t.parameters()]
        grads_got = torch.autograd.grad(out["crd_s"] + 2 * out["crd_t"], params)
        grads_want = torch.autograd.grad(want[0] + 2 * want[1], params)
        for g_grad, w_grad in zip(grads_got, grads_want):
            torch.testing.assert_close(g_grad, w_grad, **tol)
        method.after_step(step, epoch=1)


def test_rkd_angle_term_keeps_its_digits_near_a_perfect_student():
    """A student whose angles are the teacher's to 1e-3 (an orthogonal map of its features plus noise): the loss is
    about 1e-9; summed from the closed form's totals (sums of B^3 / 4 terms of order 1) it lost every digit in
    float32, so the value is summed angle by angle and the gradient's closed form in float64."""
    g = torch.Generator().manual_seed(8)
    ft = torch.randn(64, 48, generator=g, dtype=torch.float64)
    rotation = torch.linalg.qr(torch.randn(48, 48, generator=g, dtype=torch.float64))[0]
    fs = ft @ rotation + 1e-3 * torch.randn(64, 48, generator=g, dtype=torch.float64)
    want = reference_rkd_terms(fs.requires_grad_(True), ft)[1]
    (grad_want,) = torch.autograd.grad(want, fs)
    hs = fs.detach().float().requires_grad_(True)
    got = rkd.angle_loss(hs, ft.float())
    (grad_got,) = torch.autograd.grad(got, hs)
    assert 0 < want.item() < 1e-7
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=0)
    torch.testing.assert_close(grad_got.double(), grad_want, rtol=1e-3, atol=1e-3 * grad_want.abs().max().item())


@pytest.mark.parametrize("distance", [3e-2, 1e-3, 1e-4, 3e-5])
def test_rkd_angle_term_with_a_near_duplicate_example(distance):
    """An example nearer than 1% of its length to another (a near-duplicate input, collapsed features) is made angle by
    angle: in the closed form its terms grow as (length / distance)^4 and cancel, which float64 cannot hold."""
    g = torch.Generator().manual_seed(9)
    fs = torch.randn(16, 8, generator=g, dtype=torch.float64)
    fs[3] = fs[7] + distance * fs[7].norm() * torch.randn(8, generator=g, dtype=torch.float64) / 8**0.5
    ft = torch.randn(16, 8, generator=g, dtype=torch.float64)
    fs.requires_grad_(True)
    got, want = rkd.angle_loss(fs, ft), reference_rkd_terms(fs, ft)[1]
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)
    (grad_got,) = torch.autograd.grad(got, fs)
    (grad_want,) = torch.autograd.grad(want, fs)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-6, atol=1e-9 * grad_want.abs().max().item())
    assert rkd.fragile_vertices(rkd._gram(fs), rkd._gram(ft)).nonzero().flatten().tolist() == (
        [] if distance > 1e-2 else [3, 7]
    )


def test_rkd_angle_term_in_float32_with_an_example_near_another():
    """Float32 features, two examples 3% of their length apart (not near enough to be made angle by angle): the
    closed form's sums for them cancel by about (length / distance)^4, so it is summed in float64; in float32 its
    gradient was 7% off (against the direct computation on the same rounded features)."""
    g = torch.Generator().manual_seed(9)
    fs = torch.randn(16, 8, generator=g, dtype=torch.float64)
    fs[3] = fs[7] + 3e-2 * fs[7].norm() * torch.randn(8, generator=g, dtype=torch.float64) / 8**0.5
    fs, ft = fs.float(), torch.randn(16, 8, generator=g).float()
    assert not rkd.fragile_vertices(rkd._gram(fs), rkd._gram(ft)).any()
    want_fs = fs.double().requires_grad_(True)
    want = reference_rkd_terms(want_fs, ft.double())[1]
    (grad_want,) = torch.autograd.grad(want, want_fs)
    got_fs = fs.clone().requires_grad_(True)
    (grad_got,) = torch.autograd.grad(rkd.angle_loss(got_fs, ft), got_fs)
    assert ((grad_got.double() - grad_want).norm() / grad_want.norm()) < 1e-3
