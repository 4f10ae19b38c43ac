"""Deep mutual learning, DML (Zhang, Xiang, Hospedales, Lu; CVPR 2018, "Deep Mutual Learning").

Two networks learn together, each from the labels and from the other's predictions. Here the teacher is the second
network, trained alongside the student (``teacher.trainable: true``; the method refuses a frozen teacher). With
``sg`` = stop-gradient (the other network's prediction is a target, as in the paper's Eq. 3-4)::

    ce   = CE(y, s(x))                                   the student's supervised term
    kl   = T^2 * KL(p(sg t(x); T) || p(s(x); T))         the student learns the teacher's prediction
    ce_t = CE(y, t(x))                                   the teacher's supervised term
    kl_t = T^2 * KL(p(sg s(x); T) || p(t(x); T))         the teacher learns the student's prediction
    L    = ce_weight * (ce + ce_t) + kl_weight * (kl + kl_t)

KL is the task's KD term (:mod:`mmdistill.kl`: summed over classes, averaged over the batch), CE the task's loss;
the paper uses T = 1 and weighs every term 1. The paper updates the two networks in turn within an iteration, each
after recomputing the other's predictions; here both take the same optimizer step from one forward pass of each,
the usual form for two networks trained jointly. Because ``sg`` cuts each term's gradient to its own network, the
sum ``L`` gives each network exactly its own loss of the paper.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from ..batch import LABEL, Batch
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs
from .params import MethodParams, Temperature, Weight, temperature_param


class DMLParams(MethodParams):
    temperature: Temperature = Field(1.0, description="T of both KL terms (the paper: 1)")
    ce_weight: Weight = Field(1.0, description="weight of each network's CE (ce, ce_t)")
    kl_weight: Weight = Field(1.0, description="weight of each network's KL to the other (kl, kl_t)")


@METHODS.register("dml")
class DeepMutualLearning(Method):
    Params = DMLParams
    params: DMLParams
    task_needs = (temperature_param(),)
    teacher_training = "required"

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        s, y = student_out.logits, batch[LABEL]
        t = teacher_out.logits.to(s.dtype)
        T = self.kd_temperature(self.params.temperature)
        return {
            "ce": self.task.loss(s, y),
            "kl": self.task.kd_loss(s, t.detach(), T, y),
            "ce_t": self.task.loss(t, y),
            "kl_t": self.task.kd_loss(t, s.detach(), T, y),
        }

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        return {"ce": p.ce_weight, "kl": p.kl_weight, "ce_t": p.ce_weight, "kl_t": p.kl_weight}
