"""Relational knowledge distillation, RKD (Park, Kim, Lu, Cho; CVPR 2019).

On flattened features f (B, D) (student and teacher widths may differ):

* distance-wise: ``psi_D(i, j) = ||f_i - f_j||_2 / mu``, ``mu`` = mean of the non-zero distances in the batch;
  ``RKD-D = mean_{i,j} huber(psi_D^S(i, j), psi_D^T(i, j))``
* angle-wise: ``psi_A(i, j, k) = <e_ij, e_kj>``, ``e_ij = (f_i - f_j) / ||f_i - f_j||``;
  ``RKD-A = mean_{i,j,k} huber(psi_A^S, psi_A^T)``

``huber`` is the smooth L1 loss (delta 1), averaged over all pairs / triplets (the diagonal
included, as the authors' code). ``L = CE + dist_factor * RKD-D + angle_factor * RKD-A``
(paper: 25 and 50). Terms ``rkd_distance``, ``rkd_angle``. Works for any task (features only).

The angle term never holds the B^3 angles at once: they are made from the Gram matrix a block of vertices at a
time, and the term's gradient with respect to the student's Gram matrix is summed in the same pass
(:class:`_AngleLoss`), so its memory is O(B^2) and each block's work stays in the CPU's cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..registry import METHODS
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Weight

ANGLE_EPS = 1e-12
ANGLES_PER_BLOCK = {"cpu": 1 << 16, "other": 1 << 24}  # angles made at once: 256 KiB of float32 on CPU (in cache)


def pairwise_distance(f: Tensor, eps: float = 1e-12) -> Tensor:
    sq = f.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * f @ f.T).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(f), dtype=f.dtype, device=f.device))


def _normalised_distance(f: Tensor) -> Tensor:
    d = pairwise_distance(f)
    return d / d[d > 0].mean()


def _inverse_lengths(g: Tensor, eps: float = ANGLE_EPS) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """From the Gram matrix G: ``(sq, q, norm, u)`` with ``q[a, b] = ||f_b - f_a||^2``, ``norm = sqrt(max(q, eps))``
    (a finite gradient) and ``u = 1 / norm`` off the diagonal, 0 on it (the difference of an example with itself is
    the zero vector)."""
    sq = g.diagonal()
    q = sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * g
    norm = q.clamp(min=eps).sqrt()
    u = 1 / norm
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
    """All B^3 angles ``A[a, b, c] = <e_ab, e_ac>``, ``e_ab = (f_b - f_a) / ||f_b - f_a||`` (0 when b = a), flattened:
    the definition the angle term is computed from, for inspection (the term itself never builds it)."""
    g = f @ f.T
    sq, _, _, u = _inverse_lengths(g)
    return _block_angles(g, u, _rank_two_factors(g, sq, u), slice(None))[0].flatten()


def _angle_gradient(q: Tensor, norm: Tensor, u: Tensor, sums: dict[str, Tensor], eps: float) -> Tensor:
    """d(sum of huber terms)/dG from the per-vertex sums of ``E = c * u_b u_c`` and ``H = c * A`` (c = the huber
    derivative, clamp(A^S - A^T, -1, 1); both symmetric in (b, c), so columns sum as rows do):
    A_a[b, c] = u_ab u_ac (G_bc - G_ab - G_ac + G_aa) gives dG_bc += sum_a E_a[b, c], dG_ab -= 2 (rows of E_a)[b],
    dG_aa += sum E_a, and through u = 1 / ||f_b - f_a||: d||f_b - f_a|| = -2 u_ab (rows of H_a)[b]."""
    grad = sums["E"] - 2 * sums["E_rows"]
    grad.diagonal().add_(sums["E_rows"].sum(1))
    dq = -u * sums["H_rows"] / norm * (q >= eps)  # sqrt(clamp(q, eps)): no gradient where clamped
    grad -= 2 * dq
    grad.diagonal().add_(dq.sum(1) + dq.sum(0))
    return grad


class _AngleLoss(torch.autograd.Function):
    """RKD-A from the Gram matrices of student (``gs``) and teacher (``gt``), block by block of vertices; with
    ``with_grad`` the gradient for ``gs`` is summed in the same pass and kept for backward.

    Per block: ``r = A^S - A^T``, ``c = clamp(r, -1, 1)`` (huber's derivative) and ``huber(r) = c (r - c / 2)``, so
    the block's sum is two dot products. The angles are symmetric in (b, c) (G is made symmetric first), so a row sum
    stands for the column sum too."""

    @staticmethod
    def forward(ctx, gs: Tensor, gt: Tensor, block: int, with_grad: bool, eps: float) -> Tensor:
        n = len(gs)
        gs, gt = (gs + gs.T) / 2, (gt + gt.T) / 2
        sq_s, q_s, norm_s, u_s = _inverse_lengths(gs, eps)
        sq_t, _, _, u_t = _inverse_lengths(gt, eps)
        factors_s, factors_t = _rank_two_factors(gs, sq_s, u_s), _rank_two_factors(gt, sq_t, u_t)
        total = gs.new_zeros(())
        sums = {k: torch.zeros_like(gs) for k in ("E", "E_rows", "H_rows")} if with_grad else {}
        for start in range(0, n, block):
            a = slice(start, min(start + block, n))
            a_s, uu = _block_angles(gs, u_s, factors_s, a)
            r, _ = _block_angles(gt, u_t, factors_t, a)
            r = torch.sub(a_s, r, out=r).view(-1)
            c = r.clamp(-1, 1)
            total += torch.dot(c, r) - torch.dot(c, c) / 2
            if with_grad:
                c = c.view_as(a_s)
                e = uu.mul_(c)
                sums["E"] += e.sum(0)
                sums["E_rows"][a] = e.sum(2)
                sums["H_rows"][a] = a_s.mul_(c).sum(2)
        if with_grad:
            ctx.save_for_backward(_angle_gradient(q_s, norm_s, u_s, sums, eps) / n**3)
        return total / n**3

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None, None


def angle_loss(fs: Tensor, ft: Tensor, eps: float = ANGLE_EPS) -> Tensor:
    """RKD-A of student features ``fs`` (B, D_s) against teacher features ``ft`` (B, D_t), flattened; the teacher side
    carries no gradient. Computed in float32 at least, never holding more than one block of the B^3 angles."""
    dtype = torch.promote_types(torch.promote_types(fs.dtype, ft.dtype), torch.float32)
    gs = (fs @ fs.T).to(dtype)
    with torch.no_grad():
        gt = (ft @ ft.T).to(dtype)
    per_block = ANGLES_PER_BLOCK["cpu" if fs.device.type == "cpu" else "other"]
    block = max(1, per_block // max(1, len(fs)) ** 2)
    with_grad = torch.is_grad_enabled() and gs.requires_grad
    return _AngleLoss.apply(gs, gt, block, with_grad, eps)


def rkd_terms(hs: Tensor, ht: Tensor) -> tuple[Tensor, Tensor]:
    """``(RKD-D, RKD-A)``; the teacher side carries no gradient."""
    fs, ft = hs.flatten(1), ht.flatten(1)
    with torch.no_grad():
        d_t = _normalised_distance(ft)
    return F.smooth_l1_loss(_normalised_distance(fs), d_t), angle_loss(fs, ft)


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
