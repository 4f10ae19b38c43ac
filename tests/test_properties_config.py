"""Property: any dotted override either validates or raises ConfigError naming the key (Hypothesis)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdistill.config import RunConfig, apply_overrides, load_config
from mmdistill.errors import ConfigError

BASE = """\
seed: 0
data: {name: toy-two-modality, params: {n: 40}}
teacher: {model: {modalities: [a, b]}}
student: {model: {modalities: [b]}}
method: {name: kd, params: {temperature: 2.0}}
trainer: {epochs: 2, batch_size: 8}
"""

KNOWN_KEYS = [
    "seed",
    "data",
    "data.name",
    "data.params",
    "data.params.n",
    "data.split_seed",
    "teacher",
    "teacher.checkpoint",
    "teacher.model",
    "teacher.model.modalities",
    "teacher.model.encoder.hidden",
    "teacher.model.encoder.type",
    "teacher.model.fusion",
    "student",
    "student.model",
    "student.model.encoder.out_dim",
    "student.model.encoder.dropout",
    "method",
    "method.name",
    "method.params",
    "method.params.temperature",
    "masking.strategy",
    "masking.per_modality",
    "trainer",
    "trainer.epochs",
    "trainer.batch_size",
    "trainer.optimizer.lr",
    "trainer.optimizer.name",
    "trainer.scheduler.name",
    "trainer.grad_clip",
    "trainer.monitor",
    "trainer.early_stopping",
    "trainer.early_stopping.patience",
    "trainer.precision",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_threads",
    "cache",
    "cache.enabled",
    "cache.dir",
]
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8)
KEYS = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.builds(lambda k, extra: f"{k}.{extra}", st.sampled_from(KNOWN_KEYS), WORD),  # one level too deep
    st.lists(WORD, min_size=1, max_size=4).map(".".join),  # made-up sections and keys
)
# YAML texts of every shape a user might type: numbers, bools, nulls, strings, lists, maps
VALUES = st.one_of(
    st.sampled_from(
        [
            "1",
            "0",
            "-3",
            "2.5",
            "1e-3",
            "true",
            "no",
            "null",
            "~",
            "''",
            "adam",
            "cosine",
            "[a, b]",
            "[]",
            "{}",
            "{x: 1}",
            "[1, [2]]",
            ".nan",
            ".inf",
            "'3'",
            "64",
            "bf16-mixed",
            "/tmp/x",
        ]
    ),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_ .,:[]{}'\"!&*#|>%@`", max_size=12
    ),  # often not YAML at all
)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _named(key: str, message: str) -> bool:
    """The message names the override's key, or the first part of it that is at fault."""
    parts = key.split(".")
    prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    return any(re.search(rf"(^|[\s'\"]){re.escape(p)}($|[\s:'\".])", message) for p in prefixes)


@FAST
@given(overrides=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3))
def test_dotted_overrides_validate_or_raise_config_error_naming_the_key(tmp_path, overrides):
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    items = [f"{k}={v}" for k, v in overrides]
    try:
        cfg = load_config(path, items)
    except ConfigError as err:
        msg = str(err)
        assert any(_named(k, msg) for k, _ in overrides), f"{items} -> {msg!r} names none of the keys"
    else:
        assert isinstance(cfg, RunConfig)


@FAST
@given(key=KEYS, value=VALUES)
def test_a_single_override_that_fails_names_exactly_its_key(tmp_path, key, value):
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    try:
        load_config(path, [f"{key}={value}"])
    except ConfigError as err:  # an override may load; one that fails must name its key
        assert _named(key, str(err)), f"{key}={value} -> {str(err)!r}"  # noqa: PT017


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=20))
def test_an_override_without_equals_sign_is_a_config_error(text):
    if "=" in text:
        return
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, [text])


@pytest.mark.parametrize("value", ["[", "{a: 1", "'unterminated", "!!python/object:os.system x", "a: b: c"])
def test_an_override_value_that_is_not_yaml_is_a_config_error_naming_the_key(tmp_path, value):
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match=r"trainer\.epochs"):
        load_config(path, [f"trainer.epochs={value}"])
