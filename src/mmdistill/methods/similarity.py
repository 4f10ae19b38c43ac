"""Similarity-preserving KD, SP (Tung & Mori, ICCV 2019, "Similarity-Preserving Knowledge Distillation").

With ``Q = reshape(A, (B, -1))`` of a layer's output, the batch similarity matrix is
``G = row_normalise(Q Q^T)`` (each row divided by its L2 norm), for student and teacher::

    SP = (1 / B^2) * || G_T - G_S ||_F^2

``L = CE + gamma * SP`` (paper: gamma = 3000 on CIFAR-10). Student and teacher shapes may differ
(only the B x B similarities are compared). Works for any task (features only).
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..registry import METHODS
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Weight


def batch_similarity(h: Tensor, p: int = 2) -> Tensor:
    q = h.flatten(1)
    return F.normalize(q @ q.T, p=p, dim=1)


def sp_loss(hs: Tensor, ht: Tensor, p: int = 2) -> Tensor:
    """``p``: the row norm (the paper's is 2; torchdistill 1.1.5's ``SPKDLoss`` calls ``normalize(G, 1)``, i.e. L1)."""
    b = hs.shape[0]
    return (batch_similarity(ht, p) - batch_similarity(hs, p)).pow(2).sum() / b**2


class SPParams(LayerPairParams):
    gamma: Weight = Field(3000.0, description="weight of the SP term")


@METHODS.register("sp")
class SimilarityPreservingKD(LayerPairMethod):
    Params = SPParams
    params: SPParams

    def feature_terms(self, hs: Tensor, ht: Tensor) -> dict[str, Tensor]:
        return {"sp": sp_loss(hs, ht)}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": self.params.ce_weight, "sp": self.params.gamma}
