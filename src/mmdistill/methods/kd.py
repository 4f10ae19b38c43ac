"""Hinton knowledge distillation (Hinton, Vinyals, Dean, 2015, "Distilling the Knowledge in a Neural Network").

    L = (1 - lam) * CE(y, s(x)) + lam * T^2 * KL(p_t(x; T) || p_s(x; T)),   p(x; T) = softmax(logits / T)

KL is averaged over the batch (``batchmean``); the ``T^2`` factor keeps gradient
magnitudes comparable across temperatures. The formula: :mod:`mmdistill.kl` (one copy for the library).
Other tasks (:mod:`mmdistill.tasks`): CE and the KD term are the task's ``loss`` and ``kd_loss`` (multilabel:
per-label binary KL at T; segmentation: per-pixel KL over the valid pixels; regression: a distance to the
teacher's output, without temperature, so ``temperature`` is refused there). On partly paired data the KD term is
the mean over the rows where the teacher saw its input; CE uses every row.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from ..batch import LABEL, Batch
from ..kl import kd_loss
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs
from .params import Fraction, MethodParams, Temperature, temperature_param

__all__ = ["HintonKD", "KDParams", "kd_loss"]


class KDParams(MethodParams):
    temperature: Temperature = Field(4.0, description="T, in [0.05, 100]")
    lam: Fraction = Field(0.5, description="weight of the KD term; CE gets 1 - lam")


@METHODS.register("kd")
class HintonKD(Method):
    Params = KDParams
    params: KDParams
    task_needs = (temperature_param(),)
    partly_paired = True

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        T = self.kd_temperature(self.params.temperature)
        return {
            "ce": self.supervised_loss(batch, student_out),
            "kd": self.task.paired_kd_loss(
                student_out.logits, teacher_out.logits, T, batch[LABEL], self.paired_rows(batch)
            ),
        }

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0 - self.params.lam, "kd": self.params.lam}
