"""The crossmodal-KD advisor: the MI estimator against the Gaussian closed form, gamma, output, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmdistill.cli import main
from mmdistill.errors import DataError
from mmdistill.mfh.advisor import advise, gamma_from_r2, gaussian_mi, gaussian_mi_closed_form
from mmdistill.mfh.venn import VennSpec, draw

torch.set_num_threads(1)


@pytest.mark.parametrize("p,q,seed", [(1, 1, 0), (3, 2, 1), (4, 4, 2)])
def test_gaussian_mi_matches_the_closed_form_on_jointly_gaussian_data(p, q, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((p + q, p + q))
    cov = a @ a.T + 0.5 * np.eye(p + q)
    x = rng.multivariate_normal(np.zeros(p + q), cov, size=20000)
    true = gaussian_mi_closed_form(cov, p)
    assert gaussian_mi(torch.tensor(x[:, :p]), torch.tensor(x[:, p:])) == pytest.approx(true, abs=0.01 + 0.02 * true)


def test_gaussian_mi_of_a_correlated_pair_is_minus_half_log_one_minus_rho_squared_and_zero_when_independent():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((50000, 2))
    rho = 0.8
    x, y = z[:, :1], rho * z[:, :1] + np.sqrt(1 - rho**2) * z[:, 1:]
    assert gaussian_mi(torch.tensor(x), torch.tensor(y)) == pytest.approx(-0.5 * np.log(1 - rho**2), abs=0.01)
    assert gaussian_mi(torch.tensor(z[:, :1]), torch.tensor(z[:, 1:])) < 1e-3


def test_gamma_from_r2_inverts_the_venn_ratios():
    s0, sa, sb = 6, 4, 10
    assert gamma_from_r2(s0 / (s0 + sa), s0 / (s0 + sb)) == pytest.approx(s0 / (s0 + sa + sb))
    assert gamma_from_r2(1.0, 1.0) == 1.0


def test_advisor_ranks_a_mostly_shared_diagram_above_a_mostly_private_one():
    mostly_shared = draw(VennSpec(s0=16, sa=2, sb=2, hyperplane="ones"), 0, n_train=600).train
    mostly_private = draw(VennSpec(s0=2, sa=9, sb=9, hyperplane="ones"), 0, n_train=600).train
    hi = advise(mostly_shared.xa, mostly_shared.xb, mostly_shared.y, bootstrap=20)
    lo = advise(mostly_private.xa, mostly_private.xb, mostly_private.y, bootstrap=20)
    assert hi.gamma > 0.5 > 0.2 > lo.gamma
    assert hi.predicted_gain > lo.predicted_gain and hi.cch_margin > lo.cch_margin
    assert hi.gamma_interval[0] <= hi.gamma <= hi.gamma_interval[1]
    assert 0 <= hi.cch_helps_probability <= 1 and hi.seconds > 0 and hi.examples == 600
    assert "gamma" in hi.text() and hi.recommendation.split(":")[0] in ("distil", "do not distil", "uncertain")


def test_advisor_accepts_plain_numpy_arrays_and_refuses_mismatched_counts():
    rng = np.random.default_rng(0)
    xa, xb, y = rng.standard_normal((100, 5)), rng.standard_normal((100, 3)), rng.integers(0, 3, 100)
    assert advise(xa, xb, y, bootstrap=5).to_dict()["examples"] == 100
    with pytest.raises(DataError, match=r"mismatched example counts.*'x_student': 99"):
        advise(xa, xb[:99], y)
    with pytest.raises(DataError, match="at least 20"):
        advise(xa[:10], xb[:10], y[:10])


def test_advise_command_prints_json(capsys):
    assert main(["advise", "--dataset", "venn", "--param", "n_train=300", "--bootstrap", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["teacher"] == "a" and out["student"] == "b" and 0 <= out["gamma"] <= 1
    assert set(out) >= {"cch_margin", "cch_helps_probability", "predicted_gain_interval", "recommendation", "seconds"}


def test_advise_command_from_a_config_needs_one_modality_each(tiny_config, capsys):
    assert main(["advise", "--config", str(tiny_config())]) == 2
    assert "one teacher and one student modality" in capsys.readouterr().err
