"""The contract between the trainer and a distillation method (after mdistiller's Distiller).

A method is an ``nn.Module`` (so it can own learnable parts such as a hint projector) that

1. says what it needs from the frozen teacher (:meth:`teacher_request`: logits, hooked
   features, modality-only views) — the trainer serves that from the teacher cache;
2. runs the student (:meth:`forward_student`, hooks included);
3. returns a dict of **named, unweighted** loss terms (:meth:`losses`), and the weight of
   each term (:meth:`loss_weights`). The trainer logs every term and sums ``w[k] * loss[k]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..batch import Batch
from ..data.dataset import MultimodalDataset
from ..models.hooks import FeatureHooks


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class TeacherRequest:
    """What a method needs from the teacher for each batch."""

    features: tuple[str, ...] = ()  # teacher layer paths
    views: tuple[tuple[str, ...], ...] = ()  # modality sets kept (the rest removed by the masker), e.g. (("a",), ("b",))


@dataclass
class TeacherOutputs:
    logits: Tensor  # (B, C) on the full input
    features: dict[str, Tensor] = field(default_factory=dict)
    view_logits: Tensor | None = None  # (V, B, C), V = len(request.views), in request order


@dataclass
class StudentOutputs:
    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    view_logits: Tensor | None = None  # (V, B, C) when a method runs the student on modality views


class Method(nn.Module):
    """Base class; subclasses set ``Params`` (a pydantic model of their config) and implement :meth:`losses`."""

    Params: ClassVar[type[BaseModel]] = NoParams
    needs_teacher: ClassVar[bool] = True

    def __init__(self, params: BaseModel, masker: nn.Module | None = None) -> None:
        super().__init__()
        self.params = params
        self.masker = masker

    def teacher_request(self) -> TeacherRequest:
        return TeacherRequest()

    def student_feature_paths(self) -> tuple[str, ...]:
        return ()

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        """Build parts whose shapes depend on the models (called once, before the optimizer exists)."""

    def prepare(self, train: MultimodalDataset, teacher: nn.Module | None, device: torch.device) -> MultimodalDataset:
        """See the training split once before training (e.g. population statistics, a held-out part).

        Returns the examples to train on (by default all of ``train``).
        """
        return train

    def forward_student(self, student: nn.Module, batch: Batch) -> StudentOutputs:
        with FeatureHooks(student, self.student_feature_paths()) as feats:
            logits = student(batch)
        return StudentOutputs(logits, dict(feats))

    def losses(self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None) -> dict[str, Tensor]:
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """Weight of each named term in the total loss (terms not listed weigh 1)."""
        return {}
