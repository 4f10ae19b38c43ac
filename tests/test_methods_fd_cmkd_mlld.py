"""MLLD and FD-CMKD against values worked out by hand from their formulas on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmdistill.batch import LABEL
from mmdistill.engine.api import build_method
from mmdistill.errors import ConfigError
from mmdistill.masking import Masker
from mmdistill.methods.base import StudentOutputs, TeacherOutputs
from mmdistill.methods.fd_cmkd import FrequencyDecoupledCMKD, frequency_bands, low_bin_count
from mmdistill.methods.mlld import MultiLevelLogitDistillation, multi_level_terms
from mmdistill.models.multimodal import ModelConfig, build_model

LN = math.log


def close(value, expected, tol=1e-6):
    value = value.detach() if isinstance(value, torch.Tensor) else value
    assert float(value) == pytest.approx(float(expected), abs=tol)


# ---- MLLD ---------------------------------------------------------------------------------------
# one example, two classes. student [0, 0] -> P_s = [.5, .5]; teacher [ln 3, 0] -> P_t = [.75, .25]
# instance: KL(P_t || P_s) = .75 ln 1.5 + .25 ln .5
# batch (1 x 1 Gram): P_t P_t^T = .75^2 + .25^2 = .625, P_s P_s^T = .5; (.125)^2 / B = .015625
# class (2 x 2 Gram): P_t^T P_t = [[.5625, .1875], [.1875, .0625]], P_s^T P_s = .25 everywhere;
#   (.3125^2 + 2 * .0625^2 + .1875^2) / C = .140625 / 2 = .0703125
MLLD_S = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
MLLD_T = torch.tensor([[LN(3), 0.0]], dtype=torch.float64)
INSTANCE_T1 = 0.75 * LN(1.5) + 0.25 * LN(0.5)
BATCH_T1 = 0.015625
CLASS_T1 = 0.0703125


def test_mlld_levels_by_hand():
    terms = multi_level_terms(MLLD_S, MLLD_T, (1.0,))
    close(terms["instance"], INSTANCE_T1)
    close(terms["batch"], BATCH_T1)
    close(terms["class"], CLASS_T1)


def test_mlld_sums_over_temperatures_with_t_squared_on_the_instance_level_only():
    # logits doubled at T = 2: the same predictions; the instance level gains T^2 = 4, the Gram levels do not
    terms = multi_level_terms(2 * MLLD_S, 2 * MLLD_T, (2.0, 2.0))
    close(terms["instance"], 2 * 4 * INSTANCE_T1)
    close(terms["batch"], 2 * BATCH_T1)
    close(terms["class"], 2 * CLASS_T1)


def test_mlld_batch_level_divides_by_the_batch_and_class_level_by_the_classes():
    # two identical examples: the B x B Gram has 4 entries each off by .125 -> .0625 / B = .03125; the class Gram
    # doubles -> (2 * .3125)^2 ... = 4 * .140625 / C = .28125
    s, t = MLLD_S.repeat(2, 1), MLLD_T.repeat(2, 1)
    terms = multi_level_terms(s, t, (1.0,))
    close(terms["batch"], 4 * 0.015625 / 2)
    close(terms["class"], 4 * 0.140625 / 2)
    close(terms["instance"], INSTANCE_T1)  # a mean over examples


def test_mlld_method_terms_and_weights():
    method = MultiLevelLogitDistillation(MultiLevelLogitDistillation.Params(temperatures=[1.0]))
    out = method.losses({LABEL: torch.tensor([1])}, StudentOutputs(MLLD_S), TeacherOutputs(MLLD_T))
    close(out["ce"], LN(2))
    close(out["class"], CLASS_T1)
    assert method.loss_weights() == {"ce": 0.1, "instance": 0.9, "batch": 0.9, "class": 0.9}  # the authors' code
    assert MultiLevelLogitDistillation.Params().temperatures == (2.0, 3.0, 4.0, 5.0, 6.0)


@pytest.mark.parametrize("bad", [[], [0.0], ["2"], [True]])
def test_mlld_refuses_bad_temperatures_naming_the_key(toy_splits, bad):
    with pytest.raises(ConfigError, match="method.params.temperatures"):
        build_method("mlld", {"temperatures": bad}, Masker(toy_splits.train.specs(), "zeros"))


# ---- FD-CMKD ------------------------------------------------------------------------------------
# h = [1, 0, 0, 0] (D = 4: real-FFT bins 0, 1, 2; low band = bin 1, high band = bin 2, the mean in neither):
#   mean .25; bin 2 (alternating) = (1 - 0 + 0 - 0) / 4 * [1, -1, 1, -1]; bin 1 = the rest = [.5, 0, -.5, 0]


def test_frequency_bands_by_hand():
    low, high = frequency_bands(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), low_bins=1)
    torch.testing.assert_close(low, torch.tensor([[0.5, 0.0, -0.5, 0.0]]))
    torch.testing.assert_close(high, torch.tensor([[0.25, -0.25, 0.25, -0.25]]))


def test_frequency_bands_of_half_precision_features_are_computed_in_float32():
    h = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.bfloat16)  # bf16-mixed training hooks bf16 features
    low, high = frequency_bands(h, low_bins=1)
    assert low.dtype == torch.float32
    torch.testing.assert_close(high, torch.tensor([[0.25, -0.25, 0.25, -0.25]]))


def test_low_band_size_follows_the_authors_split():
    assert low_bin_count(512, 0.5) == 128  # the code's filter: bins 1..128 low, 129..256 high
    assert low_bin_count(4, 0.5) == 1 and low_bin_count(4, 0.9) == 1 and low_bin_count(8, 0.1) == 1


def _fd_cmkd():
    method = FrequencyDecoupledCMKD(FrequencyDecoupledCMKD.Params(student_layer="s", teacher_layer="t"))
    method.project, method.low_bins = nn.Identity(), 1
    # every classifier reads the band's first channel (after ReLU) as class 0's logit; class 1's logit is 0
    heads = []
    for _ in range(4):
        head = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
        with torch.no_grad():
            head[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
            head[1].bias.zero_()
        heads.append(head)
    method.shared = nn.ModuleDict({"low": heads[0], "high": heads[1]})
    method.own = nn.ModuleDict({"low": heads[2], "high": heads[3]})
    return method


def test_fd_cmkd_terms_by_hand():
    # teacher h_t = [1, 0, 0, 0]: low [.5, 0, -.5, 0], high [.25, -.25, .25, -.25]
    # student h_s = [0, 1, 0, 0]: low [0, .5, 0, -.5], high [-.25, .25, -.25, .25]
    # low:  normalised [1, 0, -1, 0] / sqrt 2 vs [0, 1, 0, -1] / sqrt 2: each entry off by 1/sqrt 2 -> mean 1/2
    # high: normalised [.5, -.5, .5, -.5] vs its negative; signed logs +-ln 1.5 -> each off by 2 ln 1.5
    method = _fd_cmkd()
    out = method.losses(
        {LABEL: torch.tensor([0])},
        StudentOutputs(torch.zeros(1, 2), {"s": torch.tensor([[0.0, 1.0, 0.0, 0.0]])}),
        TeacherOutputs(torch.zeros(1, 2), {"t": torch.tensor([[1.0, 0.0, 0.0, 0.0]])}),
    )
    close(out["ce"], LN(2))
    close(out["low"], 0.5)
    close(out["high"], (2 * LN(1.5)) ** 2)
    # classifiers: logit of class 0 = relu(band[0]). student low [0, ...] -> ln 2; teacher low .5 -> ln(1 + e^-.5);
    # student high relu(-.25) = 0 -> ln 2; teacher high .25 -> ln(1 + e^-.25)
    close(out["align_low"], LN(2) + LN(1 + math.exp(-0.5)))
    close(out["align_high"], LN(2) + LN(1 + math.exp(-0.25)))
    close(out["task_low"], LN(2))
    close(out["task_high"], LN(2))
    assert set(method.loss_weights()) == set(out)


def test_fd_cmkd_setup_projects_the_student_to_the_teacher_width(toy_splits):
    specs, classes = toy_splits.train.specs(), toy_splits.num_classes
    teacher = build_model(ModelConfig(modalities=["a"], encoder={"hidden": [12], "out_dim": 6}), specs, classes)
    student = build_model(ModelConfig(modalities=["b"], encoder={"hidden": [5], "out_dim": 6}), specs, classes)
    layers = {"student_layer": "encoders.b.body.0", "teacher_layer": "encoders.a.body.0"}
    method = build_method("fd_cmkd", layers, Masker(specs, "zeros"))
    method.setup(toy_splits.train.__getitems__(range(4)), student, teacher)
    assert isinstance(method.project, nn.Linear) and method.project.weight.shape == (12, 5)
    assert method.low_bins == 3  # 12 channels: 6 bins besides the mean, half of them low
    narrow = build_model(ModelConfig(modalities=["a"], encoder={"hidden": [3], "out_dim": 6}), specs, classes)
    with pytest.raises(ConfigError, match="method.params.teacher_layer: .* at least 4"):
        method.setup(toy_splits.train.__getitems__(range(4)), student, narrow)
