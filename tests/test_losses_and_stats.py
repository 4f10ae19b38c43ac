import math

import numpy as np
import pytest
import torch

from mmdistill.methods.kd import kd_loss
from mmdistill.stats import average_ranks, paired_difference, spearman, summarize

S = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
T = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])


def numpy_kd(s, t, temp):
    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ps, pt = softmax(s.numpy() / temp), softmax(t.numpy() / temp)
    return temp**2 * (pt * (np.log(pt) - np.log(ps))).sum(1).mean()


@pytest.mark.parametrize("temp, expected", [(1.0, 0.982455849647522), (4.0, 1.1711821556091309)])
def test_kd_loss_matches_precomputed_and_formula(temp, expected):
    value = kd_loss(S, T, temp).item()
    assert value == pytest.approx(expected, rel=1e-6)
    assert value == pytest.approx(numpy_kd(S, T, temp), rel=1e-5)


def test_kd_loss_is_zero_when_student_equals_teacher_and_batchmean():
    assert kd_loss(T, T, 3.0).item() == pytest.approx(0.0, abs=1e-7)
    doubled = kd_loss(torch.cat([S, S]), torch.cat([T, T]), 2.0)
    assert doubled.item() == pytest.approx(kd_loss(S, T, 2.0).item(), rel=1e-6), (
        "batchmean: duplicating the batch keeps the value"
    )


def test_summarize_t_interval():
    s = summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0)
    assert s["ci_high"] - s["mean"] == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)


def test_paired_difference_uses_per_seed_differences():
    d = paired_difference([0.8, 0.9, 1.0], [0.7, 0.8, 0.9])
    assert d["mean"] == pytest.approx(0.1) and d["std"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="paired"):
        paired_difference([1.0], [1.0, 2.0])


def test_average_ranks_and_spearman_match_scipy_on_ties_and_hand_worked_values():
    from scipy.stats import rankdata, spearmanr, t

    assert average_ranks([10.0, 20.0, 20.0, 5.0]).tolist() == [2.0, 3.5, 3.5, 1.0]  # the tie shares ranks 3 and 4
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 0, 1, -1): 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 5, 12).astype(float), rng.normal(size=12)  # many ties in x
        assert average_ranks(x).tolist() == rankdata(x).tolist()
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    # the t quantile moved from scipy.stats.t.ppf to scipy.special.stdtrit: the same numbers
    for n in (2, 3, 5, 10, 30):
        expected = t.ppf(0.975, n - 1) * np.std(np.arange(n), ddof=1) / math.sqrt(n)
        assert summarize(np.arange(n))["ci_high"] == (n - 1) / 2 + expected
