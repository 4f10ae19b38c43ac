"""C2KD's KL pieces at T != 1 and MFH modality-general KD's keep set, fill and salience student, by hand.

Added for mutants that survived the earlier tests (docs/architecture.md, "Mutation testing").
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mmdistill.batch import LABEL
from mmdistill.engine.api import build_method
from mmdistill.errors import ConfigError
from mmdistill.methods.base import StudentOutputs, TeacherOutputs
from mmdistill.methods.c2kd import C2KD, _pool, kl_per_example, non_target_kl, selection_mask
from mmdistill.methods.mfh_general import MASK_BUFFER, read_scores
from mmdistill.mfh.algorithm1 import channel_salience
from mmdistill.models import EncoderConfig, ModelConfig, build_model
from mmdistill.models.hooks import FeatureHooks

torch.set_num_threads(1)
LN = math.log


# ---- C2KD -----------------------------------------------------------------------------------------------
# target logits [2 ln 2, 0] at T = 2 -> [ln 2, 0] -> p = [2/3, 1/3]; logits [0, 0] -> q = [1/2, 1/2]
# T^2 KL = 4 * (2/3 ln(4/3) + 1/3 ln(2/3))
KL_T2 = 4 * (2 / 3 * LN(4 / 3) + 1 / 3 * LN(2 / 3))


def test_kl_per_example_softens_both_sides_and_scales_by_t_squared():
    got = kl_per_example(torch.tensor([[2 * LN(2), 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]]), 2.0)
    assert got.tolist() == pytest.approx([KL_T2, 0.0], abs=1e-6)
    # the roles swapped: the softened student side matters as well
    swapped = kl_per_example(torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * LN(2), 0.0]]), 2.0)
    assert swapped.item() == pytest.approx(4 * (0.5 * LN(0.75) + 0.5 * LN(1.5)), abs=1e-6)
    assert kl_per_example(torch.tensor([[LN(2), 0.0]]), torch.tensor([[0.0, 0.0]])).item() == pytest.approx(
        KL_T2 / 4, abs=1e-6
    )  # default T = 1


def test_non_target_kl_zeroes_the_label_logit_and_defaults_to_t_one():
    # label 0 zeroes the first logit: [9, ln 2, 0] -> [0, ln 2, 0] against [5, 0, 0] -> [0, 0, 0]
    target, logits = torch.tensor([[9.0, LN(2), 0.0]]), torch.tensor([[5.0, 0.0, 0.0]])
    p = torch.tensor([1.0, 2.0, 1.0]) / 4
    want = float((p * (p / torch.full((3,), 1 / 3)).log()).sum())
    assert non_target_kl(target, logits, torch.tensor([0])).item() == pytest.approx(want, abs=1e-6)


def test_non_target_kl_passes_its_temperature_on():
    target, logits, y = torch.tensor([[9.0, 2 * LN(2), 0.0]]), torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([0])
    want = kl_per_example(target * torch.tensor([0.0, 1, 1]), logits * torch.tensor([0.0, 1, 1]), 2.0)
    assert non_target_kl(target, logits, y, 2.0).item() == pytest.approx(want.item(), abs=1e-6)
    assert non_target_kl(target, logits, y, 2.0).item() != pytest.approx(non_target_kl(target, logits, y).item())


def test_selection_keeps_rows_strictly_above_the_threshold_and_never_all_tie_rows():
    proxy_t = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    proxy_s = torch.tensor([[2.0, 4.0, 1.0, 3.0], [1.0, 2.0, 3.0, 5.0], [3.0, 1.0, 2.0, 0.0]])
    # row 0: tau = (3 concordant - 3 discordant) / 6 = 0, exactly the threshold: not selected; row 1: tau = 1;
    # row 2: the teacher proxy is all ties, tau undefined: never selected, even at the lowest threshold
    assert selection_mask(proxy_t, proxy_s, 0.0).tolist() == [0.0, 1.0, 0.0]
    assert selection_mask(proxy_t, proxy_s, -0.5).tolist() == [1.0, 1.0, 0.0]


def test_c2kd_proxies_pool_feature_maps_and_have_the_documented_layers():
    h = torch.randn(2, 3, 4, 5)
    assert torch.allclose(_pool(h), h.mean((2, 3))) and torch.equal(_pool(h[:, :, 0, 0]), h[:, :, 0, 0])
    assert torch.allclose(_pool(h[:, :, 0]), h[:, :, 0].mean(-1))


def test_c2kd_terms_at_t_two_with_a_bfloat16_teacher(toy_splits):
    torch.manual_seed(0)
    method = C2KD(C2KD.Params(student_layer="s", teacher_layer="t", temperature=2.0))
    method.proxy_s = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LeakyReLU(0.1), torch.nn.Linear(4, 3))
    method.proxy_t = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.LeakyReLU(0.1), torch.nn.Linear(6, 3))
    hs, ht = torch.randn(5, 4), torch.randn(5, 6).bfloat16()
    s, t, y = torch.randn(5, 3), (3 * torch.randn(5, 3)).bfloat16(), torch.tensor([0, 1, 2, 0, 1])
    got = method.losses({LABEL: y}, StudentOutputs(s, {"s": hs}), TeacherOutputs(t, {"t": ht}))
    pi_s, pi_t = method.proxy_s(hs), method.proxy_t(ht.float())
    m = selection_mask(pi_t, pi_s, 0.0)
    want = {
        "proxy_s": kl_per_example(s, pi_s, 2.0).mean(),
        "output_s": kl_per_example(pi_s, s, 2.0).mean(),
        "proxy_t": kl_per_example(t.float(), pi_t, 2.0).mean(),
        "ofsd_s": (m * non_target_kl(pi_t, pi_s, y, 2.0)).mean(),
        "ofsd_t": (m * non_target_kl(pi_s, pi_t, y, 2.0)).mean(),
    }
    for name, value in want.items():
        assert got[name].dtype == torch.float32
        assert got[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-7), name


def test_c2kd_setup_builds_two_layer_proxies_with_a_leaky_relu_of_0_1(toy_splits):
    teacher, _ = models(toy_splits)
    student = build_model(
        ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[8], out_dim=8)),
        toy_splits.train.specs(),
        toy_splits.num_classes,
    )
    layers = {"student_layer": "encoders.a.body.0", "teacher_layer": "encoders.a.body.0"}
    method = build_method("c2kd", layers, None)
    method.setup(toy_splits.train.__getitems__(range(4)), student, teacher)
    kinds = [type(m).__name__ for m in method.proxy_s]
    assert kinds == ["Linear", "LeakyReLU", "Linear"] and method.proxy_s[1].negative_slope == 0.1
    assert method.proxy_s[0].in_features == method.proxy_s[0].out_features == 8
    assert method.proxy_t[0].in_features == 32 and method.proxy_t[2].out_features == toy_splits.num_classes


# ---- MFH modality-general KD --------------------------------------------------------------------------------
def models(splits, seed=0):
    specs, n = splits.train.specs(), splits.num_classes
    torch.manual_seed(seed)
    teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[32], out_dim=16)), specs, n)
    student = build_model(ModelConfig(modalities=["b"], encoder=EncoderConfig(hidden=[8], out_dim=8)), specs, n)
    return teacher.eval(), student


def scores_file(tmp_path, values):
    path = tmp_path / "scores.csv"
    path.write_text("channel,score\n" + "".join(f"{c},{v}\n" for c, v in enumerate(values)))
    return str(path)


def prepared(splits, tmp_path, values, **params):
    teacher, student = models(splits)
    method = build_method(
        "mfh_general",
        {"teacher_layer": "encoders.a.body.0", "scores_csv": scores_file(tmp_path, values), **params},
        None,
    )
    method.setup(splits.train.__getitems__(range(8)), student, teacher)
    method.prepare(splits.train, teacher, torch.device("cpu"))
    return method, teacher


def test_keep_ratio_keeps_the_top_scored_channels_and_at_least_one(toy_splits, tmp_path):
    values = [float(c % 7) for c in range(32)]  # channels 6, 13, 20, 27 score highest
    method, teacher = prepared(toy_splits, tmp_path, values, keep_ratio=0.01)
    assert method.keep_mask.nonzero().flatten().tolist() == [6]  # round(0.32) = 0 -> 1, the first of the ties
    method, _ = prepared(toy_splits, tmp_path, values, keep_ratio=0.125)
    assert method.keep_mask.nonzero().flatten().tolist() == [6, 13, 20, 27]


def test_fill_mean_replaces_dropped_channels_by_their_training_mean(toy_splits, tmp_path):
    values = [1.0] * 4 + [0.0] * 28
    method, teacher = prepared(toy_splits, tmp_path, values, keep_ratio=0.125, fill="mean")
    rows = toy_splits.train.__getitems__(range(len(toy_splits.train)))
    method.restore_teacher(teacher)
    with torch.no_grad(), FeatureHooks(teacher, ["encoders.a.body.0"]) as ft:
        teacher(rows)
    mean = ft["encoders.a.body.0"].mean(0)
    method.prepare(toy_splits.train, teacher, torch.device("cpu"))
    batch = toy_splits.train.__getitems__(range(5))
    with torch.no_grad(), FeatureHooks(teacher, ["encoders.a.body.0"]) as ft:
        teacher(batch)
    h = ft["encoders.a.body.0"]
    assert torch.allclose(h[:, 4:], mean[4:].expand(5, -1), atol=1e-5)
    assert not torch.allclose(h[:, :4], mean[:4].expand(5, -1), atol=1e-3)  # kept channels vary by example


def test_the_mask_broadcasts_over_the_spatial_axes_of_a_feature_map(tmp_path):
    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4, 3)

        def forward(self, batch):
            return self.head(self.body(batch["a"]).mean((2, 3)))

    teacher, student = Conv().eval(), Conv()
    method = build_method(
        "mfh_general",
        {"teacher_layer": "body", "scores_csv": scores_file(tmp_path, [0, 3, 2, 1]), "keep_ratio": 0.5},
        None,
    )
    batch = {"a": torch.randn(2, 1, 5, 6), LABEL: torch.tensor([0, 1])}
    method.setup(batch, student, teacher)

    class Train:
        def __len__(self):
            return 2

    method.prepare(Train(), teacher, torch.device("cpu"))
    assert getattr(teacher.body, MASK_BUFFER).tolist() == [False, True, True, False]
    with torch.no_grad(), FeatureHooks(teacher, ["body"]) as ft:
        teacher(batch)
    assert ft["body"].shape == (2, 4, 5, 6)
    assert (ft["body"][:, [0, 3]] == 0).all() and (ft["body"][:, [1, 2]] != 0).any()


def test_salience_student_is_the_student_trained_alone_as_documented(toy_splits):
    """compute_scores: a copy of the student, full-batch SGD (salience_lr, momentum 0.9) on CE, then Algorithm 1."""
    teacher, student = models(toy_splits)
    params = {"teacher_layer": "encoders.a.body.0", "salience_epochs": 3, "salience_lr": 0.5, "salience_examples": 40}
    params |= {"permutations": 2, "seed": 3}
    method = build_method("mfh_general", params, None)
    method.setup(toy_splits.train.__getitems__(range(8)), student, teacher)
    got = method.compute_scores(toy_splits.train, teacher, torch.device("cpu"))
    batch = toy_splits.train.__getitems__(range(40))
    alone = copy.deepcopy(student)
    opt = torch.optim.SGD(alone.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        loss = nn.functional.cross_entropy(alone(batch), batch[LABEL])
        opt.zero_grad()
        loss.backward()
        opt.step()
    want = channel_salience(teacher, alone, batch, batch, "encoders.a.body.0", permutations=2, seed=3).scores
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, channel_salience(teacher, alone, batch, batch, "encoders.a.body.0").scores)


def test_teacher_layer_without_a_channel_axis_and_bad_score_files_are_named(tmp_path):
    class Squeeze(nn.Module):
        def forward(self, x):
            return x.sum(1)

    class Teacher(nn.Module):  # its layer "sq" outputs (batch,): no channel axis to score
        def __init__(self):
            super().__init__()
            self.pre, self.sq = nn.Linear(3, 2), Squeeze()

        def forward(self, batch):
            return torch.stack([self.sq(self.pre(batch["a"]))] * 2, 1)

    method = build_method("mfh_general", {"teacher_layer": "sq"}, None)
    batch = {"a": torch.randn(4, 3), LABEL: torch.zeros(4, dtype=torch.long)}
    with pytest.raises(ConfigError, match=r"'sq' must output \(batch, channels, \.\.\.\), got \(4,\)"):
        method.setup(batch, nn.Identity(), Teacher())
    with pytest.raises(ConfigError, match=r"scores 3 channels 0\.\.2; the teacher layer has 4"):
        read_scores(scores_file(tmp_path, [1.0, 2.0, 3.0]), 4)


def test_restoring_a_teacher_before_any_prepare_is_harmless(toy_splits):
    teacher, student = models(toy_splits)
    method = build_method("mfh_general", {"teacher_layer": "encoders.a.body.0"}, None)
    method.restore_teacher(teacher)
