"""Plain supervised training, no teacher: ``L = loss_task(y, s(x))`` (classification: ``CE(y, s(x))``)."""

from __future__ import annotations

from torch import Tensor

from ..batch import Batch
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs


@METHODS.register("supervised")
class Supervised(Method):
    needs_teacher = False

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        return {"ce": self.supervised_loss(batch, student_out)}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0}
