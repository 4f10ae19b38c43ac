"""DKD, DIST and logit-standardised KD: batches, temperatures and weights, against values written out by hand.

Companions of ``test_methods_handworked.py`` and the peer fixtures, added for the mutants those left alive
(docs/architecture.md, "Mutation testing"): batches of more than one row, a student whose logits are not all
equal at T != 1, weights other than the defaults, and defaults used as given.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmdistill.batch import LABEL
from mmdistill.engine.api import build_method
from mmdistill.masking import Masker
from mmdistill.methods.base import StudentOutputs, TeacherOutputs, weighted_total
from mmdistill.methods.dist import DIST, dist_terms, pearson_distance
from mmdistill.methods.dkd import DecoupledKD, dkd_terms
from mmdistill.methods.logit_std_kd import LogitStandardizedKD, standardize
from mmdistill.registry import METHODS

LN = math.log
torch.set_num_threads(1)


def close(value, expected, tol=1e-6):
    assert float(value) == pytest.approx(float(expected), abs=tol)


# ---- DKD on two rows ----------------------------------------------------------------------------------------
# row 1: student [0, 0, 0], teacher [ln 2, ln 2, 0], label 0 (test_methods_handworked):
#   TCKD = .4 ln 1.2 + .6 ln .9;    NCKD = 2/3 ln(4/3) + 1/3 ln(2/3)
# row 2: the roles swapped, student [ln 2, ln 2, 0], teacher [0, 0, 0], label 0:
#   b_t = [1/3, 2/3], b_s = [.4, .6]          TCKD = 1/3 ln((1/3)/.4) + 2/3 ln((2/3)/.6)
#   non-target: p^t = [1/2, 1/2], p^s = [2/3, 1/3]   NCKD = 1/2 ln((1/2)/(2/3)) + 1/2 ln((1/2)/(1/3))
ROW1 = (0.4 * LN(1.2) + 0.6 * LN(0.9), 2 / 3 * LN(4 / 3) + 1 / 3 * LN(2 / 3))
ROW2 = (1 / 3 * LN((1 / 3) / 0.4) + 2 / 3 * LN((2 / 3) / 0.6), 0.5 * LN(0.75) + 0.5 * LN(1.5))
S2 = torch.tensor([[0.0, 0.0, 0.0], [LN(2), LN(2), 0.0]], dtype=torch.float64)
T2 = torch.tensor([[LN(2), LN(2), 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
Y2 = torch.tensor([0, 0])


def test_dkd_terms_average_the_rows_of_a_batch():
    tckd, nckd = dkd_terms(S2, T2, Y2, 1.0)
    close(tckd, (ROW1[0] + ROW2[0]) / 2)
    close(nckd, (ROW1[1] + ROW2[1]) / 2)


def test_dkd_terms_soften_student_and_teacher_alike():
    # twice the logits at T = 2 are the same distributions: each term is T^2 = 4 times its T = 1 value
    tckd, nckd = dkd_terms(2 * S2, 2 * T2, Y2, 2.0)
    close(tckd, 4 * (ROW1[0] + ROW2[0]) / 2)
    close(nckd, 4 * (ROW1[1] + ROW2[1]) / 2)


def test_dkd_without_warmup_weighs_fully_from_the_first_step_and_counts_steps_exactly():
    method = DecoupledKD(DecoupledKD.Params(temperature=1.0)).train()  # warmup_steps = 0
    out = method.losses({LABEL: Y2}, StudentOutputs(S2), TeacherOutputs(T2))
    close(out["tckd"], (ROW1[0] + ROW2[0]) / 2)
    assert method.steps.dtype == torch.long  # an integer counter: exact at any step, as resume expects
    assert int(method.steps) == 0  # losses() only computes: the count moves in after_step
    method.after_step(step=1, epoch=1)
    assert int(method.steps) == 1
    method.eval()
    method.losses({LABEL: Y2}, StudentOutputs(S2), TeacherOutputs(T2))
    assert int(method.steps) == 1  # evaluation does not advance the warm-up


def test_dkd_warmup_of_one_step_is_zero_before_training():
    method = DecoupledKD(DecoupledKD.Params(temperature=1.0, warmup_steps=1)).eval()
    out = method.losses({LABEL: Y2}, StudentOutputs(S2), TeacherOutputs(T2))
    assert float(out["tckd"]) == 0.0 and float(out["nckd"]) == 0.0


# ---- DIST ---------------------------------------------------------------------------------------------------
def pearson_by_hand(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return 1 - num / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def test_dist_terms_are_row_and_column_pearson_distances_of_the_softmax():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    p, q = F.softmax(s / 2, -1).tolist(), F.softmax(t / 2, -1).tolist()
    inter = sum(pearson_by_hand(p[i], q[i]) for i in range(4)) / 4
    cols = [[row[c] for row in p] for c in range(3)], [[row[c] for row in q] for c in range(3)]
    intra = sum(pearson_by_hand(cols[0][c], cols[1][c]) for c in range(3)) / 3
    got = dist_terms(s, t, 2.0)
    close(got[0], 4 * inter)
    close(got[1], 4 * intra)
    close(pearson_distance(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]]))[0], 2.0)


def test_dist_weighs_inter_by_beta_and_intra_by_gamma():
    torch.manual_seed(1)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.randint(4, (5,))
    method = DIST(DIST.Params(beta=2.0, gamma=3.0, ce_weight=0.5))
    terms = method.losses({LABEL: y}, StudentOutputs(s), TeacherOutputs(t))
    inter, intra = dist_terms(s, t, 1.0)
    expected = 0.5 * F.cross_entropy(s, y) + 2.0 * inter + 3.0 * intra
    assert weighted_total(terms, method.loss_weights()).item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == set(method.loss_weights()) == {"ce", "inter", "intra"}


# ---- logit-standardised KD ----------------------------------------------------------------------------------
def test_standardize_defaults_to_an_eps_of_1e7_and_its_eps_reaches_both_models():
    z = standardize(torch.tensor([[1.0, 2.0, 3.0], [10.0, 12.0, 14.0]]))  # per row: means 2, 12; unbiased stds 1, 2
    assert z.flatten().tolist() == pytest.approx([-1.0, 0.0, 1.0] * 2, abs=1e-6)
    s, t, y = torch.tensor([[0.0, 0.1, 0.3]]), torch.tensor([[1.0, 0.0, 0.5]]), torch.tensor([2])
    method = LogitStandardizedKD(LogitStandardizedKD.Params(eps=1.0, temperature=1.0))
    got = method.losses({LABEL: y}, StudentOutputs(s), TeacherOutputs(t))["kd"]
    zs, zt = (s - s.mean()) / (s.std() + 1.0), (t - t.mean()) / (t.std() + 1.0)
    expected = (F.softmax(zt, -1) * (F.log_softmax(zt, -1) - F.log_softmax(zs, -1))).sum()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


# ---- every method ---------------------------------------------------------------------------------------------
LAYER_PARAMS = {"student_layer": "s", "teacher_layer": "t"}


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_keeps_the_masker_it_is_given(name, toy_splits):
    params = {"mfh_general": {"teacher_layer": "t"}}.get(name)
    if params is None and "student_layer" in METHODS.get(name).Params.model_fields:
        params = LAYER_PARAMS
    masker = Masker(toy_splits.train.specs(), "zeros")
    assert build_method(name, params or {}, masker).masker is masker
