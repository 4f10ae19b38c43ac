"""A sweep shares one frozen teacher per seed among its trials: a base config whose teacher learns is refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmdistill.errors import ConfigError
from mmdistill.sweep.plan import needs_teachers

MODEL = {"modalities": ["a", "b"], "encoder": {"hidden": [8], "out_dim": 8}}


def test_a_sweep_over_a_learning_teacher_is_refused_naming_the_key():
    spec = SimpleNamespace(methods=["dml", "kd"], base={"teacher": {"model": MODEL, "trainable": True}})
    with pytest.raises(ConfigError, match=r"^base\.teacher\.trainable: a sweep trains one frozen teacher per seed"):
        needs_teachers(spec)


def test_a_frozen_teacher_is_still_trained_once_per_seed():
    spec = SimpleNamespace(methods=["kd"], base={"teacher": {"model": MODEL, "trainable": False}})
    assert needs_teachers(spec) is True
