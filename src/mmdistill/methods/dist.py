"""DIST: knowledge distillation from a stronger teacher (Huang, You, Wang, Qian, Xu; NeurIPS 2022).

Probabilities ``P = softmax(s / tau)``, ``Q = softmax(t / tau)`` (B, C). With the Pearson
correlation ``rho(u, v) = cov(u, v) / (std(u) std(v))`` and ``d_p(u, v) = 1 - rho(u, v)``::

    inter = tau^2 * mean_i d_p(P[i, :], Q[i, :])    (each example's class distribution: inter-class relation)
    intra = tau^2 * mean_j d_p(P[:, j], Q[:, j])    (each class across the batch: intra-class relation)
    L     = CE(y, s(x)) + beta * inter + gamma * intra

as the authors' code (and torchdistill's ``DISTLoss``); Pearson centres each vector and uses the
cosine of the centred vectors (eps 1e-8). Terms ``ce``, ``inter``, ``intra``; weights ``ce_weight``,
``beta``, ``gamma`` (paper: 1, 1, 1, tau = 1; 1, 2, 2 on detection-style stronger teachers).

Tasks: classification (single-label); for multi-label logits the softmax over classes does not
carry over (per-class sigmoids have no joint distribution to correlate).
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..batch import LABEL, Batch
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs
from .params import MethodParams, Temperature, Weight, needs_class_distribution


def pearson_distance(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 - rho`` along the last axis, one value per row."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return 1 - F.cosine_similarity(a, b, dim=-1, eps=eps)


def dist_terms(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """``(inter, intra)``, each scaled by ``tau^2``."""
    p, q = F.softmax(student_logits / tau, -1), F.softmax(teacher_logits / tau, -1)
    inter = pearson_distance(p, q).mean() * tau**2
    intra = pearson_distance(p.T, q.T).mean() * tau**2
    return inter, intra


class DISTParams(MethodParams):
    tau: Temperature = Field(1.0, description="temperature")
    beta: Weight = Field(1.0, description="weight of the inter-class relation term")
    gamma: Weight = Field(1.0, description="weight of the intra-class relation term")
    ce_weight: Weight = Field(1.0, description="weight of CE")


@METHODS.register("dist")
class DIST(Method):
    Params = DISTParams
    params: DISTParams
    task_needs = (needs_class_distribution("its Pearson terms compare class vectors across the batch"),)

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        inter, intra = dist_terms(student_out.logits, teacher_out.logits, self.params.tau)
        return {"ce": F.cross_entropy(student_out.logits, batch[LABEL]), "inter": inter, "intra": intra}

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        return {"ce": p.ce_weight, "inter": p.beta, "intra": p.gamma}
