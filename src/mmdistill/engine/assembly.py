"""Building a run's parts from its config, in one place: used by the protocol (``train``), its preflight, and
everything that reloads a run folder (``evaluate``, ``analyze``, ``report``, the advisor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch import nn

from ..config import RunConfig
from ..data import DataSplits
from ..errors import CheckpointError
from ..models.multimodal import build_model
from .checkpoint import load_weights


def build_run_model(
    cfg: RunConfig, role: Literal["teacher", "student"], data: DataSplits, load_checkpoint: bool = True
) -> nn.Module:
    """The ``teacher`` or ``student`` model of ``cfg`` for ``data`` (fresh weights; the teacher with
    ``teacher.checkpoint`` loaded when the config names one and ``load_checkpoint``); errors name the config key."""
    section = getattr(cfg, role)
    model = build_model(section.model, data.train.specs(), data.num_classes, f"{role}.model")
    if role == "teacher" and load_checkpoint and section.checkpoint is not None:
        load_teacher_weights(model, section.checkpoint)
    return model


def load_teacher_weights(teacher: nn.Module, path: Path) -> None:
    """``teacher.checkpoint`` into the teacher model; a mismatch names the keys."""
    weights = load_weights(path)
    try:
        result = teacher.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(
            f"teacher.checkpoint: {path} does not fit teacher.model: {str(err).splitlines()[-1].strip()}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"teacher.checkpoint: {path} does not fit teacher.model: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}"
        )
