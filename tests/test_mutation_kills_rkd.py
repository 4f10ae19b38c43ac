"""RKD's closed-form angle term at its edges: duplicate rows, squared distances at the ``eps`` threshold, an ``eps``
of the caller's, mixed and low-precision dtypes, and which blocks of vertices it makes (once each, and again only
those that hold an angle difference beyond 1, with a gradient only when one is wanted). Values and gradients are
checked against the direct B^3 computation from the Gram matrix."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmdistill.methods import rkd
from tests.test_perf_rkd_crd_losses import reference_rkd_terms


def reference_angles_from_gram(g, eps=rkd.ANGLE_EPS):
    """All B^3 angles ``<e_ab, e_ac>`` from a Gram matrix, ``e_ab = (f_b - f_a) / ||f_b - f_a||`` taken as 0 where
    ``||f_b - f_a||^2 < eps`` (an example with itself, a duplicate)."""
    sq = g.diagonal()
    dot = g.unsqueeze(0) - g.unsqueeze(2) - g.unsqueeze(1) + sq.view(-1, 1, 1)
    q = sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * g
    inv = (q >= eps) / q.clamp(min=eps).sqrt() * (1 - torch.eye(len(g), dtype=g.dtype))
    return dot * inv.unsqueeze(2) * inv.unsqueeze(1)


def reference_angle_term(fs, ft, eps=rkd.ANGLE_EPS):
    """RKD-A as the mean huber over all B^3 angle differences; each side's Gram matrix in its own dtype (made
    symmetric: a float32 product need not be), then both in the wider one."""
    dtype = torch.promote_types(fs.dtype, ft.dtype)
    gs, gt = ((f @ f.T + (f @ f.T).T).to(dtype) / 2 for f in (fs, ft))
    return F.smooth_l1_loss(reference_angles_from_gram(gs, eps), reference_angles_from_gram(gt, eps).detach())


def assert_value_and_gradient(fs, ft, eps=rkd.ANGLE_EPS, rtol=1e-10):
    fs = fs.detach().requires_grad_(True)
    got, want = rkd.angle_loss(fs, ft, eps), reference_angle_term(fs, ft, eps)
    torch.testing.assert_close(got, want, rtol=rtol, atol=0)
    (grad_got,) = torch.autograd.grad(got, fs)
    (grad_want,) = torch.autograd.grad(want, fs)
    torch.testing.assert_close(grad_got, grad_want, rtol=rtol, atol=rtol * grad_want.abs().max().item())


def random_features(b, d, seed, dtype=torch.float64):
    return torch.randn(b, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def collinear(values):
    """1-D features: every student angle is -1, 0 or 1, so against a 2-D teacher some differences pass 1."""
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def nearly_collinear(values, seed=0):
    """``values`` on a line plus a small offset across it: angles near +-1, some differences beyond 1 against a
    random teacher, and a gradient (a 1-D student's angles are constant)."""
    across = 0.1 * torch.rand(len(values), 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.cat([collinear(values), across], 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("side", ["student", "teacher"])
def test_duplicate_rows_give_zero_angles_not_a_rounding_blow_up(dtype, side):
    """Two examples with the same features (the same input twice, a missing modality's constant features): their
    difference has no direction, so their angles are 0 like an example's with itself."""
    fs, ft = random_features(8, 5, 0, dtype), random_features(8, 6, 1, dtype)
    duplicated = fs if side == "student" else ft
    duplicated[3] = duplicated[5] = duplicated[1]
    assert_value_and_gradient(fs, ft, rtol=1e-10 if dtype == torch.float64 else 1e-5)
    d, a = rkd.rkd_terms(fs, ft)
    assert 0 < a.item() < 1 and 0 < d.item() < 1


@pytest.mark.parametrize("k_below,k_above", [(2, 5), (4, 5)])
def test_the_eps_threshold_is_on_the_features_own_squared_distances(k_below, k_above):
    """Rows 2^-21 apart on integer offsets (exact squared distances k * 2^-42; eps = 1e-12 = 4.4 * 2^-42): the pair
    at k_below is a duplicate (angles 0), the pair at k_above is not; the rest of the batch is at the same scale."""
    unit = 2.0**-21
    offsets = {2: (1.0, 1.0), 4: (2.0, 0.0), 5: (1.0, 2.0)}
    base = torch.tensor([[0.0, 0.0], [7.0, -3.0], [-4.0, 9.0], [11.0, 5.0]], dtype=torch.float64)
    rows = [base[0], base[0] + torch.tensor(offsets[k_below]), base[1], base[1] + torch.tensor(offsets[k_above])]
    fs = unit * torch.cat([torch.stack(rows), base[2:]])
    q = torch.cdist(fs, fs).square() / unit**2
    assert round(q[0, 1].item()) == k_below and round(q[2, 3].item()) == k_above
    ft = random_features(6, 3, 2)
    assert_value_and_gradient(fs, ft)
    assert (reference_angles_from_gram(fs @ fs.T)[0, 1] == 0).all()
    assert (reference_angles_from_gram(fs @ fs.T)[2, 3] != 0).any()


def test_a_squared_distance_of_exactly_eps_keeps_its_gradient():
    """``||f_1 - f_0||^2 = (1e-6)^2 = 1e-12 = eps`` exactly: not clamped, so its gradient flows (as torch's clamp
    at its bound), in the squared part and in huber's excess over the differences beyond 1."""
    fs = 1e-6 * torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.4], [-2.0, 0.3], [5.0, -0.2]], dtype=torch.float64)
    assert (fs[1] - fs[0]).square().sum().item() == rkd.ANGLE_EPS
    ft = random_features(5, 2, 3)
    r = reference_angles_from_gram(fs @ fs.T) - reference_angles_from_gram(ft @ ft.T)
    assert r.abs().max() > 1
    assert_value_and_gradient(fs, ft)


