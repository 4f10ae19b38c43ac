"""Probabilistic knowledge transfer, PKT (Passalis & Tefas, ECCV 2018,
"Learning Deep Representations with Probabilistic Knowledge Transfer").

Features are flattened to vectors and L2-normalised (``f / (||f|| + eps)``); the cosine kernel
``K_ij = (cos(f_i, f_j) + 1) / 2`` is turned into conditional probabilities
``p_{j|i} = K_ij / sum_j K_ij`` for student (p^S) and teacher (p^T); then::

    PKT = mean_{i,j} p^T_{j|i} * log((p^T_{j|i} + eps) / (p^S_{j|i} + eps)),   eps = 1e-7

(the mean over all B^2 pairs, as the authors' code). ``L = CE + beta * PKT``. Student and teacher
dimensions may differ. Works for any task (it uses features only); the batch must hold >= 2 examples.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from ..registry import METHODS
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Weight


def _conditional(f: Tensor, eps: float) -> Tensor:
    f = f.flatten(1)
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    k = (f @ f.T + 1) / 2
    return k / k.sum(1, keepdim=True)


def pkt_loss(hs: Tensor, ht: Tensor, eps: float = 1e-7) -> Tensor:
    p_s, p_t = _conditional(hs, eps), _conditional(ht, eps)
    return (p_t * ((p_t + eps) / (p_s + eps)).log()).mean()


class PKTParams(LayerPairParams):
    beta: Weight = Field(30000.0, description="weight of the PKT term (torchdistill / CRD benchmark: 30000)")


@METHODS.register("pkt")
class ProbabilisticKT(LayerPairMethod):
    Params = PKTParams
    params: PKTParams

    def feature_terms(self, hs: Tensor, ht: Tensor) -> dict[str, Tensor]:
        return {"pkt": pkt_loss(hs, ht)}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": self.params.ce_weight, "pkt": self.params.beta}
