"""The paper's synthetic studies: full 10-seed protocol, the trends the paper reports, and the
equality of one (setting, seed) with the official one-model-at-a-time script."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mmdistill.data.generated.venn import draw, preset_spec
from mmdistill.stats import spearman
from mmdistill.studies.mfh_synthetic import summarize, vary_alpha, vary_gamma, venn_plane

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gamma_study():
    return vary_gamma(range(10))


@pytest.fixture(scope="module")
def alpha_study():
    return vary_alpha(range(10))


def test_vary_gamma_has_one_row_per_setting_and_seed(gamma_study):
    assert len(gamma_study.rows) == 60 and gamma_study.runs == 180
    assert sorted({r["seed"] for r in gamma_study.rows}) == list(range(10))
    for row in gamma_study.rows:
        assert all(0.0 <= row[k] <= 1.0 for k in ("teacher_acc", "nokd_acc", "kd_acc"))


def test_kd_gain_rises_with_gamma(gamma_study):
    s = gamma_study.summary()
    assert [round(x["gamma"], 3) for x in s] == [0.0, 0.111, 0.25, 0.429, 0.667, 1.0]
    assert spearman([x["gamma"] for x in s], [x["delta_mean"] for x in s]) >= 0.9
    assert s[0]["delta_mean"] <= 0.5  # about zero or negative at gamma 0
    assert s[-1]["delta_mean"] >= 1.5  # clearly positive at gamma 1
    assert s[-1]["delta_mean"] > s[-1]["delta_std"]


def test_better_teacher_from_a_specific_features_does_not_help_the_student(alpha_study):
    s = alpha_study.summary()
    assert [x["alpha"] for x in s] == pytest.approx([0.0, 0.5, 2 / 3, 0.75, 0.8])
    assert s[-1]["teacher_mean"] - s[0]["teacher_mean"] > 25.0
    for x in s:
        assert abs(x["kd_mean"] - x["nokd_mean"]) < 2.0


def _official_train(x, y, epochs, teacher=None, x_teacher=None):
    """gauss/main.py's train / train_kd: nn.Linear, SGD lr 0.1, CrossEntropyLoss + KLDivLoss()."""
    model = nn.Linear(x.shape[1], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        out = model(x)
        loss = nn.CrossEntropyLoss()(out, y)
        if teacher is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss = loss + nn.KLDivLoss()(torch.log_softmax(out, 1), torch.softmax(teacher(x_teacher), 1))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model


def test_a_run_of_the_sweep_equals_the_official_script_run_alone(gamma_study):
    seed, overlap = 3, 10
    d = draw(preset_spec("vary-gamma", overlap), seed)
    torch.manual_seed(seed + 1)  # the script re-seeds before the test data and builds the models after
    teacher = _official_train(d.train.xa, d.train.y, 1000)
    teacher.requires_grad_(False)
    kd = _official_train(d.train.xb, d.train.y, 1000, teacher=teacher, x_teacher=d.train.xa)
    nokd = _official_train(d.train.xb, d.train.y, 1000)
    with torch.no_grad():
        acc = [
            (m(x).argmax(1) == d.test.y).float().mean().item()
            for m, x in ((teacher, d.test.xa), (nokd, d.test.xb), (kd, d.test.xb))
        ]
    row = next(r for r in gamma_study.rows if r["seed"] == seed and r["setting"] == f"o={overlap}")
    assert [row["teacher_acc"], row["nokd_acc"], row["kd_acc"]] == pytest.approx(acc, abs=0.0015)


def test_venn_plane_covers_the_feasible_triangle_only():
    result = venn_plane(seeds=[0], gammas=(0.5, 1.0), alphas=(0.0, 0.5, 0.8), decisive=20, epochs=50)
    cells = {(c["gamma_target"], c["alpha_target"]): c for c in result.extra["grid"]}
    assert set(cells) == {(0.5, 0.0), (0.5, 0.5), (1.0, 0.0)}
    assert (cells[(0.5, 0.5)]["s0"], cells[(0.5, 0.5)]["sa"], cells[(0.5, 0.5)]["sb"]) == (10, 10, 0)
    assert cells[(1.0, 0.0)]["beta"] == 0.0 and cells[(0.5, 0.0)]["beta"] == pytest.approx(0.5)
    assert len(result.rows) == 3 and all(np.isfinite(c["delta_mean"]) for c in cells.values())


def test_summary_uses_population_std_in_points():
    rows = [
        {
            "setting": "x",
            "gamma": 0.5,
            "alpha": 0.5,
            "beta": 0.5,
            "seed": s,
            "teacher_acc": t,
            "nokd_acc": 0.6,
            "kd_acc": k,
        }
        for s, t, k in ((0, 0.7, 0.61), (1, 0.8, 0.65))
    ]
    (entry,) = summarize(rows)
    assert entry["teacher_mean"] == pytest.approx(75.0) and entry["teacher_std"] == pytest.approx(5.0)
    assert entry["delta_mean"] == pytest.approx(3.0) and entry["delta_std"] == pytest.approx(2.0)
