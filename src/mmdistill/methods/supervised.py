"""Plain supervised training, no teacher: ``L = loss_task(y, s(x))`` (classification: ``CE(y, s(x))``).

``modality_dropout: p`` (default 0) trains on incomplete inputs as well: in each training batch every example, with
probability p, keeps one modality drawn uniformly and has the others removed by the run's masker (``masking:``),
the "ModDrop" recipe (Neverova et al., 2016, "ModDrop: adaptive multi-modal gesture recognition"). A teacher
trained this way can predict from each modality alone, which is what MSD's modality-only terms distil.
Evaluation always sees the full input.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from ..batch import LABEL, Batch
from ..errors import ConfigError
from ..registry import METHODS
from .base import Method, StudentOutputs, TeacherOutputs
from .params import MethodParams, Number


class SupervisedParams(MethodParams):
    modality_dropout: Number = Field(
        0.0, ge=0, lt=1, description="probability that a training example keeps only one modality, in [0, 1)"
    )


@METHODS.register("supervised")
class Supervised(Method):
    Params = SupervisedParams
    params: SupervisedParams
    needs_teacher = False

    def forward_student(self, student: nn.Module, batch: Batch) -> StudentOutputs:
        p = self.params.modality_dropout
        if p > 0:  # forward_student runs in training steps only: evaluation calls the model itself
            if self.masker is None:
                raise ConfigError("method.params.modality_dropout: needs the run's masker (build_method passes it)")
            batch = drop_modalities(batch, self.masker, p)
        return super().forward_student(student, batch)

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        return {"ce": self.supervised_loss(batch, student_out)}

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0}


def drop_modalities(batch: Batch, masker, p: float) -> Batch:
    """``batch`` in which each example, with probability ``p``, keeps only one of the masker's modalities in the
    batch (drawn uniformly; global RNG, so seeded runs repeat); the others get the masker's null value."""
    mods = [m for m in masker.specs if m in batch]
    if len(mods) < 2:
        return batch
    n = len(batch[LABEL])
    device = batch[LABEL].device
    dropped = torch.rand(n, device=device) < p
    kept = torch.randint(len(mods), (n,), device=device)
    out = dict(batch)
    for i, m in enumerate(mods):
        rows = dropped & (kept != i)  # the examples that lose modality m
        if not rows.any():
            continue
        for key, value in masker.remove(batch, [m]).items():  # m itself, and its attention mask for tokens
            base = batch.get(key)
            if value is base:
                continue
            if base is None:  # a token modality without a mask: every token is attended
                base = torch.ones_like(value)
            out[key] = torch.where(rows.view(-1, *([1] * (value.dim() - 1))), value, base)
    return out
