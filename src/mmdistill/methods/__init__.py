"""Distillation methods, one file each, registered by name in ``mmdistill.registry.METHODS``."""

from . import hint, kd, msd, supervised  # noqa: F401  (registration)
from .base import Method, StudentOutputs, TeacherOutputs, TeacherRequest

__all__ = ["Method", "StudentOutputs", "TeacherOutputs", "TeacherRequest"]
