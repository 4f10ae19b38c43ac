"""Logit-standardised KD (Sun, Ren, Li, Wang, Cao; CVPR 2024, "Logit Standardization in Knowledge Distillation").

Each example's logits are z-scored before the temperature softmax, so the student matches the
teacher's logit *relations* rather than their scale::

    Z(v) = (v - mean(v)) / (std(v) + eps)          (over classes; unbiased std, eps = 1e-7, as the authors' code)
    L    = (1 - lam) * CE(y, s(x)) + lam * T^2 * KL(softmax(Z(t)/T) || softmax(Z(s)/T))

The CE term uses the raw student logits. The paper's runs weigh CE 0.1 and KD 9 (``lam = 9 / 9.1``
with the learning rate scaled by 9.1). Terms and weights as :mod:`.kd` (``ce``, ``kd``).

Tasks: classification (single-label); not defined for a single-logit output (std of one value).
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..batch import LABEL, Batch, rows_where
from ..kl import kd_loss
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs
from .params import Fraction, MethodParams, Number, Temperature, needs_class_distribution


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    return (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + eps)


class LogitStdKDParams(MethodParams):
    temperature: Temperature = Field(2.0, description="base temperature after standardisation (paper: 2 on CIFAR-100)")
    lam: Fraction = Field(0.5, description="weight of the KD term; CE gets 1 - lam")
    eps: Number = Field(1e-7, gt=0, le=1)


@METHODS.register("logit_std_kd")
class LogitStandardizedKD(Method):
    Params = LogitStdKDParams
    params: LogitStdKDParams
    task_needs = (needs_class_distribution("it standardises one logit vector per example"),)
    partly_paired = True

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        p = self.params
        ce = F.cross_entropy(student_out.logits, batch[LABEL])
        rows = self.paired_rows(batch)  # partly paired data: KD over the rows the teacher saw
        if rows is not None and not bool(rows.any()):
            return {"ce": ce, "kd": student_out.logits.sum() * 0.0}
        s, t = rows_where(rows, student_out.logits, teacher_out.logits)
        return {"ce": ce, "kd": kd_loss(standardize(s, p.eps), standardize(t, p.eps), p.temperature)}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0 - self.params.lam, "kd": self.params.lam}
