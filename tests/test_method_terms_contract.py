"""Every built-in method weighs each term it returns by name, with its own parameter: no term falls back silently.

``weighted_total`` gives a term without a weight the weight 1 (so a user's method may leave weights out).
For the built-in methods that fallback would hide a renamed term: each must name in ``loss_weights()``
exactly the terms its ``losses()`` returns, and every weight must follow its parameter.
"""

from __future__ import annotations

import pytest
import torch

from mmdistill.engine.api import build_method
from mmdistill.engine.teacher import TeacherGroup, teacher_outputs
from mmdistill.masking import Masker
from mmdistill.methods.attention import AttentionTransfer
from mmdistill.methods.base import weighted_total
from mmdistill.models import EncoderConfig, ModelConfig, build_model
from mmdistill.registry import METHODS

LAYERS = {"student_layer": "encoders.a.body.0", "teacher_layer": "encoders.a.body.0"}
PARAMS = {
    "c2kd": LAYERS,
    "crd": {**LAYERS, "nce_k": 8},
    "fd_cmkd": LAYERS,
    "hint": LAYERS,
    "mfh_general": {"teacher_layer": "head.0", "salience_epochs": 2, "salience_examples": 16},
    "pkt": LAYERS,
    "rkd": LAYERS,
    "sp": LAYERS,
}
# the weight parameter(s) of each term; "1 - lam" for CE where lam shares KD and CE
WEIGHT_OF = {
    "kd": {"ce": "1-lam", "kd": "lam"},
    "logit_std_kd": {"ce": "1-lam", "kd": "lam"},
    "mfh_general": {"ce": "1-lam", "kd": "lam"},
    "msd": {"ce": "1-lam", "kd": "lam"},
    "supervised": {"ce": "one"},
    "dkd": {"ce": "ce_weight", "tckd": "alpha", "nckd": "beta"},
    "dist": {"ce": "ce_weight", "inter": "beta", "intra": "gamma"},
    "hint": {"hint": "beta"},
    "pkt": {"ce": "ce_weight", "pkt": "beta"},
    "rkd": {"ce": "ce_weight", "rkd_distance": "dist_factor", "rkd_angle": "angle_factor"},
    "sp": {"ce": "ce_weight", "sp": "gamma"},
    "mlld": {"ce": "ce_weight", "instance": "instance_weight", "batch": "batch_weight", "class": "class_weight"},
    "fd_cmkd": {
        "ce": "ce_weight",
        "low": "low_weight",
        "high": "high_weight",
        "align_low": "align_weight",
        "task_high": "task_weight",
    },
    "dml": {"ce": "ce_weight", "kl": "kl_weight"},
    "multi_teacher_kd": {"ce": "1-lam", "kd": "lam"},
    "multi_teacher_adaptive": {"ce": "1-lam", "kd": "lam"},
    "mst_distill": {"ce": "w_task", "kd": "w_kd", "balance": "w_balance", "mask": "one"},
}


def one_batch_terms(name, splits, params):
    specs, n = splits.train.specs(), splits.num_classes
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[32], out_dim=16)), specs, n)
    student = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[8], out_dim=8)), specs, n)
    if getattr(METHODS.get(name), "min_teachers", 1) > 1:  # a router chooses among two teachers or more
        teacher = TeacherGroup({"first": teacher, "second": teacher})
    masker = Masker(specs, "zeros").fit(splits.train.feature_mean())
    method = build_method(name, params, masker)
    batch = splits.train.__getitems__(range(16))
    method.setup(batch, student, teacher)
    method.prepare(splits.train, teacher, torch.device("cpu"))
    t_out = teacher_outputs(teacher.eval(), batch, method.teacher_request(), masker) if method.needs_teacher else None
    method.train()
    method.before_step(student, batch, t_out)
    return method, method.losses(batch, method.forward_student(student, batch), t_out)


@pytest.mark.parametrize("name", [n for n in METHODS.names() if n != "at"])
def test_each_term_has_its_own_weight(name, toy_splits):
    torch.set_num_threads(1)
    method, terms = one_batch_terms(name, toy_splits, PARAMS.get(name, {}))
    weights = method.loss_weights()
    assert set(terms) == set(weights), f"{name}: terms {sorted(terms)} but weights {sorted(weights)}"
    assert torch.isfinite(weighted_total(terms, weights))


def test_attention_transfer_weighs_its_term_by_half_beta():
    method = AttentionTransfer(AttentionTransfer.Params(student_layer="s", teacher_layer="t", beta=6.0, ce_weight=0.5))
    terms = method.feature_terms(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))
    assert set(terms) | {"ce"} == set(method.loss_weights())
    assert method.loss_weights() == {"ce": 0.5, "at": 3.0}


@pytest.mark.parametrize("name", sorted(WEIGHT_OF))
def test_each_weight_follows_its_parameter(name, toy_splits):
    """Set every weight parameter to its own distinct value and read it back by term name."""
    fields = METHODS.get(name).Params.model_fields
    values = {}
    for k, param in enumerate(WEIGHT_OF[name].values()):
        if param in ("1-lam", "one"):
            continue
        values[param] = 0.25 if param == "lam" else 2.0 + k
    method = build_method(name, {**PARAMS.get(name, {}), **values}, None)
    if name == "msd":
        method.modalities = ("a", "b")  # what setup finds in a two-modality pair
    weights = method.loss_weights()
    for term, param in WEIGHT_OF[name].items():
        want = {"1-lam": 1 - values.get("lam", 0.0), "one": 1.0}.get(param, values.get(param))
        assert param in ("1-lam", "one") or param in fields
        assert weights[term] == pytest.approx(want), f"{name}: weight of {term} should be {param}"
    if name == "msd":  # the auxiliary terms carry their weights per example; their own weight is 1
        assert weights["kd/a"] == weights["kd/b"] == 1.0
