"""MFH Algorithm 1: vectorised scores equal the per-channel loop, find the shared channels, refuse bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdistill.data import build_splits
from mmdistill.data.generated.venn import draw, preset_spec
from mmdistill.errors import ConfigError, DataError
from mmdistill.mfh.algorithm1 import (
    INPUT,
    algorithm1,
    channel_salience,
    channel_salience_loop,
    precision_at,
    train_pair,
)
from mmdistill.mfh.ensemble import make_mlp
from mmdistill.models import EncoderConfig, ModelConfig, build_model

torch.set_num_threads(1)


def _pair(seed=0, t_hidden=(16, 8), n=60, d_a=12, d_b=7, k=3):
    torch.manual_seed(seed)
    return make_mlp(d_a, t_hidden, k), make_mlp(d_b, (), k), torch.randn(n, d_a), torch.randn(n, d_b)


def _assert_same_scores(a, b):
    assert torch.allclose(a.raw, b.raw, rtol=1e-4, atol=1e-6)
    assert torch.allclose(a.scores, b.scores, atol=1e-4)


@pytest.mark.parametrize("layer", [INPUT, "0", "1", "2", "3"])
def test_vectorised_scores_equal_the_per_channel_loop_at_every_layer_of_an_mlp(layer):
    t, s, xa, xb = _pair()
    fast = channel_salience(t, s, xa, xb, layer, permutations=3, seed=5)
    _assert_same_scores(fast, channel_salience_loop(t, s, xa, xb, layer, permutations=3, seed=5))


def test_rank_one_shortcut_and_small_chunks_change_nothing():
    t, s, xa, xb = _pair()
    ref = channel_salience(t, s, xa, xb, "1", permutations=4, rank_one=False)
    assert ref.info["rank_one"] is False
    fast = channel_salience(t, s, xa, xb, "1", permutations=4)
    assert fast.info["rank_one"] is True
    _assert_same_scores(fast, ref)
    _assert_same_scores(channel_salience(t, s, xa, xb, "1", permutations=4, chunk_elements=100, rank_one=False), ref)


class _SkipNet(nn.Module):
    """Channel-first conv features, plus a skip path from the input that bypasses the hooked layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.head = nn.Linear(4 * 5, 3)
        self.skip = nn.Linear(10, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x.view(-1, 2, 5)))
        return self.head(h.flatten(1)) + self.skip(x)


def test_channel_first_conv_layer_and_a_skip_path_that_bypasses_the_layer():
    torch.manual_seed(1)
    t, s = _SkipNet(), make_mlp(6, (), 3)
    xa, xb = torch.randn(40, 10), torch.randn(40, 6)
    fast = channel_salience(t, s, xa, xb, "conv", permutations=3)
    assert fast.scores.shape == (4,) and fast.info["cheap_suffix"] is False  # had to repeat the input
    _assert_same_scores(fast, channel_salience_loop(t, s, xa, xb, "conv", permutations=3))


def test_dict_batches_of_a_multimodal_classifier_by_module_path():
    splits = build_splits("venn", {"n_train": 80}, seed=0)
    tr = splits.train
    torch.manual_seed(0)
    cfg = lambda m: ModelConfig(modalities=[m], encoder=EncoderConfig(type="mlp", hidden=[8], out_dim=6))  # noqa: E731
    t, s = build_model(cfg("a"), tr.specs(), 2), build_model(cfg("b"), tr.specs(), 2)
    xa, xb = {"a": tr.tensors["a"]}, {"b": tr.tensors["b"]}
    names = [n for n, _ in t.named_modules() if n]
    layer = next(n for n in names if n.startswith("encoders.a") and isinstance(dict(t.named_modules())[n], nn.ReLU))
    fast = channel_salience(t, s, xa, xb, layer, permutations=2)
    _assert_same_scores(fast, channel_salience_loop(t, s, xa, xb, layer, permutations=2))
    _assert_same_scores(
        channel_salience(t, s, xa, xb, INPUT, permutations=2),
        channel_salience_loop(t, s, xa, xb, INPUT, permutations=2),
    )


