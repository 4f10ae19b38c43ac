"""Distillation methods, one file each, registered by name in ``mmdistill.registry.METHODS``."""

from . import (  # noqa: F401  (registration)
    attention,
    c2kd,
    crd,
    dist,
    dkd,
    dml,
    fd_cmkd,
    hint,
    kd,
    logit_std_kd,
    mfh_general,
    mlld,
    msd,
    mst_distill,
    multi_teacher_adaptive,
    multi_teacher_kd,
    pkt,
    rkd,
    similarity,
    supervised,
)
from .base import Method, StudentOutputs, TeacherOutputs, TeacherRequest

__all__ = ["Method", "StudentOutputs", "TeacherOutputs", "TeacherRequest"]
