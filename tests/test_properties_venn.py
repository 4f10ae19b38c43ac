"""Property: Venn generator parameters give consistent datasets or raise ConfigError (Hypothesis).

Valid structural parameters must give splits whose reported gamma, alpha and beta lie in
[0, 1] and equal the Venn formulas of the spec (gamma = s0 / (s0 + sa + sb), alpha =
sa / (s0 + sa), beta = sb / (s0 + sb)), with the asked shapes and labels in range; anything
else must raise ConfigError, never another exception.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdistill.data import build_splits
from mmdistill.data.generated.venn import spec_from_ratios
from mmdistill.errors import ConfigError

SMALL = st.integers(-2, 12)
ODD = st.sampled_from(["3", 2.5, None, [1], float("nan"), -1.5])  # what a YAML typo gives
PARAMS = st.fixed_dictionaries(
    {
        "n_train": st.integers(-1, 24),
        "n_val": st.integers(-1, 24),
        "n_test": st.integers(-1, 24),
    },
    optional={
        "s0": st.one_of(SMALL, ODD),
        "sa": st.one_of(SMALL, ODD),
        "sb": st.one_of(SMALL, ODD),
        "hidden": st.one_of(st.integers(-1, 4), ODD),
        "dim_a": st.one_of(st.integers(-1, 30), ODD),
        "dim_b": st.one_of(st.integers(-1, 30), ODD),
        "a_offset": st.one_of(st.integers(-1, 5), ODD),
        "num_classes": st.one_of(st.integers(0, 4), ODD),
        "hyperplane": st.sampled_from(["gaussian", "ones", "planar", 3]),
        "label_noise": st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))),
        "mix": st.booleans(),
        "preset": st.sampled_from(["vary-gamma", "vary-alpha", "modify-gamma", "nope", None]),
        "setting": st.one_of(st.integers(-1, 45), st.none()),
    },
)
FAST = settings(max_examples=120, deadline=None)


@FAST
@given(params=PARAMS, seed=st.integers(0, 3))
def test_venn_parameters_give_a_consistent_dataset_or_a_config_error(params, seed):
    try:
        splits = build_splits("venn", params, seed=seed)
    except ConfigError:
        return
    spec, info = splits.info["spec"], splits.info
    for name in ("gamma", "alpha", "beta"):
        assert 0.0 <= info[name] <= 1.0, (name, info[name], params)
    assert math.isclose(info["gamma"], spec.s0 / (spec.s0 + spec.sa + spec.sb))
    assert math.isclose(info["alpha"], spec.sa / (spec.s0 + spec.sa))
    assert math.isclose(info["beta"], spec.sb / (spec.s0 + spec.sb))
    for key in ("s0", "sa", "sb", "dim_a", "dim_b", "num_classes"):
        if params.get(key) is not None:  # None means "the preset's / the default value"; "3" is read as 3
            assert getattr(spec, key) == int(params[key])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (
        params["n_train"],
        params["n_val"],
        params["n_test"],
    )
    for part in (splits.train, splits.val, splits.test):
        assert part.tensors["a"].shape[1:] == (spec.dim_a,) and part.tensors["b"].shape[1:] == (spec.dim_b,)
        assert 0 <= int(part.labels.min()) and int(part.labels.max()) < spec.num_classes


@FAST
@given(gamma=st.floats(-0.5, 1.5), alpha=st.floats(-0.5, 1.5), decisive=st.integers(-2, 40))
def test_spec_from_ratios_lands_near_the_target_or_raises_config_error(gamma, alpha, decisive):
    try:
        spec = spec_from_ratios(gamma, alpha, decisive)
    except ConfigError:
        return
    assert 0.0 <= gamma <= 1.0 and 0.0 <= alpha <= 1.0 and gamma <= 1.0 - alpha + 1e-9 and decisive > 0
    assert spec.s0 + spec.sa + spec.sb == decisive
    assert abs(spec.gamma - gamma) <= 0.5 / decisive + 1e-9
    for name in ("gamma", "alpha", "beta"):
        assert 0.0 <= getattr(spec, name) <= 1.0


@pytest.mark.parametrize(
    "params",
    [
        {"n_train": "3"},
        {"n_train": 2.5},
        {"n_val": None},
        {"n_test": [1]},
        {"label_noise": "0.1"},
        {"preset": "vary-gamma", "setting": float("nan")},
        {"preset": "vary-gamma", "setting": [1]},
    ],
    ids=str,
)
def test_wrongly_typed_venn_parameters_are_config_errors(params):
    try:
        build_splits("venn", {"n_train": 20, "n_val": 20, "n_test": 20, **params})
    except ConfigError:
        return
    except Exception as err:
        raise AssertionError(f"{params}: {type(err).__name__}: {err}") from err
