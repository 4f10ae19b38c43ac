"""Decoupled knowledge distillation, DKD (Zhao, Cui, Song, Qiu, Liang; CVPR 2022, "Decoupled Knowledge Distillation").

With ``b = [p_t, 1 - p_t]`` the binary target / non-target probabilities and ``p^`` the softmax over
the non-target classes only (all at temperature T)::

    TCKD = T^2 * KL(b^T || b^S)                      (target-class KD)
    NCKD = T^2 * KL(p^T || p^S)                      (non-target-class KD)
    L    = CE(y, s(x)) + w(step) * (alpha * TCKD + beta * NCKD),   w(step) = min(step / warmup_steps, 1)

KL is summed over classes and averaged over the batch, as in the authors' code (mdistiller, which
also implements the optional linear warm-up, there in epochs; here in optimizer steps: the trainer hands
:meth:`DecoupledKD.after_step` the step, kept in a buffer so a resumed run continues the ramp). Terms:
``ce``, ``tckd``, ``nckd`` with weights ``ce_weight``, ``alpha``, ``beta``. Because the trainer reads
:meth:`loss_weights` once per run, the warm-up factor ``w(step)`` is multiplied into ``tckd`` and ``nckd``
themselves (1 once warmed up).

Tasks: single-label classification only (the target class must be one label per example).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor

from ..batch import LABEL, Batch, rows_where
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs
from .params import Count, MethodParams, Temperature, Weight, needs_class_distribution


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """``(TCKD, NCKD)`` each ``T^2 * KL``, summed over classes, averaged over the batch."""
    T = temperature
    gt = F.one_hot(target, student_logits.shape[-1]).bool()
    p_s, p_t = F.softmax(student_logits / T, -1), F.softmax(teacher_logits / T, -1)
    pt_s, pt_t = (p_s * gt).sum(-1), (p_t * gt).sum(-1)
    b_s = torch.stack([pt_s, 1 - pt_s], -1).clamp_min(1e-12)
    b_t = torch.stack([pt_t, 1 - pt_t], -1)
    tckd = F.kl_div(b_s.log(), b_t, reduction="batchmean") * T**2
    # softmax over the non-target classes: the target logit pushed to -inf (mdistiller subtracts 1000)
    log_q_s = F.log_softmax(student_logits / T - 1000.0 * gt, -1)
    log_q_t = F.log_softmax(teacher_logits / T - 1000.0 * gt, -1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s) * (~gt)).sum(-1).mean() * T**2
    return tckd, nckd


class DKDParams(MethodParams):
    temperature: Temperature = 4.0
    alpha: Weight = Field(1.0, description="weight of TCKD")
    beta: Weight = Field(8.0, description="weight of NCKD (mdistiller: 8 on CIFAR-100, 0.5 on ImageNet)")
    ce_weight: Weight = Field(1.0, description="weight of CE")
    warmup_steps: Count = Field(
        0, ge=0, le=1 << 40, description="linear warm-up of the KD terms over this many steps (0: none)"
    )


@METHODS.register("dkd")
class DecoupledKD(Method):
    Params = DKDParams
    params: DKDParams
    task_needs = (needs_class_distribution("it splits each example's class distribution at its one target class"),)
    partly_paired = True

    def __init__(self, params: BaseModel, masker=None) -> None:
        super().__init__(params, masker)
        self.steps: Tensor
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def warmup_factor(self) -> float:
        """``w(step) = min(step / warmup_steps, 1)`` of the step being trained (in training: the steps done so far
        plus this one), else of the last step done."""
        w = self.params.warmup_steps
        step = float(self.steps) + (1 if self.training else 0)
        return 1.0 if w == 0 else min(step / w, 1.0)

    def after_step(self, step: int, epoch: int) -> None:
        self.steps.fill_(step)

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        rows = self.paired_rows(batch)  # partly paired data: TCKD and NCKD over the rows the teacher saw
        if rows is not None and not bool(rows.any()):
            tckd = nckd = student_out.logits.sum() * 0.0
        else:
            s, t, y = rows_where(rows, student_out.logits, teacher_out.logits, batch[LABEL])
            tckd, nckd = dkd_terms(s, t, y, self.params.temperature)
        w = self.warmup_factor()
        return {"ce": F.cross_entropy(student_out.logits, batch[LABEL]), "tckd": w * tckd, "nckd": w * nckd}

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        return {"ce": p.ce_weight, "tckd": p.alpha, "nckd": p.beta}
