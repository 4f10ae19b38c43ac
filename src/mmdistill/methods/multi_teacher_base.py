"""What the methods that distil from several teachers share: the teachers' outputs side by side, and the base class.

A run with several teachers (``teachers:`` in the config, a list or mapping in ``distill(teacher=...)``) serves a
method one :class:`TeacherGroupOutputs` per batch: each teacher's outputs (``members``, in the teachers' order,
each cached or run online on its own) and their logits stacked on a teacher axis, ``logits`` of shape (B, K, C).
Only a :class:`MultiTeacherMethod` accepts several teachers; a single-teacher method given a group of one gets that
one teacher, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Method, TeacherOutputs


@dataclass
class TeacherGroupOutputs(TeacherOutputs):
    """The outputs of K teachers for one batch: ``logits`` (B, K, C), ``members`` each teacher's own outputs
    (``features`` holds each teacher's hooked features under ``"<name>:<path>"``), ``names`` their names."""

    members: list[TeacherOutputs] = field(default_factory=list)
    names: tuple[str, ...] = ()

    @classmethod
    def of(cls, names: tuple[str, ...], members: list[TeacherOutputs]) -> TeacherGroupOutputs:
        features = {f"{name}:{path}": v for name, out in zip(names, members) for path, v in out.features.items()}
        return cls(torch.stack([m.logits for m in members], dim=1), features, None, list(members), tuple(names))


class MultiTeacherMethod(Method):
    """A method that distils from K >= 1 teachers at once; ``min_teachers``: the fewest it can use."""

    several_teachers: ClassVar[bool] = True
    min_teachers: ClassVar[int] = 1

    def group_size(self, teacher) -> int:
        """K, the number of teachers of the run (a group's members; 1 for one teacher module)."""
        members = getattr(teacher, "members", None)
        return len(members) if members is not None else 1

    def check_group(self, teacher, name: str) -> int:
        """K, refused (naming ``teachers``) when below :attr:`min_teachers`."""
        k = self.group_size(teacher)
        if k < self.min_teachers:
            raise ConfigError(
                f"teachers: method {name!r} routes among {self.min_teachers} or more teachers and this run has {k}; "
                "give several teachers (teachers: a list or mapping of teacher sections) or use kd"
            )
        return k


def teacher_logits(teacher_out: TeacherOutputs | None) -> Tensor:
    """(B, K, C) logits of the run's teachers (K = 1 for a single teacher's outputs)."""
    assert teacher_out is not None
    if isinstance(teacher_out, TeacherGroupOutputs):
        return teacher_out.logits
    return teacher_out.logits.unsqueeze(1)


def member_outputs(teacher_out: TeacherOutputs | None) -> list[TeacherOutputs]:
    """Each teacher's own outputs, in the teachers' order."""
    assert teacher_out is not None
    return list(teacher_out.members) if isinstance(teacher_out, TeacherGroupOutputs) else [teacher_out]


def teacher_modules(teacher: nn.Module | None) -> list[nn.Module]:
    """Each teacher module of the run, in the teachers' order: a group's members, or the one teacher."""
    assert teacher is not None
    members = getattr(teacher, "members", None)
    return list(members.values()) if isinstance(members, Mapping) else [teacher]
