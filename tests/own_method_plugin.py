"""A distillation method written outside mmdistill, in one file, as a user would (the tests copy it into tmp_path
and put it on PYTHONPATH; a config names it under ``imports``).

Reverse KD: the KL from the student's softened distribution to the teacher's (mode-seeking, where Hinton's KD is
mean-seeking)::

    L = (1 - lam) * CE(y, s(x)) + lam * T^2 * KL(p_s(x; T) || p_t(x; T))
"""

import torch.nn.functional as F
from pydantic import Field

from mmdistill.batch import LABEL
from mmdistill.methods.base import Method
from mmdistill.methods.params import Fraction, MethodParams, Temperature, needs_class_distribution
from mmdistill.registry import METHODS


class ReverseKDParams(MethodParams):
    temperature: Temperature = Field(4.0, description="T")
    lam: Fraction = Field(0.5, description="weight of the reverse KL; CE gets 1 - lam")


@METHODS.register("reverse_kd")
class ReverseKD(Method):
    Params = ReverseKDParams
    task_needs = (needs_class_distribution("the reverse KL compares two softmax distributions per example"),)

    def losses(self, batch, student_out, teacher_out):
        T = self.params.temperature
        log_p_s = F.log_softmax(student_out.logits / T, dim=-1)
        log_p_t = F.log_softmax(teacher_out.logits / T, dim=-1)
        reverse_kl = (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1).mean() * T**2
        return {"ce": F.cross_entropy(student_out.logits, batch[LABEL]), "reverse_kd": reverse_kl}

    def loss_weights(self):
        return {"ce": 1.0 - self.params.lam, "reverse_kd": self.params.lam}