def test_an_eps_of_the_callers_reaches_both_terms_and_both_sides():
    """With eps = 1: rows of either side closer than 1 count as duplicates, in the squared part and in huber's
    excess over the differences beyond 1."""
    fs = nearly_collinear([0.0, 0.5, 2.0, 3.5, 6.0, -3.0])  # rows 0 and 1 closer than 1
    ft = 2 * random_features(6, 2, 4)
    ft[3] = ft[2] + torch.tensor([0.3, -0.4], dtype=torch.float64)  # rows 2 and 3 closer than 1
    r = reference_angles_from_gram(fs @ fs.T, 1.0) - reference_angles_from_gram(ft @ ft.T, 1.0)
    assert r.abs().max() > 1
    assert_value_and_gradient(fs, ft, eps=1.0)
    assert abs(rkd.angle_loss(fs, ft).item() - rkd.angle_loss(fs, ft, 1.0).item()) > 1e-3  # eps matters here


def test_pairwise_distance_keeps_the_features_dtype():
    f = random_features(5, 3, 5).to(torch.bfloat16)
    d = rkd.pairwise_distance(f)
    assert d.dtype == torch.bfloat16
    assert (d.diagonal() == 0).all() and (d.fill_diagonal_(1) > 0).all()


def test_low_precision_features_give_float32_terms():
    """bfloat16 features: the Gram matrix and both terms are float32, close to the float32 computation."""
    fs, ft = random_features(6, 4, 6).to(torch.bfloat16), random_features(6, 5, 7).to(torch.bfloat16)
    terms = rkd.rkd_terms(fs, ft)
    assert [t.dtype for t in terms] == [torch.float32, torch.float32]
    for got, want in zip(terms, reference_rkd_terms(fs.float(), ft.float())):
        torch.testing.assert_close(got, want, rtol=0.05, atol=1e-3)


def test_a_float32_student_against_a_float64_teacher_is_computed_in_float64():
    fs, ft = random_features(7, 4, 8, torch.float32), random_features(7, 5, 9)
    got = rkd.angle_loss(fs, ft)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, reference_angle_term(fs, ft), rtol=1e-10, atol=0)


def test_a_float32_teacher_is_promoted_to_the_float64_students_dtype():
    """Huber's excess from the teacher's float32 Gram matrix taken to float64 (not its inverse lengths in float32)."""
    fs, ft = nearly_collinear([0.0, 1.0, 2.5, -1.5, 4.0, -3.0, 0.5]), random_features(7, 3, 10, torch.float32)
    r = reference_angles_from_gram(fs @ fs.T) - reference_angles_from_gram((ft @ ft.T).double())
    assert r.abs().max() > 1
    assert_value_and_gradient(fs, ft, rtol=1e-12)


