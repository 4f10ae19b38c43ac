"""Feature hint KD (FitNets; Romero et al., ICLR 2015).

    L = CE(y, s(x)) + beta * MSE(r(h_s(x)), h_t(x))        (CE: the task's loss, :mod:`mmdistill.tasks`)

``h_s`` / ``h_t`` are the outputs of a student / teacher layer taken by forward hook
(dotted module path) and ``r`` is a learned regressor: a linear map over the channel axis
(a 1x1 convolution for feature maps). When the spatial sizes differ, both maps are
global-average-pooled to vectors first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..batch import LABEL, Batch
from ..errors import ConfigError
from ..models.hooks import FeatureHooks
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs, TeacherRequest
from .params import MethodParams, Number


class HintParams(MethodParams):
    student_layer: str = Field(min_length=1, description="dotted module path in the student")
    teacher_layer: str = Field(min_length=1, description="dotted module path in the teacher")
    beta: Number = Field(1.0, ge=0, le=1000, description="weight of the hint term, in [0, 1000]")


def _channels_last(h: Tensor) -> Tensor:
    """(B, C, *spatial) -> (B, *spatial, C); (B, C) unchanged."""
    return h if h.dim() == 2 else h.movedim(1, -1)


def _pool(h: Tensor) -> Tensor:
    return h if h.dim() == 2 else h.flatten(2).mean(-1)


@METHODS.register("hint")
class FeatureHint(Method):
    Params = HintParams
    params: HintParams

    def teacher_request(self) -> TeacherRequest:
        return TeacherRequest(features=(self.params.teacher_layer,))

    def student_feature_paths(self) -> tuple[str, ...]:
        return (self.params.student_layer,)

    @torch.no_grad()
    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        assert teacher is not None
        with FeatureHooks(student, [self.params.student_layer]) as fs:
            student(sample_batch)
        with FeatureHooks(teacher, [self.params.teacher_layer]) as ft:
            teacher(sample_batch)
        if self.params.student_layer not in fs or self.params.teacher_layer not in ft:
            missing = "student_layer" if self.params.student_layer not in fs else "teacher_layer"
            raise ConfigError(
                f"method.params.{missing}: layer {getattr(self.params, missing)!r} is not run by the model's forward"
            )
        hs, ht = fs[self.params.student_layer], ft[self.params.teacher_layer]
        for name, h in (("student_layer", hs), ("teacher_layer", ht)):
            layer = getattr(self.params, name)
            if h.dim() < 2:
                raise ConfigError(
                    f"method.params.{name}: layer {layer!r} output must be (batch, channels, ...), "
                    f"got shape {tuple(h.shape)}"
                )
            if not h.is_floating_point():
                raise ConfigError(
                    f"method.params.{name}: layer {layer!r} outputs dtype {h.dtype}; a hint needs float features"
                )
            if h.shape[0] != len(sample_batch[LABEL]):
                raise ConfigError(
                    f"method.params.{name}: layer {layer!r} output has {h.shape[0]} rows for a batch of "
                    f"{len(sample_batch[LABEL])}; hook a layer whose first axis is the batch"
                )
            if not torch.isfinite(h).all():
                raise ConfigError(
                    f"method.params.{name}: layer {layer!r} outputs NaN/Inf on the first training examples"
                )
        self.pool = hs.shape[2:] != ht.shape[2:]
        self.projector = nn.Linear(hs.shape[1], ht.shape[1]).to(hs.device)  # initialised as on the CPU
        pred, target = self._align(hs, ht)
        if pred.shape != target.shape:  # e.g. (B, T, C) sequences whose axis 1 is not channels
            raise ConfigError(
                f"method.params.student_layer: features of {self.params.student_layer!r} {tuple(hs.shape)} cannot "
                f"be mapped onto those of teacher_layer {self.params.teacher_layer!r} {tuple(ht.shape)} "
                "(a hint needs (batch, channels, *spatial) on both sides)"
            )

    def _align(self, hs: Tensor, ht: Tensor) -> tuple[Tensor, Tensor]:
        if self.pool:
            return self.projector(_pool(hs)), _pool(ht)
        return self.projector(_channels_last(hs)), _channels_last(ht)

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        hs, ht = (
            student_out.features.get(self.params.student_layer),
            teacher_out.features.get(self.params.teacher_layer),
        )
        if hs is None or ht is None:
            name = "student_layer" if hs is None else "teacher_layer"
            raise ConfigError(
                f"method.params.{name}: no features from layer {getattr(self.params, name)!r} in this batch"
            )
        pred, target = self._align(hs, ht)
        if pred.shape != target.shape:
            raise ConfigError(
                f"method.params.student_layer: hint features {tuple(pred.shape)} of {self.params.student_layer!r} do "
                f"not match {tuple(target.shape)} of teacher_layer {self.params.teacher_layer!r}"
            )
        return {"ce": self.supervised_loss(batch, student_out), "hint": F.mse_loss(pred, target)}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0, "hint": self.params.beta}
