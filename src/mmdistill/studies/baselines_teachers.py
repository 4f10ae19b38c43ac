"""The rows of ``reproduce baselines --teacher-rows``: several teachers, and a teacher that learns alongside.

Per seed, beside the study's multimodal teacher (the teacher of every other row, named ``multimodal``), one teacher
per modality of it, named by that modality: the same design on that modality alone (AV-MNIST: MultiBench's LeNet
of that modality with the MLP head), trained on the same rows with the same optimiser, epochs and seed. Rows
(:func:`teacher_rows`), each at every temperature of the study's grid:

* ``kd_<m>_teacher``: KD (``0.5 CE + 0.5 T^2 KL``) from the teacher of modality m alone: single-teacher KD, from
  the student's own modality (MFH Table 1's unimodal teacher) or across modalities;
* ``mtkd_unimodal``: multi-teacher KD (You et al., KDD 2017) from the unimodal teachers, equal weights;
* ``mtkd_confidence_unimodal``: the same teachers weighted per example by their confidence (CA-MKD's label-free
  form, ``multi_teacher_adaptive``);
* ``mtkd_all``: multi-teacher KD from the multimodal teacher and every unimodal one, equal weights;
* ``mst_distill_all``: MST-Distill (Li et al., ACM MM 2025) over that teacher set: its router (top 1), load
  balancing and one mask per teacher, at the method's defaults;
* ``dml_online``: deep mutual learning (Zhang et al., CVPR 2018): a copy of the multimodal teacher, as trained,
  learns further alongside the student (``teacher.trainable``);
* ``c2kd_online``: C2KD between the fused features with that learning teacher (its own terms added).

Every row records the teachers it read (``teachers``: names joined by ``+``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..engine.api import distill

MULTIMODAL = "multimodal"


@dataclass(frozen=True)
class TeacherRow:
    """One row: a method, its fixed parameters, the name of its temperature parameter (run at each T of the grid)
    or None, the teachers it reads by name, and whether its one teacher learns alongside the student."""

    method: str
    params: dict
    temperature: str | None
    teachers: tuple[str, ...]
    online: bool = False


def teacher_rows(modalities: Sequence[str], fused_layers: dict) -> dict[str, TeacherRow]:
    """The rows for a multimodal teacher on ``modalities``; ``fused_layers``: C2KD's student and teacher layers."""
    unimodal, every = tuple(modalities), (MULTIMODAL, *modalities)
    single = {f"kd_{m}_teacher": TeacherRow("kd", {"lam": 0.5}, "temperature", (m,)) for m in modalities}
    confidence = {"lam": 0.5, "weighting": "confidence"}
    return {
        **single,
        "mtkd_unimodal": TeacherRow("multi_teacher_kd", {"lam": 0.5}, "temperature", unimodal),
        "mtkd_confidence_unimodal": TeacherRow("multi_teacher_adaptive", confidence, "temperature", unimodal),
        "mtkd_all": TeacherRow("multi_teacher_kd", {"lam": 0.5}, "temperature", every),
        "mst_distill_all": TeacherRow("mst_distill", {}, "temperature", every),
        "dml_online": TeacherRow("dml", {}, "temperature", (MULTIMODAL,), online=True),
        "c2kd_online": TeacherRow("c2kd", fused_layers, "temperature", (MULTIMODAL,), online=True),
    }


def train_unimodal_teachers(
    modalities: Sequence[str], make_teacher: Callable[[list[str]], nn.Module], data, work: Path, seed: int, **run
) -> dict[str, tuple[nn.Module, float]]:
    """Per modality, ``(teacher, test accuracy as a fraction)``: ``make_teacher([m])`` trained by CE into
    ``work/teacher_<m>`` (``run``: the study's trainer and quiet)."""
    teachers = {}
    for m in modalities:
        torch.manual_seed(seed)
        model = make_teacher([m])
        result = distill(model, None, data, work / f"teacher_{m}", "supervised", seed=seed, **run)
        teachers[m] = (model, result.test["accuracy"] / 100)
    return teachers


def teachers_of(row: TeacherRow, teachers: dict[str, nn.Module]) -> nn.Module | dict[str, nn.Module]:
    """What ``distill`` gets as ``teacher``: the one module (a copy when it learns: the study's stays as trained), or
    a mapping name -> module."""
    if len(row.teachers) == 1:
        one = teachers[row.teachers[0]]
        return copy.deepcopy(one) if row.online else one
    return {name: teachers[name] for name in row.teachers}
