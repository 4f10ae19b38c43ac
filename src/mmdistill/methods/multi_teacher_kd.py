"""Multi-teacher KD with fixed weights; by default the plain average of the teachers (You, Xu, Xu, Tao, KDD 2017,
"Learning from Multiple Teacher Networks", which averages the teachers' softened outputs).

    L = (1 - lam) * CE(y, s(x)) + lam * sum_k w_k * T^2 * KL(p_k(x; T) || p_s(x; T)),    sum_k w_k = 1

``weights``: one non-negative weight per teacher (a list in the teachers' order, or a mapping teacher name ->
weight), normalised to sum 1; left out, every teacher weighs 1/K. For classification the weighted sum of KL terms
and the KL to the weighted mixture of the teachers' distributions, KL(sum_k w_k p_k || p_s), differ by a constant
that does not depend on the student, so both train the student alike; the sum is used because it is the task's own
KD term per teacher (``task.kd_loss``), so it also serves multilabel and segmentation. With one teacher it is KD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from ..batch import LABEL, Batch
from ..errors import ConfigError
from ..registry import METHODS
from .base import StudentOutputs, TeacherOutputs
from .multi_teacher_base import MultiTeacherMethod, teacher_logits
from .params import MAX_WEIGHT, Fraction, MethodParams, Temperature, Weight, temperature_param


class MultiTeacherKDParams(MethodParams):
    temperature: Temperature = Field(4.0, description="T, in [0.05, 100]")
    lam: Fraction = Field(0.5, description="weight of the KD term; CE gets 1 - lam")
    weights: list[Weight] | dict[str, Weight] | None = Field(
        None, description="one weight >= 0 per teacher (list in order, or name -> weight); null: the average"
    )

    @field_validator("weights", mode="before")
    @classmethod
    def _numbers_at_least_0(cls, raw: Any) -> Any:
        """One message for a bad weight, whether the weights are a list or a mapping."""
        if raw is None:
            return raw
        if not isinstance(raw, (list, dict)):
            raise ValueError(f"expected a list of weights or a mapping teacher name -> weight, got {raw!r}")
        for w in raw.values() if isinstance(raw, dict) else raw:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"weight {w!r} is not a number; every weight is a number in [0, {MAX_WEIGHT:g}]")
            if not 0 <= w <= MAX_WEIGHT:
                raise ValueError(f"weight {w!r} is out of range; every weight is a number in [0, {MAX_WEIGHT:g}]")
        return raw


def fixed_teacher_weights(weights: list[float] | Mapping[str, float] | None, names: tuple[str, ...]) -> Tensor:
    """(K,) weights summing to 1 for the teachers ``names``: ``weights`` normalised, or 1/K each when None; a count
    or names that do not match the teachers, or weights summing to 0, refused naming ``method.params.weights``."""
    k = len(names)
    if weights is None:
        return torch.full((k,), 1.0 / k)
    if isinstance(weights, Mapping):
        if set(weights) != set(names):
            raise ConfigError(
                f"method.params.weights: names {sorted(weights)} do not match the teachers {list(names)}; "
                "give one weight per teacher"
            )
        weights = [weights[n] for n in names]
    if len(weights) != k:
        raise ConfigError(
            f"method.params.weights: {len(weights)} weight(s) for {k} teacher(s) ({', '.join(names)}); "
            "give one weight per teacher"
        )
    total = float(sum(weights))
    if total <= 0:
        raise ConfigError("method.params.weights: every weight is 0; give at least one teacher a positive weight")
    return torch.tensor([w / total for w in weights])


def teacher_names(teacher: nn.Module | None) -> tuple[str, ...]:
    """The run's teacher names: a group's member names, ``("teacher",)`` for a single teacher."""
    members = getattr(teacher, "members", None)
    return tuple(members.keys()) if members is not None else ("teacher",)


@METHODS.register("multi_teacher_kd")
class MultiTeacherKD(MultiTeacherMethod):
    Params = MultiTeacherKDParams
    params: MultiTeacherKDParams
    task_needs = (temperature_param(),)

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        self.teacher_weights = fixed_teacher_weights(self.params.weights, teacher_names(teacher)).tolist()

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        T = self.kd_temperature(self.params.temperature)
        logits = teacher_logits(teacher_out)
        kd = sum(
            w * self.task.kd_loss(student_out.logits, logits[:, k], T, batch[LABEL])
            for k, w in enumerate(self.teacher_weights)
        )
        return {"ce": self.supervised_loss(batch, student_out), "kd": kd}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0 - self.params.lam, "kd": self.params.lam}
