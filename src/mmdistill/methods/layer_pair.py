"""Shared plumbing of the feature- and relation-based methods: one student layer and one teacher layer.

Both are dotted module paths read by forward hooks (:class:`~mmdistill.models.hooks.FeatureHooks`),
as in :mod:`.hint`; the teacher's comes from the teacher cache. A subclass implements
:meth:`LayerPairMethod.feature_terms` on the two hooked tensors; the task's supervised loss (classification:
CE) on the labels is added with weight ``ce_weight``.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from ..batch import Batch
from ..errors import ConfigError
from ..models.hooks import FeatureHooks
from .base import Method, StudentOutputs, TeacherOutputs, TeacherRequest
from .params import MethodParams, Weight


class LayerPairParams(MethodParams):
    student_layer: str = Field(description="dotted module path of the student layer, e.g. encoders.b.body.2")
    teacher_layer: str = Field(description="dotted module path of the teacher layer, e.g. encoders.a.body.2")
    ce_weight: Weight = Field(1.0, description="weight of CE")


class LayerPairMethod(Method):
    Params = LayerPairParams
    params: LayerPairParams
    min_dims = 2  # the layer outputs must have at least this many axes, (B, C, ...)

    def teacher_request(self) -> TeacherRequest:
        return TeacherRequest(features=(self.params.teacher_layer,))

    def student_feature_paths(self) -> tuple[str, ...]:
        return (self.params.student_layer,)

    @torch.no_grad()
    def sample_features(
        self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None
    ) -> tuple[Tensor, Tensor]:
        """The two layers' outputs on a sample batch, checked to be (batch, channels, ...) with >= ``min_dims`` axes."""
        assert teacher is not None
        with FeatureHooks(student, [self.params.student_layer]) as fs:
            student(sample_batch)
        with FeatureHooks(teacher, [self.params.teacher_layer]) as ft:
            teacher(sample_batch)
        return (
            self._checked_features("student_layer", fs.get(self.params.student_layer)),
            self._checked_features("teacher_layer", ft.get(self.params.teacher_layer)),
        )

    def _checked_features(self, name: str, h: Tensor | None) -> Tensor:
        """The output of layer ``method.params.<name>``, refused when missing or with too few axes."""
        if h is None:
            path = getattr(self.params, name)
            raise ConfigError(f"method.params.{name}: layer {path!r} is not used by the forward pass")
        if h.dim() < self.min_dims:
            spatial = self.min_dims > 2
            want = "(batch, channels, *spatial) with a spatial axis" if spatial else "(batch, channels, ...)"
            raise ConfigError(f"method.params.{name}: layer output must be {want}, got shape {tuple(h.shape)}")
        return h

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        self.sample_features(sample_batch, student, teacher)

    def feature_terms(self, hs: Tensor, ht: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        hs = student_out.features[self.params.student_layer]
        ht = teacher_out.features[self.params.teacher_layer].to(hs.dtype)
        return {"ce": self.supervised_loss(batch, student_out), **self.feature_terms(hs, ht)}
