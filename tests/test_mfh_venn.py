"""The modality Venn diagram generator: official arrays, ratios, extensions, and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdistill.data import build_splits
from mmdistill.data.generated.venn import VennSpec, draw, preset_settings, preset_spec, spec_from_ratios
from mmdistill.errors import ConfigError

torch.set_num_threads(1)


# The official gauss/main.py and gauss/main_modify_gamma.py generators, transcribed with an explicit
# RandomState in place of np.random.seed + np.random.randn (the same stream).
def _official_main(rng, a, n, mode, x1_dim, x2_dim, xs1_dim, xs2_dim, overlap_dim=-1):
    if mode == "increase_gamma":
        xs = rng.randn(n, xs1_dim + xs2_dim)
        y = (np.dot(xs, a[0 : xs1_dim + xs2_dim]) > 0).ravel()
        x2 = rng.randn(n, x2_dim)
        x2[:, 0:xs2_dim] = xs[:, 0:xs2_dim]
        x1 = rng.randn(n, x1_dim)
        lo = xs2_dim - overlap_dim
        x1[:, lo : lo + xs1_dim] = xs[:, lo : lo + xs1_dim]
    else:
        xs = rng.randn(n, x1_dim)
        y = (np.dot(xs, a[0:x1_dim]) > 0).ravel()
        x2 = rng.randn(n, x2_dim)
        x2[:, 0:xs2_dim] = xs[:, 0:xs2_dim]
        x1 = rng.randn(n, x1_dim)
        x1[:, 0 : xs1_dim + xs2_dim] = xs[:, 0 : xs1_dim + xs2_dim]
    return torch.Tensor(x1), torch.Tensor(x2), torch.LongTensor(y)


def _official_modify_gamma(rng, n, xs1_dim, xs2_dim):
    xs = rng.randn(n, xs1_dim + xs2_dim)
    y = (np.dot(xs, np.ones(500)[0 : xs1_dim + xs2_dim]) > 0).ravel()
    x1 = rng.randn(n, 50)
    x1[:, 0 : xs1_dim + xs2_dim] = xs
    x2 = rng.randn(n, 50)
    x2[:, 0:xs2_dim] = xs[:, 0:xs2_dim]
    return torch.Tensor(x1), torch.Tensor(x2), torch.LongTensor(y)


def _assert_same(sample, official):
    x1, x2, y = official
    assert torch.equal(sample.xa, x1) and torch.equal(sample.xb, x2) and torch.equal(sample.y, y)


@pytest.mark.parametrize("overlap,seed", [(0, 0), (4, 3), (10, 7)])
def test_vary_gamma_preset_draws_the_official_arrays(overlap, seed):
    rng = np.random.RandomState(seed)
    a = rng.randn(500)
    dims = {"x1_dim": 25, "x2_dim": 50, "xs1_dim": 10, "xs2_dim": 10, "overlap_dim": overlap}
    train = _official_main(rng, a, 200, "increase_gamma", **dims)
    test = _official_main(np.random.RandomState(seed + 1), a, 1000, "increase_gamma", **dims)
    d = draw(preset_spec("vary-gamma", overlap), seed)
    _assert_same(d.train, train)
    _assert_same(d.test, test)


@pytest.mark.parametrize("k,seed", [(0, 1), (20, 2), (40, 5)])
def test_vary_alpha_preset_draws_the_official_arrays(k, seed):
    rng = np.random.RandomState(seed)
    a = rng.randn(500)
    dims = {"x1_dim": 50, "x2_dim": 50, "xs1_dim": k, "xs2_dim": 10}
    train = _official_main(rng, a, 200, "increase_alpha", **dims)
    test = _official_main(np.random.RandomState(seed + 1), a, 1000, "increase_alpha", **dims)
    d = draw(preset_spec("vary-alpha", k), seed)
    _assert_same(d.train, train)
    _assert_same(d.test, test)


def test_modify_gamma_preset_draws_train_test_then_the_fresh_kd_sample_from_one_stream():
    rng = np.random.RandomState(42)
    official = [_official_modify_gamma(rng, n, 10, 15) for n in (200, 1000, 200)]
    d = draw(preset_spec("modify-gamma", 15), 42, n_extra=(200,))
    _assert_same(d.train, official[0])
    _assert_same(d.test, official[1])
    _assert_same(d.extra[0], official[2])


def test_presets_report_the_papers_ratios():
    for o in preset_settings("vary-gamma"):
        s = preset_spec("vary-gamma", o)
        assert s.gamma == pytest.approx(o / (20 - o))
        assert s.alpha == pytest.approx((10 - o) / 10) and s.beta == pytest.approx((10 - o) / 10)
    for k in preset_settings("vary-alpha"):
        s = preset_spec("vary-alpha", k)
        assert (s.alpha, s.beta, s.gamma) == pytest.approx((k / (k + 10), 0.0, 10 / (k + 10)))
    for xs2 in preset_settings("modify-gamma"):
        s = preset_spec("modify-gamma", xs2)
        assert (s.gamma, s.alpha, s.beta) == pytest.approx((xs2 / (xs2 + 10), 10 / (xs2 + 10), 0.0))


def test_label_is_the_side_of_the_hyperplane_of_the_latents_the_modalities_hold():
    spec = VennSpec(s0=3, sa=4, sb=5, dim_a=12, dim_b=10, a_offset=2)
    d = draw(spec, seed=11, n_train=500)
    z = torch.cat([d.train.xb[:, :8], d.train.xa[:, 2 + 3 : 2 + 7]], dim=1).double()  # [b-only, shared | a-only]
    assert torch.equal(d.train.xb[:, 5:8], d.train.xa[:, 2:5])  # the shared latents appear in both
    y = (z @ torch.as_tensor(d.hyperplane) > 0).long()
    assert (y == d.train.y).float().mean() > 0.99  # float32 storage may flip points on the plane


def test_label_noise_flips_about_the_requested_share_and_leaves_the_inputs_alone():
    clean = draw(VennSpec(), seed=4, n_train=5000)
    noisy = draw(VennSpec(label_noise=0.2), seed=4, n_train=5000)
    assert torch.equal(clean.train.xa, noisy.train.xa) and torch.equal(clean.train.xb, noisy.train.xb)
    flipped = (clean.train.y != noisy.train.y).float().mean().item()
    assert 0.17 < flipped < 0.23


def test_mixing_is_a_fixed_orthogonal_map_per_modality():
    plain = draw(VennSpec(), seed=5)
    mixed = draw(VennSpec(mix=True), seed=5)
    qa, qb = (torch.as_tensor(q, dtype=torch.float64) for q in mixed.mixing)
    assert torch.allclose(qa @ qa.T, torch.eye(qa.shape[0], dtype=torch.float64), atol=1e-10)
    for mod, q in (("xa", qa), ("xb", qb)):
        for split in ("train", "test"):
            recovered = getattr(getattr(mixed, split), mod).double() @ q.T
            assert torch.allclose(recovered, getattr(getattr(plain, split), mod).double(), atol=1e-4)
    assert qa.abs().max() < 0.9  # not a permutation: decisive information is spread over channels
    assert torch.equal(plain.train.y, mixed.train.y)


def test_more_classes_are_the_argmax_of_random_directions():
    spec = VennSpec(s0=4, sa=2, sb=2, hidden=0, dim_a=10, dim_b=10, num_classes=4)
    d = draw(spec, seed=2, n_train=2000)
    assert set(d.train.y.tolist()) == {0, 1, 2, 3}
    z = torch.cat([d.train.xb[:, :6], d.train.xa[:, 4:6]], dim=1).double()
    assert ((z @ torch.as_tensor(d.hyperplane)).argmax(1) == d.train.y).float().mean() > 0.99


def test_spec_from_ratios_lands_on_the_target_when_the_dims_allow():
    s = spec_from_ratios(0.5, 0.2, decisive=40)
    assert (s.s0, s.sa, s.sb) == (20, 5, 15)
    assert (s.gamma, s.alpha) == pytest.approx((0.5, 0.2))
    assert spec_from_ratios(1.0, 0.0, decisive=20).beta == 0.0


@pytest.mark.parametrize(
    "make, constraint",
    [
        (lambda: VennSpec(dim_a=0), "dim_a: must be a positive integer"),
        (lambda: VennSpec(dim_b=-3), "dim_b: must be a positive integer"),
        (lambda: VennSpec(s0=-1), "s0: must be a non-negative integer"),
        (lambda: VennSpec(hidden=-2), "hidden: must be a non-negative integer"),
        (lambda: VennSpec(s0=10, sa=20, dim_a=25), "more decisive channels than modality a has"),
        (lambda: VennSpec(s0=4, sa=6, a_offset=20, dim_a=25), "a_offset + s0 + sa <= dim_a"),
        (lambda: VennSpec(s0=5, sa=0, sb=30, dim_a=25, dim_b=20), "more decisive channels than modality b has"),
        (lambda: VennSpec(s0=0, sa=0), "modality a sees no decisive latent"),
        (lambda: VennSpec(num_classes=1), "num_classes"),
        (lambda: VennSpec(label_noise=1.0), "label_noise"),
        (lambda: VennSpec(hyperplane="ones", num_classes=3), "two classes only"),
        (lambda: spec_from_ratios(1.5, 0.0), "gamma: must lie in [0, 1]"),
        (lambda: spec_from_ratios(-0.1, 0.0), "gamma: must lie in [0, 1]"),
        (lambda: spec_from_ratios(0.8, 0.5), "gamma <= 1 - alpha"),
        (lambda: preset_spec("vary-gamma", 12), "vary-gamma: setting"),
        (lambda: preset_spec("vary-beta", 1), "unknown preset"),
        (lambda: draw(VennSpec(), 0, n_train=0), "n_train"),
    ],
)
def test_impossible_settings_name_the_constraint_that_failed(make, constraint):
    with pytest.raises(ConfigError) as err:
        make()
    assert constraint in str(err.value)


def test_venn_is_a_registered_dataset_with_modalities_a_and_b():
    splits = build_splits("venn", {"preset": "vary-gamma", "setting": 4}, seed=3)
    assert splits.train.modality_names == ["a", "b"]
    assert [s.shape for s in splits.train.specs()] == [(25,), (50,)]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (200, 200, 1000)
    official = draw(preset_spec("vary-gamma", 4), 3)
    assert torch.equal(splits.train.tensors["b"], official.train.xb) and torch.equal(
        splits.test.labels, official.test.y
    )
    assert splits.info["gamma"] == pytest.approx(4 / 16)
    custom = build_splits("venn", {"s0": 2, "sa": 3, "sb": 1, "dim_a": 8, "dim_b": 6, "num_classes": 3}, seed=0)
    assert custom.num_classes == 3 and custom.info["beta"] == pytest.approx(1 / 3)


def test_venn_dataset_rejects_a_preset_without_setting_and_unknown_parameters():
    with pytest.raises(ConfigError, match="needs a setting"):
        build_splits("venn", {"preset": "vary-alpha"})
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_splits("venn", {"overlap": 3})
