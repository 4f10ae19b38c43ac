"""The batched ensemble trainer: each run equals the same run trained alone."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from mmdistill.data.generated.venn import draw, preset_spec
from mmdistill.errors import ConfigError
from mmdistill.mfh.ensemble import Run, fit_sequential, kd_kl_mean, linear_layers, make_mlp, train_runs

torch.set_num_threads(1)


def _runs(hidden=(), dtype=torch.float32, seeds=(0, 1)):
    """Teacher (25 inputs), no-KD and KD student (50 inputs) per draw, as in the MFH studies."""
    torch.manual_seed(123)
    runs = []
    for o, seed in zip((2, 10), seeds):
        d = draw(preset_spec("vary-gamma", o), seed)
        xa, xb = d.train.xa.to(dtype), d.train.xb.to(dtype)
        t = torch.softmax(torch.randn(200, 2, dtype=dtype) * 2, -1)
        runs += [
            Run(make_mlp(25, hidden).to(dtype), xa, d.train.y),
            Run(make_mlp(50, hidden).to(dtype), xb, d.train.y),
            Run(make_mlp(50, hidden).to(dtype), xb, d.train.y, soft_targets=t, ce_weight=1.0, kd_weight=1.0),
        ]
    return runs


def _alone(runs, epochs):
    copies = [Run(copy.deepcopy(r.model), r.x, r.y, r.soft_targets, r.ce_weight, r.kd_weight) for r in runs]
    return fit_sequential(copies, epochs=epochs)


def _max_error(trained, models, runs):
    err = 0.0
    for i, (model, run) in enumerate(zip(models, runs)):
        for layer, (w, b) in zip(linear_layers(model), trained.layer_params(i, run.x.shape[1])):
            err = max(err, (layer.weight - w).abs().max().item(), (layer.bias - b).abs().max().item())
    return err


def test_linear_runs_equal_the_same_runs_trained_alone():
    runs = _runs()[:3]  # a teacher (25 inputs, padded), a no-KD and a KD student on one draw; 1000 epochs
    trained = train_runs(runs, epochs=1000)
    models = _alone(runs, epochs=1000)
    assert _max_error(trained, models, runs) < 1e-5
    with torch.no_grad():
        alone = torch.stack([m(r.x) for m, r in zip(models, runs)])
    assert torch.allclose(trained.logits([r.x for r in runs]), alone, atol=1e-4)


def test_mlp_runs_equal_the_same_runs_trained_alone_in_float64():
    runs = _runs(hidden=(8,), dtype=torch.float64)
    trained = train_runs(runs, epochs=300)
    models = _alone(runs, epochs=300)
    assert _max_error(trained, models, runs) < 1e-9


def test_two_hidden_layers_also_match():
    runs = _runs(hidden=(6, 5), dtype=torch.float64)[:3]
    assert _max_error(train_runs(runs, epochs=100), _alone(runs, epochs=100), runs) < 1e-9


def test_padded_input_channels_keep_zero_weights():
    runs = _runs()
    trained = train_runs(runs, epochs=200)
    assert trained.width == 50
    for i in (0, 3):  # the teachers read 25 channels
        assert torch.count_nonzero(trained.weights[0][i][:, 25:]) == 0


def test_grouping_runs_that_share_inputs_changes_nothing():
    runs = _runs()
    grouped = train_runs(runs, epochs=300)
    separate = train_runs(runs, epochs=300, group_shared_inputs=False)
    for a, b in zip(grouped.weights + grouped.biases, separate.weights + separate.biases):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_run_does_not_depend_on_the_other_runs():
    runs = _runs()
    before = train_runs(runs, epochs=200)
    changed = list(runs)
    changed[0] = Run(runs[0].model, runs[0].x, 1 - runs[0].y)  # flip the first teacher's labels
    after = train_runs(changed, epochs=200)
    assert not torch.allclose(before.weights[0][0], after.weights[0][0])
    assert torch.allclose(before.weights[0][1:], after.weights[0][1:], atol=1e-6)


def test_kd_term_is_kldivloss_with_its_default_mean_reduction():
    torch.manual_seed(0)
    s, t = torch.randn(7, 3), torch.softmax(torch.randn(7, 3), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nn.KLDivLoss()(torch.log_softmax(s, 1), t)
    assert torch.allclose(kd_kl_mean(s, t), expected)
    assert torch.allclose(kd_kl_mean(s, t) * 21, (t * (t.log() - torch.log_softmax(s, 1))).sum())


def test_inconsistent_runs_are_errors():
    runs = _runs()
    with pytest.raises(ConfigError, match="kd_weight"):
        train_runs([Run(runs[0].model, runs[0].x, runs[0].y, kd_weight=1.0)])
    with pytest.raises(ConfigError, match="inputs"):
        train_runs([runs[0], Run(runs[1].model, runs[1].x[:100], runs[1].y[:100])])
    with pytest.raises(ConfigError, match="layer shapes"):
        train_runs([runs[0], Run(make_mlp(50, (4,)), runs[1].x, runs[1].y)])
    with pytest.raises(ConfigError, match="nn.Linear"):
        train_runs([Run(nn.Sequential(nn.Linear(25, 2), nn.Tanh()), runs[0].x, runs[0].y)])
