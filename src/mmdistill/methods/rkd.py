"""Relational knowledge distillation, RKD (Park, Kim, Lu, Cho; CVPR 2019).

On flattened features f (B, D) (student and teacher widths may differ):

* distance-wise: ``psi_D(i, j) = ||f_i - f_j||_2 / mu``, ``mu`` = mean of the non-zero distances in the batch;
  ``RKD-D = mean_{i,j} huber(psi_D^S(i, j), psi_D^T(i, j))``
* angle-wise: ``psi_A(i, j, k) = <e_ij, e_kj>``, ``e_ij = (f_i - f_j) / ||f_i - f_j||`` (0 when
  ``||f_i - f_j||^2 < 1e-12``: an example with itself or a duplicate);
  ``RKD-A = mean_{i,j,k} huber(psi_A^S, psi_A^T)``

``huber`` is the smooth L1 loss (delta 1), averaged over all pairs / triplets (the diagonal
included, as the authors' code). ``L = CE + dist_factor * RKD-D + angle_factor * RKD-A``
(paper: 25 and 50). Terms ``rkd_distance``, ``rkd_angle``. Works for any task (features only).

Computation (the same loss, to float rounding; memory O(B^2)): both terms come from one Gram matrix per side. The
angle term (:class:`_HuberAngles`) is one pass over the B^3 angles a block of vertices at a time, for each vertex's
sum of squared differences and for the blocks that hold a difference beyond 1, which alone are made again for Huber's
linear part. Its gradient is that of ``r^2 / 2`` in closed form from B x B x B matrix products in float64
(:func:`_closed_form_gradient`) plus those blocks'. A vertex with a near-duplicate example (nearer than 1% of their
lengths) is left out of the closed form and made angle by angle in the pass instead (:func:`fragile_vertices`);
duplicates (closer than ``sqrt(eps)``) have no direction between them: their angles are 0.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..registry import METHODS
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Weight

ANGLE_EPS = 1e-12
ANGLES_PER_BLOCK = {"cpu": 1 << 18, "other": 1 << 24}  # angles made at once: 1 MiB of float32 on CPU (measured best)
# A vertex with another example nearer than 1% of their lengths (squared: 1e-4) is made angle by angle, not in the
# closed form, whose sums for it grow as (length / distance)^4 and cancel (see :func:`fragile_vertices`).
FRAGILE_SQUARED_DISTANCE = 1e-4


def pairwise_distance(f: Tensor, eps: float = 1e-12) -> Tensor:
    """``||f_a - f_b||`` of every pair of rows of ``f``, in its dtype (0 on the diagonal; :func:`_distances`)."""
    return _distances(f @ f.T, eps)


def _distances(g: Tensor, eps: float = 1e-12) -> Tensor:
    """``||f_a - f_b|| = sqrt(max(G_aa + G_bb - 2 G_ab, eps))`` from the Gram matrix G, 0 on the diagonal."""
    sq = g.diagonal()
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * g).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(g), dtype=g.dtype, device=g.device))


def _normalised_distance(g: Tensor, eps: float = 1e-12) -> Tensor:
    """``psi_D = ||f_a - f_b|| / mu`` from the Gram matrix G, mu the mean of the non-zero distances (a sum and a
    count: no selection of entries)."""
    d = _distances(g, eps)
    return d / (d.sum() / (d > 0).sum())


def _gram(f: Tensor) -> Tensor:
    """``F F^T`` made exactly symmetric, in float32 at least."""
    g = (f @ f.T).to(torch.promote_types(f.dtype, torch.float32))
    return (g + g.T) / 2


def _inverse_lengths(g: Tensor, eps: float = ANGLE_EPS) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """From the Gram matrix G: ``(sq, q, norm, u)`` with ``q[a, b] = ||f_b - f_a||^2``, ``norm = sqrt(max(q, eps))``
    (a finite gradient) and ``u = 1 / norm`` where ``q >= eps``, 0 elsewhere: on the diagonal and for duplicate rows
    (a zero difference has no direction; a 1 / sqrt(eps) there would swamp the closed form's sums in rounding)."""
    sq = g.diagonal()
    q = sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * g
    norm = q.clamp(min=eps).sqrt()
    u = (q >= eps) / norm
    u.fill_diagonal_(0)
    return sq, q, norm, u


def _rank_two_factors(g: Tensor, sq: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """For every vertex a, the factors of the rank-2 part of its angles (see :func:`_block_angles`): with
    ``p_a = u_a * (G_a - G_aa / 2)``, ``-[p_a, u_a]`` (B, B, 2) and ``[u_a; p_a]`` (B, 2, B)."""
    p = u * (g - sq.unsqueeze(1) / 2)
    return torch.stack([p, u], 2).neg_(), torch.stack([u, p], 1)


def _block_angles(g: Tensor, u: Tensor, factors: tuple[Tensor, Tensor], vertices: slice) -> tuple[Tensor, Tensor]:
    """``A[a, b, c] = <e_ab, e_ac>`` for the vertices a in ``vertices``, and ``u_ab u_ac``, each (k, B, B).

    ``<f_b - f_a, f_c - f_a> = G_bc - G_ab - G_ac + G_aa``, so with ``p = u_a * (G_a - G_aa / 2)``:
    ``A_a = diag(u_a) G diag(u_a) - p u_a^T - u_a p^T``, a product and one rank-2 update (no difference vectors:
    O(B^2) per vertex instead of the authors' O(B^2 D))."""
    ua = u[vertices]
    uu = ua.unsqueeze(2) * ua.unsqueeze(1)
    return torch.baddbmm(uu * g, factors[0][vertices], factors[1][vertices]), uu


def _angles(f: Tensor) -> Tensor:
    """All B^3 angles ``A[a, b, c] = <e_ab, e_ac>``, ``e_ab = (f_b - f_a) / ||f_b - f_a||`` (0 when f_b = f_a),
    flattened: the definition the angle term is computed from, for inspection (the term itself never builds it)."""
    g = f @ f.T
    sq, _, _, u = _inverse_lengths(g)
    return _block_angles(g, u, _rank_two_factors(g, sq, u), slice(None))[0].flatten()


def _angle_gradient(q: Tensor, norm: Tensor, u: Tensor, sums: dict[str, Tensor], eps: float) -> Tensor:
    """d(sum of c-weighted angles)/dG from the per-vertex sums of ``E = c * u_b u_c`` and ``H = c * A`` (c the
    derivative of the summed function at each angle; both symmetric in (b, c), so columns sum as rows do):
    A_a[b, c] = u_ab u_ac (G_bc - G_ab - G_ac + G_aa) gives dG_bc += sum_a E_a[b, c], dG_ab -= 2 (rows of E_a)[b],
    dG_aa += sum E_a, and through u = 1 / ||f_b - f_a||: d||f_b - f_a|| = -2 u_ab (rows of H_a)[b]."""
    grad = sums["E"] - 2 * sums["E_rows"]
    grad.diagonal().add_(sums["E_rows"].sum(1))
    dq = -u * sums["H_rows"] / norm * (q >= eps)  # sqrt(clamp(q, eps)): no gradient where clamped
    grad -= 2 * dq
    grad.diagonal().add_(dq.sum(1) + dq.sum(0))
    return grad


def _side(g: Tensor, eps: float, keep: Tensor) -> tuple[Tensor, ...]:
    """One side's ``(G, u, p, q, norm)`` (:func:`_inverse_lengths`, :func:`_rank_two_factors`), the rows of the
    vertices not in ``keep`` (B,) set to 0: their angles are left out of the closed form."""
    sq, q, norm, u = _inverse_lengths(g, eps)
    u = u * keep.to(u.dtype).unsqueeze(1)
    return g, u, u * (g - sq.unsqueeze(1) / 2), q, norm


def fragile_vertices(gs: Tensor, gt: Tensor, eps: float = ANGLE_EPS) -> Tensor:
    """(B,) bool: the vertices a with an example b (not a duplicate: ``q_ab >= eps``) nearer than
    ``||f_a - f_b||^2 < FRAGILE_SQUARED_DISTANCE (||f_a||^2 + ||f_b||^2)`` on either side. The closed form's terms for
    such a vertex are of order ``(length / distance)^4`` and cancel to angles in [-1, 1]: float64 would keep too few
    digits, so :class:`_HuberAngles` makes its angles one by one instead (as many digits as the Gram matrix has)."""
    fragile = torch.zeros(len(gs), dtype=torch.bool, device=gs.device)
    for g in (gs, gt):
        sq, q, _, _ = _inverse_lengths(g, eps)
        near = (q >= eps) & (q < FRAGILE_SQUARED_DISTANCE * (sq.unsqueeze(0) + sq.unsqueeze(1)))
        fragile |= near.fill_diagonal_(False).any(1)
    return fragile


def _closed_form_products(s: tuple[Tensor, ...], t: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The five B x B x B products that the gradient of ``sum_a ||A^S_a - A^T_a||^2`` reuses, from each side's
    ``(G, u, p)`` (:func:`_closed_form_gradient`)."""
    (g, u, p), (h, v, q) = s[:3], t[:3]
    return (u * u) @ (g * g), (u * p) @ g, (u * v) @ (g * h), (u * q) @ g, (v * p) @ h


def _inner_gradient(s: tuple[Tensor, ...], t: tuple[Tensor, ...], products: tuple[Tensor, ...], eps: float) -> Tensor:
    """``d/dG^S sum_a ||A^S_a - A^T_a||^2`` without the B^3 angles.

    With ``A_a = D_a G D_a - p_a u_a^T - u_a p_a^T``, ``D_a = diag(u_a)`` (:func:`_block_angles`) and G symmetric, the
    sum over (b, c) of the product of two sides' angles at vertex a is
    ``<A^X_a, A^Y_a> = w^T (G o H) w - 2 (u o q)^T G w - 2 (v o p)^T H w + 2 [(p.q)(u.v) + (p.v)(u.q)]``,
    ``w = u o v``, and the sum is ``<S, S> - 2 <S, T> + <T, T>``. Its gradient for the student's ``(G, u, p)`` is
    written out (the five ``products`` and seven more B x B x B products), then taken through
    ``p = u (G_a - G_aa / 2)``, ``u = 1 / sqrt(max(q, eps))`` off the diagonal and ``q_ab = G_aa + G_bb - 2 G_ab``
    to G."""
    (g, u, p, q_s, norm), (h, v, q) = s, t[:3]
    wk, xg, zl, yg, vh = products
    w, z, x, y, vp = u * u, u * v, u * p, u * q, v * p
    d_w, d_x, d_z = 2 * wk - 4 * xg, -4 * (w @ g), 4 * (yg + vh - zl)
    d_g = 2 * g * (w.T @ w) - 4 * (x.T @ w) + 4 * (y.T @ z) - 2 * h * (z.T @ z)
    pp, uu, pu = (p * p).sum(1, True), w.sum(1, True), x.sum(1, True)
    pq, uv, pv, uq = (p * q).sum(1, True), z.sum(1, True), vp.sum(1, True), y.sum(1, True)
    d_u = 2 * u * d_w + p * d_x + v * d_z + 4 * q * (z @ g) + 4 * (u * pp + pu * p - v * pq - q * pv)
    d_p = u * d_x + 4 * v * (z @ h) + 4 * (p * uu + pu * u - q * uv - v * uq)
    sq = g.diagonal()
    d_u += d_p * (g - sq.unsqueeze(1) / 2)
    d_g += d_p * u
    d_q = -d_u * u * u / (2 * norm) * (q_s >= eps)  # sqrt(clamp(q, eps)): no gradient where clamped
    d_g -= 2 * d_q
    d_g.diagonal().add_(d_q.sum(0) + d_q.sum(1) - (d_p * u).sum(1) / 2)
    return d_g


def _closed_form_gradient(gs: Tensor, gt: Tensor, eps: float, keep: Tensor) -> Tensor:
    """``d/dG^S sum (A^S_abc - A^T_abc)^2 / 2`` over the vertices a in ``keep`` (:func:`_inner_gradient`), in float64
    (float32 on Apple's MPS, which has no float64): its sums cancel, by about (length / distance)^4 where two examples
    are near each other, which float32 does not hold (`test_rkd_angle_term_in_float32_with_an_example_near_another`)."""
    precise = torch.float32 if gs.device.type == "mps" else torch.float64  # MPS has no float64
    s, t = _side(gs.to(precise), eps, keep), _side(gt.to(precise), eps, keep)
    return (_inner_gradient(s, t, _closed_form_products(s, t), eps) / 2).to(gs.dtype)


def _difference_factors(sides: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The rank-2 factors of the student's and the teacher's angles (:func:`_rank_two_factors`) as one rank-4 pair
    whose product is the student's rank-2 part minus the teacher's."""
    (s0, s1), (t0, t1) = sides
    return torch.cat([s0, -t0], 2), torch.cat([s1, t1], 1)


def _block_difference(
    sides: tuple[Tensor, Tensor],
    u: tuple[Tensor, Tensor],
    factors: tuple[Tensor, Tensor],
    a: slice,
    buffers: tuple[Tensor, Tensor],
) -> Tensor:
    """``r = A^S - A^T`` for the vertices in ``a`` (k, B, B) in one pass: ``D_a G^S D_a - D'_a G^T D'_a`` and one
    rank-4 update (:func:`_difference_factors`), written into the first k rows of ``buffers`` (two (block, B, B)
    tensors, :func:`_block_buffers`: a fresh half-megabyte tensor per block would cost its page faults each time)."""
    (gs, gt), (us, ut) = sides, (u[0][a], u[1][a])
    r = torch.mul(us.unsqueeze(2), gs, out=buffers[0][: len(us)]).mul_(us.unsqueeze(1))
    teacher = torch.mul(ut.unsqueeze(2), gt, out=buffers[1][: len(ut)])
    return r.addcmul_(teacher, ut.unsqueeze(1), value=-1).baddbmm_(factors[0][a], factors[1][a])


_WORKSPACE = threading.local()  # per thread, on the CPU: the two block buffers of the last shape and dtype
GLIBC_THRESHOLD_BLOCK = 8 << 20  # bytes: freeing a block this large sets glibc's dynamic mmap threshold to it


def _block_buffers(g: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Two (block, B, B) buffers for :func:`_block_difference`; on the CPU kept between calls (per thread) while the
    shape and dtype stay the same (about 2 MiB at B = 128; elsewhere the device's caching allocator reuses memory).

    Why: the step's temporaries (these buffers, 1 MiB each at B = 128, and the closed form's float64 B x B matrices,
    128 KiB each) sit at glibc's allocation thresholds. In some processes the allocator handed their memory back to
    the system after every step and faulted it back in on the next (about 800 minor page faults a step: RKD 4.2-4.4x
    KD instead of 3.6-3.9x). Kept buffers, and one freed block of :data:`GLIBC_THRESHOLD_BLOCK` bytes, which raises
    glibc's dynamic mmap threshold to 8 MiB and its trim threshold to 16 MiB as any freed block of that size does,
    serve the step from memory the process holds (measured: ``docs/benchmarks.md``, RKD). Nothing of the buffers
    outlives a call: the forward pass keeps only sums."""
    if g.device.type != "cpu":
        return g.new_empty(block, len(g), len(g)), g.new_empty(block, len(g), len(g))
    key = (block, len(g), g.dtype)
    if getattr(_WORKSPACE, "key", None) != key:
        _WORKSPACE.key = key
        _WORKSPACE.buffers = (g.new_empty(block, len(g), len(g)), g.new_empty(block, len(g), len(g)))
        bytearray(GLIBC_THRESHOLD_BLOCK)  # allocated and freed at once: glibc maps it, and its free sets the threshold
    return _WORKSPACE.buffers


class _HuberAngles(torch.autograd.Function):
    """``sum_{a,b,c} huber(r_abc)``, ``r = A^S - A^T``, from the symmetric Gram matrices, block by block of vertices
    (never more than one block of the B^3 angles at once).

    A first pass makes each block's r (:func:`_block_difference`) for its sum of squares per vertex and its smallest
    and largest r. ``huber(r) = r^2 / 2`` for ``|r| <= 1``, so that sum is the loss except at the angles beyond 1 and
    at the ``fragile`` vertices (:func:`fragile_vertices`): only the blocks that hold one are made again, for
    ``huber(r) - r^2 / 2`` of the angles beyond 1 and ``huber(r)`` of each fragile vertex's angle (in place of its
    ``r^2 / 2``). With ``with_grad`` the gradient for ``gs`` is the closed form's for ``r^2 / 2`` of the other
    vertices (:func:`_closed_form_gradient`: B x B x B products, no angles) plus the blocks made again (their
    derivative at each angle: ``clamp(r, -1, 1) - r``, or ``clamp(r, -1, 1)`` at a fragile vertex), kept for
    backward."""

    @staticmethod
    def forward(ctx, gs: Tensor, gt: Tensor, block: int, with_grad: bool, eps: float, fragile: Tensor) -> Tensor:
        sq_s, q_s, norm_s, u_s = _inverse_lengths(gs, eps)
        sq_t, _, _, u_t = _inverse_lengths(gt, eps)
        factors_s = _rank_two_factors(gs, sq_s, u_s)
        factors = _difference_factors((factors_s, _rank_two_factors(gt, sq_t, u_t)))
        blocks = [slice(start, min(start + block, len(gs))) for start in range(0, len(gs), block)]
        buffers = _block_buffers(gs, block)
        extremes, norms = [], []
        for a in blocks:
            r = _block_difference((gs, gt), (u_s, u_t), factors, a, buffers)
            extremes.append(torch.stack(torch.aminmax(r)))
            norms.append(torch.linalg.vector_norm(r, dim=(1, 2)))
        low, high = torch.stack(extremes).unbind(1)
        beyond = (low < -1) | (high > 1)
        fragile_blocks = torch.zeros(len(blocks) * block, dtype=torch.bool, device=gs.device)
        fragile_blocks[: len(gs)] = fragile
        made = (beyond | fragile_blocks.view(len(blocks), block).any(1)).tolist()
        summed = (~fragile).to(gs.dtype)  # 1 where a vertex's r^2 / 2 is the loss but for its angles beyond 1
        total = (torch.cat(norms).square() * summed).sum() / 2
        sums = {k: torch.zeros_like(gs) for k in ("E", "E_rows", "H_rows")}
        for a in (a for a, out in zip(blocks, made) if out):
            r = _block_difference((gs, gt), (u_s, u_t), factors, a, buffers)
            h = r.clamp(-1, 1)
            total += (
                torch.dot(h.view(-1), (r - h / 2).view(-1))
                - torch.dot((summed[a].view(-1, 1, 1) * r).view(-1), r.view(-1)) / 2
            )
            if with_grad:
                c = h.sub_(r.mul_(summed[a].view(-1, 1, 1)))
                a_s, uu = _block_angles(gs, u_s, factors_s, a)
                e = uu.mul_(c)
                sums["E"] += e.sum(0)
                sums["E_rows"][a] = e.sum(2)
                sums["H_rows"][a] = a_s.mul_(c).sum(2)
        if with_grad:  # the closed form's part is made in backward, once this pass's memory is free again
            made_grad = _angle_gradient(q_s, norm_s, u_s, sums, eps) if any(made) else torch.zeros_like(gs)
            ctx.save_for_backward(gs, gt, fragile, made_grad)
            ctx.eps = eps
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        gs, gt, fragile, made_grad = ctx.saved_tensors
        grad = _closed_form_gradient(gs, gt, ctx.eps, ~fragile) + made_grad
        return grad * grad_output, None, None, None, None, None


def angle_loss(fs: Tensor, ft: Tensor, eps: float = ANGLE_EPS) -> Tensor:
    """RKD-A of student features ``fs`` (B, D_s) against teacher features ``ft`` (B, D_t), flattened; the teacher side
    carries no gradient (:func:`angle_term` of their Gram matrices)."""
    with torch.no_grad():
        gt = _gram(ft)
    return angle_term(_gram(fs), gt, eps)


def angle_term(gs: Tensor, gt: Tensor, eps: float = ANGLE_EPS) -> Tensor:
    """RKD-A, the mean of ``huber(A^S_abc - A^T_abc)`` over the B^3 angles, from the symmetric Gram matrices of the
    student (``gs``) and the teacher (``gt``) (:class:`_HuberAngles`; :func:`fragile_vertices`)."""
    dtype = torch.promote_types(gs.dtype, gt.dtype)
    gs, gt = gs.to(dtype), gt.to(dtype)
    per_block = ANGLES_PER_BLOCK["cpu" if gs.device.type == "cpu" else "other"]
    block = max(1, min(len(gs), per_block // max(1, len(gs)) ** 2))
    with_grad = torch.is_grad_enabled() and gs.requires_grad
    with torch.no_grad():
        fragile = fragile_vertices(gs, gt, eps)
    return _HuberAngles.apply(gs, gt, block, with_grad, eps, fragile) / len(gs) ** 3


def rkd_terms(hs: Tensor, ht: Tensor) -> tuple[Tensor, Tensor]:
    """``(RKD-D, RKD-A)``, both from each side's one Gram matrix; the teacher side carries no gradient."""
    gs = _gram(hs.flatten(1))
    with torch.no_grad():
        gt = _gram(ht.flatten(1))
        d_t = _normalised_distance(gt)
    return F.smooth_l1_loss(_normalised_distance(gs), d_t), angle_term(gs, gt)


class RKDParams(LayerPairParams):
    dist_factor: Weight = Field(25.0, description="weight of the distance term")
    angle_factor: Weight = Field(50.0, description="weight of the angle term")


@METHODS.register("rkd")
class RelationalKD(LayerPairMethod):
    Params = RKDParams
    params: RKDParams

    def feature_terms(self, hs: Tensor, ht: Tensor) -> dict[str, Tensor]:
        d, a = rkd_terms(hs, ht)
        return {"rkd_distance": d, "rkd_angle": a}

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        return {"ce": p.ce_weight, "rkd_distance": p.dist_factor, "rkd_angle": p.angle_factor}
