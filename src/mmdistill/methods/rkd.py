"""Relational knowledge distillation, RKD (Park, Kim, Lu, Cho; CVPR 2019).

On flattened features f (B, D) (student and teacher widths may differ):

* distance-wise: ``psi_D(i, j) = ||f_i - f_j||_2 / mu``, ``mu`` = mean of the non-zero distances in the batch;
  ``RKD-D = mean_{i,j} huber(psi_D^S(i, j), psi_D^T(i, j))``
* angle-wise: ``psi_A(i, j, k) = <e_ij, e_kj>``, ``e_ij = (f_i - f_j) / ||f_i - f_j||``;
  ``RKD-A = mean_{i,j,k} huber(psi_A^S, psi_A^T)``

``huber`` is the smooth L1 loss (delta 1), averaged over all pairs / triplets (the diagonal
included, as the authors' code). ``L = CE + dist_factor * RKD-D + angle_factor * RKD-A``
(paper: 25 and 50). Terms ``rkd_distance``, ``rkd_angle``. Works for any task (features only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..registry import METHODS
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Weight


def pairwise_distance(f: Tensor, eps: float = 1e-12) -> Tensor:
    sq = f.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * f @ f.T).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(f), dtype=f.dtype, device=f.device))


def _normalised_distance(f: Tensor) -> Tensor:
    d = pairwise_distance(f)
    return d / d[d > 0].mean()


def _angles(f: Tensor, eps: float = 1e-12) -> Tensor:
    """``A[a, b, c] = <e_ab, e_ac>``, ``e_ab = (f_b - f_a) / ||f_b - f_a||`` (0 when b = a), flattened.

    From the Gram matrix G = f f^T: ``<f_b - f_a, f_c - f_a> = G_bc - G_ab - G_ac + G_aa``, so the cost is
    O(B^2 D + B^3) instead of the O(B^3 D) of forming every difference vector (the authors' code).
    """
    g = f @ f.T
    sq = g.diagonal()
    dot = g.unsqueeze(0) - g.unsqueeze(2) - g.unsqueeze(1) + sq.view(-1, 1, 1)  # [a, b, c]
    norm = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * g).clamp(min=eps).sqrt()  # [a, b] = ||f_b - f_a|| (finite gradient)
    off = 1 - torch.eye(len(f), dtype=f.dtype, device=f.device)
    inv = off / norm  # the difference of an example with itself is the zero vector
    return (dot * inv.unsqueeze(2) * inv.unsqueeze(1)).flatten()


def rkd_terms(hs: Tensor, ht: Tensor) -> tuple[Tensor, Tensor]:
    """``(RKD-D, RKD-A)``; the teacher side carries no gradient."""
    fs, ft = hs.flatten(1), ht.flatten(1)
    with torch.no_grad():
        d_t, a_t = _normalised_distance(ft), _angles(ft)
    return F.smooth_l1_loss(_normalised_distance(fs), d_t), F.smooth_l1_loss(_angles(fs), a_t)


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