def count_calls(monkeypatch, name):
    calls = []
    original = getattr(rkd, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(rkd, name, counted)
    return calls


def blocks_beyond(fs, ft, block):
    r = (reference_angles_from_gram(fs @ fs.T) - reference_angles_from_gram(ft @ ft.T)).abs() > 1
    return sum(bool(r[a : a + block].any()) for a in range(0, len(fs), block))


@pytest.mark.parametrize("per_vertex", [1, 2, 3])
@pytest.mark.parametrize("case", ["close", "beyond"])
def test_each_block_is_made_once_and_again_only_when_it_holds_a_difference_beyond_one(per_vertex, case, monkeypatch):
    """ANGLES_PER_BLOCK angles at once: blocks of ANGLES_PER_BLOCK // B^2 vertices (at least 1). The first pass makes
    each block once; only those holding an |A^S - A^T| > 1 are made again, and the excess's gradient is built only
    from them."""
    b = 7
    monkeypatch.setitem(rkd.ANGLES_PER_BLOCK, "cpu", per_vertex * b * b)
    ft = random_features(b, 4, 11)
    if case == "close":
        fs = ft + 0.01 * random_features(b, 4, 12)
    else:
        fs = nearly_collinear([0.0, 1.0, 2.5, -1.5, 4.0, -3.0, 0.5])
    beyond = blocks_beyond(fs, ft, per_vertex)
    assert (beyond == 0) == (case == "close")
    made, gradients = count_calls(monkeypatch, "_block_difference"), count_calls(monkeypatch, "_angle_gradient")
    loss = rkd.angle_loss(fs.requires_grad_(True), ft)
    assert len(made) == math.ceil(b / per_vertex) + beyond
    assert len(gradients) == (beyond > 0)
    torch.testing.assert_close(loss, reference_angle_term(fs, ft), rtol=1e-10, atol=0)


@pytest.mark.parametrize("swap", [False, True])
def test_a_difference_of_exactly_one_is_not_beyond(swap, monkeypatch):
    """Student 0, 1, 2 on a line and teacher (0, 0), (1, 0), (0, 2): at vertex 0 the student's angle between 1 and 2
    is 1, the teacher's 0, exactly (dyadic Gram matrices), so vertex 0's differences reach 1 (-1 swapped) and no
    further: its block (one vertex each) is made once, with no excess."""
    monkeypatch.setitem(rkd.ANGLES_PER_BLOCK, "cpu", 9)
    fs, ft = collinear([0.0, 1.0, 2.0]), torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    if swap:
        fs, ft = ft, fs
    r0 = reference_angles_from_gram(fs @ fs.T)[0] - reference_angles_from_gram(ft @ ft.T)[0]
    assert r0.abs().max() == 1
    made = count_calls(monkeypatch, "_block_difference")
    torch.testing.assert_close(rkd.angle_loss(fs, ft), reference_angle_term(fs, ft), rtol=1e-12, atol=0)
    assert len(made) == 3 + blocks_beyond(fs, ft, 1) < 6


@pytest.mark.parametrize("where", ["no_grad", "student_without_grad"])
def test_no_gradient_wanted_builds_no_excess_gradient(where, monkeypatch):
    fs, ft = nearly_collinear([0.0, 1.0, 2.5, -1.5, 4.0, -3.0, 0.5]), random_features(7, 3, 13)
    assert blocks_beyond(fs, ft, 7) == 1
    gradients = count_calls(monkeypatch, "_angle_gradient")
    if where == "no_grad":
        with torch.no_grad():
            loss = rkd.angle_loss(fs.requires_grad_(True), ft)
    else:
        loss = rkd.angle_loss(fs, ft)
    assert not loss.requires_grad and gradients == []
    torch.testing.assert_close(loss, reference_angle_term(fs.detach(), ft), rtol=1e-10, atol=0)
    rkd.angle_loss(fs.detach().requires_grad_(True), ft)
    assert gradients == ["_angle_gradient"]


def test_blocks_reuse_their_buffers_without_resizing(monkeypatch):
    """Blocks of 3 vertices of 10 (the last one short) are written into the two buffers made once per call: no
    output is resized (torch warns when one is) and the value is the direct computation's."""
    import warnings

    monkeypatch.setitem(rkd.ANGLES_PER_BLOCK, "cpu", 3 * 10 * 10)
    fs, ft = random_features(10, 4, 21), random_features(10, 5, 22)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_value_and_gradient(fs, ft)


def test_only_the_block_of_a_fragile_vertex_is_made_again(monkeypatch):
    """Rows 0 and 1 nearly the same (0.1% apart) and a teacher close to the student (no difference beyond 1): of four
    blocks of two vertices, the first alone is made again, angle by angle."""
    b = 8
    monkeypatch.setitem(rkd.ANGLES_PER_BLOCK, "cpu", 2 * b * b)
    fs = random_features(b, 4, 23)
    fs[1] = fs[0] * 1.001
    ft = fs + 1e-3 * random_features(b, 4, 24)
    assert rkd.fragile_vertices(rkd._gram(fs), rkd._gram(ft)).nonzero().flatten().tolist() == [0, 1]
    made = count_calls(monkeypatch, "_block_difference")
    assert_value_and_gradient(fs, ft, rtol=1e-8)
    assert len(made) == 4 + 1


@pytest.mark.parametrize(
    "rows, eps",
    [
        (
            [[1.0, 0.0], [1.01415, 0.0], [0.0, 1.0]],
            rkd.ANGLE_EPS,
        ),  # q between 1e-4 * 2|f_a|^2 and 1e-4 (|f_a|^2 + |f_b|^2)
        ([[1.0, 0.0], [1.0 + 2**-10, 0.0], [0.0, 1.0]], 2.0**-20),  # q exactly eps: a pair, not a duplicate
    ],
)
def test_fragile_vertices_measure_the_distance_against_both_lengths(rows, eps):
    f = torch.tensor(rows, dtype=torch.float64)
    g = f @ f.T
    assert rkd.fragile_vertices(g, g, eps).tolist() == [True, True, False]
