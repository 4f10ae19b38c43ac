"""MLLD: multi-level logit distillation (Jin, Wang, Lin; CVPR 2023, "Multi-Level Logit Distillation").

Prediction augmentation: both models' logits ``Z`` (B, C) softened at every temperature ``T_k`` of a set,
``P^k = softmax(Z / T_k)``; each level aligns the teacher's and the student's predictions at every ``T_k``::

    instance = sum_k T_k^2 * (1/B) sum_i KL(P_t^k[i] || P_s^k[i])         each example's prediction
    batch    = sum_k (1/B) || P_t^k P_t^k^T - P_s^k P_s^k^T ||_F^2         B x B: how the inputs correlate
    class    = sum_k (1/C) || P_t^k^T P_t^k - P_s^k^T P_s^k ||_F^2         C x C: how the classes correlate
    L        = ce_weight * CE(y, s(x)) + instance_weight * instance + batch_weight * batch + class_weight * class

KL summed over classes and averaged over the batch, with ``T^2`` on the instance level only; the Gram terms are
summed over their entries and divided by B (batch) and C (class). All three as in the authors' code
(github.com/Jin-Ying/Multi-Level-Logit-Distillation, ``mdistiller/distillers/KD_ours.py``), which also gives the
defaults: temperatures {2, 3, 4, 5, 6}, CE weighted 0.1 and each level 0.9 (mdistiller's KD weights).

Not reconstructed: the code trains on a weak and a strong augmentation of each batch and weighs the weak view's
instance and batch terms by the examples whose teacher confidence is at most the batch median (the class term by
the classes at most the median class confidence). mmdistill's batch is one view (augmentation is the data's
transform), so every example and class counts in every term.

Tasks: single-label classification (one softmax over classes per example).
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ..batch import LABEL, Batch
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs
from .params import MethodParams, Temperature, Weight, needs_class_distribution


def instance_alignment(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * (1/B) sum_i KL(softmax(t_i / T) || softmax(s_i / T))``."""
    log_p_s = F.log_softmax(student_logits / temperature, -1)
    log_p_t = F.log_softmax(teacher_logits / temperature, -1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * temperature**2


def batch_alignment(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``(1/B) ||P_t P_t^T - P_s P_s^T||_F^2`` of the predictions at ``temperature`` (the inputs' B x B Gram)."""
    p_s, p_t = F.softmax(student_logits / temperature, -1), F.softmax(teacher_logits / temperature, -1)
    return (p_t @ p_t.T - p_s @ p_s.T).pow(2).sum() / p_s.shape[0]


def class_alignment(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``(1/C) ||P_t^T P_t - P_s^T P_s||_F^2`` of the predictions at ``temperature`` (the classes' C x C Gram)."""
    p_s, p_t = F.softmax(student_logits / temperature, -1), F.softmax(teacher_logits / temperature, -1)
    return (p_t.T @ p_t - p_s.T @ p_s).pow(2).sum() / p_s.shape[1]


def multi_level_terms(
    student_logits: Tensor, teacher_logits: Tensor, temperatures: tuple[float, ...]
) -> dict[str, Tensor]:
    """``{"instance", "batch", "class"}``, each summed over ``temperatures`` (the prediction augmentation)."""
    levels = {"instance": instance_alignment, "batch": batch_alignment, "class": class_alignment}
    return {
        name: sum(level(student_logits, teacher_logits, T) for T in temperatures)  # type: ignore[misc]
        for name, level in levels.items()
    }


class MLLDParams(MethodParams):
    temperatures: tuple[Temperature, ...] = Field(
        (2.0, 3.0, 4.0, 5.0, 6.0), min_length=1, max_length=16, description="the prediction augmentation's T_k"
    )
    ce_weight: Weight = Field(0.1, description="weight of CE (the authors' code: 0.1)")
    instance_weight: Weight = Field(0.9, description="weight of the instance level (the code: 0.9)")
    batch_weight: Weight = Field(0.9, description="weight of the batch level (the code: 0.9)")
    class_weight: Weight = Field(0.9, description="weight of the class level (the code: 0.9)")


@METHODS.register("mlld")
class MultiLevelLogitDistillation(Method):
    Params = MLLDParams
    params: MLLDParams
    task_needs = (needs_class_distribution("it aligns one softmax over the classes per example at each T_k"),)

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        s = student_out.logits
        t = teacher_out.logits.to(s.dtype)
        return {"ce": F.cross_entropy(s, batch[LABEL]), **multi_level_terms(s, t, self.params.temperatures)}

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        return {"ce": p.ce_weight, "instance": p.instance_weight, "batch": p.batch_weight, "class": p.class_weight}
