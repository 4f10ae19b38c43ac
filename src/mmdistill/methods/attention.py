"""Attention transfer, AT (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

A (B, C, *spatial) feature map ``A`` gives a spatial attention map ``Q = vec(sum_c |A_c|^p)``
(p = 2). Two forms, selected by ``form``:

* ``paper`` (Eq. 2)::

      AT = (1/B) sum_i || Q_S(i)/||Q_S(i)||_2 - Q_T(i)/||Q_T(i)||_2 ||_2

* ``code`` (the authors' code, ``at(x) = normalize(x.pow(2).mean(1).view(B, -1))``)::

      AT = mean_{i, k} (q_S(i)_k - q_T(i)_k)^2,    q = Q / ||Q||_2  (mean of squares over channels)

  (normalising makes channel-mean and channel-sum maps equal).

``L = CE(y, s(x)) + beta/2 * AT`` (weights ``ce_weight`` and ``beta/2``; the authors use beta = 1000 with
the code form). Student and teacher may have different channel counts; when their spatial sizes
differ, the teacher's attention map is average-pooled to the student's size (adaptive pooling).

Tasks: any task with a spatial (or temporal) feature map; a layer without a spatial axis
(an MLP's (B, C) output) is refused, since its attention map is a single normalised value.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..registry import METHODS
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Weight


def attention_map(h: Tensor, p: int = 2) -> Tensor:
    """``sum_c |A_c|^p`` kept (B, *spatial)."""
    return h.abs().pow(p).sum(1)


def _match_spatial(q_t: Tensor, size: tuple[int, ...]) -> Tensor:
    if q_t.shape[1:] == size:
        return q_t
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(size)]
    return pool(q_t.unsqueeze(1), size).squeeze(1)  # type: ignore[arg-type]  # the 1-D pool takes a 1-tuple too


def at_loss(hs: Tensor, ht: Tensor, form: str = "code") -> Tensor:
    q_s = attention_map(hs)
    q_t = _match_spatial(attention_map(ht), tuple(q_s.shape[1:]))
    q_s, q_t = F.normalize(q_s.flatten(1), dim=1), F.normalize(q_t.flatten(1), dim=1)
    if form == "code":
        return (q_s - q_t).pow(2).mean()
    return (q_s - q_t).norm(dim=1).mean()


class ATParams(LayerPairParams):
    form: Literal["paper", "code"] = Field("code", description="paper: Eq. 2 (L2 norm); code: authors' code (mean sq.)")
    beta: Weight = Field(1000.0, description="the AT term weighs beta / 2")


@METHODS.register("at")
class AttentionTransfer(LayerPairMethod):
    Params = ATParams
    params: ATParams
    min_dims = 3

    def feature_terms(self, hs: Tensor, ht: Tensor) -> dict[str, Tensor]:
        return {"at": at_loss(hs, ht, self.params.form)}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": self.params.ce_weight, "at": self.params.beta / 2}
