"""Distillation methods, one file each, registered by name in ``mmdistill.registry.METHODS``."""

from . import (  # noqa: F401  (registration)
    attention,
    c2kd,
    crd,
    dist,
    dkd,
    hint,
    kd,
    logit_std_kd,
    mfh_general,
    msd,
    pkt,
    rkd,
    similarity,
    supervised,
)
from .base import Method, StudentOutputs, TeacherOutputs, TeacherRequest

__all__ = ["Method", "StudentOutputs", "TeacherOutputs", "TeacherRequest"]
