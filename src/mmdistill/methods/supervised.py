"""Plain supervised training, no teacher: ``L = CE(y, s(x))``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..batch import LABEL, Batch
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs


@METHODS.register("supervised")
class Supervised(Method):
    needs_teacher = False

    def losses(self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(student_out.logits, batch[LABEL])}
