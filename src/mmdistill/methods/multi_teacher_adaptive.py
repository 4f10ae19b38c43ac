"""Multi-teacher KD with per-example teacher weights from each teacher's confidence or entropy.

    L = (1 - lam) * CE(y, s(x)) + lam * mean_i sum_k w_ik * T^2 * KL(p_k(x_i; T) || p_s(x_i; T))

with weights over the K teachers of each example i, read from the teachers' own class distributions at T = 1
(no label; the weights carry no gradient):

* ``confidence``: ``w_ik = c_ik / sum_j c_ij``, ``c_ik = max_c p_k(c | x_i)``: a teacher sure of an example
  counts more for it (the confidence-aware weighting of CA-MKD, Zhang, Chen, Wang, ICASSP 2022, "Confidence-Aware
  Multi-Teacher Knowledge Distillation", which scores each teacher by its cross-entropy with the label; here the
  label-free maximum probability);
* ``entropy``: ``w_ik = softmax_k(-H_ik)``, ``H_ik = -sum_c p_k(c | x_i) log p_k(c | x_i)``: a low-entropy
  (certain) teacher counts more (the entropy-based weighting of Kwon, Na, Lee, ICASSP 2020, "Adaptive Knowledge
  Distillation Based on Entropy", applied across teachers).

With one teacher every weight is 1 and the loss is KD.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from ..batch import LABEL, Batch
from ..registry import METHODS
from .base import StudentOutputs, TeacherOutputs
from .multi_teacher_base import MultiTeacherMethod, teacher_logits
from .params import Fraction, MethodParams, Temperature, needs_class_distribution, temperature_param


class AdaptiveParams(MethodParams):
    temperature: Temperature = Field(4.0, description="T, in [0.05, 100]")
    lam: Fraction = Field(0.5, description="weight of the KD term; CE gets 1 - lam")
    weighting: Literal["confidence", "entropy"] = Field(
        "confidence", description="per-example teacher weights: max probability, or softmax of minus the entropy"
    )


def example_teacher_weights(teacher_logits: Tensor, weighting: str) -> Tensor:
    """(B, K) weights over the teachers of each example, from (B, K, C) teacher logits (rows sum to 1)."""
    log_p = teacher_logits.float().log_softmax(-1)
    if weighting == "confidence":
        confidence = log_p.exp().amax(-1)
        return confidence / confidence.sum(-1, keepdim=True)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return (-entropy).softmax(-1)


@METHODS.register("multi_teacher_adaptive")
class AdaptiveMultiTeacherKD(MultiTeacherMethod):
    Params = AdaptiveParams
    params: AdaptiveParams
    task_needs = (
        needs_class_distribution("its teacher weights read each teacher's class distribution per example"),
        temperature_param(),
    )

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        T = self.kd_temperature(self.params.temperature)
        logits = teacher_logits(teacher_out)
        weights = example_teacher_weights(logits.detach(), self.params.weighting)
        per_teacher = [
            self.task.kd_per_example(student_out.logits, logits[:, k], T, batch[LABEL]) for k in range(logits.shape[1])
        ]
        kd = (weights * torch.stack(per_teacher, dim=1)).sum(1).mean()
        return {"ce": self.supervised_loss(batch, student_out), "kd": kd}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0 - self.params.lam, "kd": self.params.lam}