def test_scores_are_min_max_normalised_and_raw_scores_are_distance_growth():
    t, s, xa, xb = _pair()
    r = channel_salience(t, s, xa, xb, INPUT, permutations=5)
    assert r.scores.min() == 0.0 and r.scores.max() == pytest.approx(1.0)
    # raw score by hand for channel 3: mean over the same 5 permutations of the MSE growth
    g = torch.Generator().manual_seed(0)
    perms = [torch.randperm(60, generator=g) for _ in range(5)]
    with torch.no_grad():
        base = ((t(xa) - s(xb)) ** 2).mean()
        grown = []
        for p in perms:
            xp = xa.clone()
            xp[:, 3] = xa[p, 3]
            grown.append(((t(xp) - s(xb)) ** 2).mean())
    assert r.raw[3] == pytest.approx(float(torch.stack(grown).mean() - base), rel=1e-4, abs=1e-7)
    # a channel the teacher ignores scores exactly zero growth
    with torch.no_grad():
        t[0].weight[:, 4] = 0.0
    r = channel_salience(t, s, xa, xb, INPUT, permutations=5)
    assert r.raw[4].abs() < 1e-6
    assert r.scores[4] == pytest.approx(float((0 - r.raw.min()) / (r.raw.max() - r.raw.min())), abs=1e-5)


@pytest.mark.parametrize("xs2", [5, 20])
def test_joint_algorithm1_finds_the_shared_channels_of_the_table2_data(xs2):
    d = draw(preset_spec("modify-gamma", xs2), 3)
    torch.manual_seed(3)
    t, s = make_mlp(50, (), 2), make_mlp(50, (), 2)
    r = algorithm1(t, s, d.train.xa, d.train.xb, d.train.y, variant="joint", epochs=300)
    assert precision_at(r.top(xs2), torch.arange(xs2)) >= 0.9
    # the 30 - xs2 ... pure-noise channels (beyond the 10 + xs2 decisive ones) never reach the top
    assert set(r.top(xs2).tolist()) <= set(range(xs2 + 10))


def test_separate_variant_trains_each_network_alone_without_the_mse_term():
    d = draw(preset_spec("modify-gamma", 10), 0)
    torch.manual_seed(0)
    t, s = make_mlp(50, (), 2), make_mlp(50, (), 2)
    t2, s2 = make_mlp(50, (), 2), make_mlp(50, (), 2)
    t2.load_state_dict(t.state_dict()), s2.load_state_dict(s.state_dict())
    train_pair(t, s, d.train.xa, d.train.xb, d.train.y, joint=False, epochs=50)
    train_pair(t2, s2, d.train.xa, d.train.xb, d.train.y, joint=True, epochs=50)
    assert not torch.allclose(t.weight, t2.weight)
    sep = algorithm1(t, s, d.train.xa, d.train.xb, d.train.y, variant="pretrained")
    assert sep.info["variant"] == "pretrained" and set(sep.top(10).tolist()) <= set(range(20))


def test_missing_layer_lists_the_layer_names():
    t, s, xa, xb = _pair()
    with pytest.raises(ConfigError, match=r"'encoder\.9' not found.*layers: 0, 1, 2, 3, 4"):
        channel_salience(t, s, xa, xb, "encoder.9")
    with pytest.raises(ConfigError, match="layers: 0, 1"):  # before any training
        algorithm1(t, s, xa, xb, torch.zeros(60, dtype=torch.long), "nope")


class _Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.pool = _SumChannels()
        self.both = _TupleOut()

    def forward(self, x):
        return self.body(x) + self.pool(x).unsqueeze(1) + self.both(x)[0]


class _SumChannels(nn.Module):
    def forward(self, x):
        return x.sum(1)


class _TupleOut(nn.Module):
    def forward(self, x):
        return x[:, :3], x[:, 3:]


def test_layer_output_must_be_a_2d_or_channel_first_tensor():
    t, s = _Pooled(), make_mlp(2, (), 3)
    xa, xb = torch.randn(10, 4), torch.randn(10, 2)
    with pytest.raises(ConfigError, match=r"2-D \(N, C\) or channel-first.*shape \(10,\)"):
        channel_salience(t, s, xa, xb, "pool")
    with pytest.raises(ConfigError, match="returns tuple, expected a tensor"):
        channel_salience(t, s, xa, xb, "both")


def test_mismatched_example_counts_are_refused():
    t, s, xa, xb = _pair(n=20)
    with pytest.raises(DataError, match=r"mismatched example counts.*'teacher inputs': 20, 'student inputs': 19"):
        channel_salience(t, s, xa, xb[:19])
    with pytest.raises(DataError, match=r"'labels': 18"):
        algorithm1(t, s, xa, xb, torch.zeros(18, dtype=torch.long))
    with pytest.raises(DataError, match="different example counts"):
        channel_salience(t, s, {"a": xa, "c": xa[:5]}, xb)
