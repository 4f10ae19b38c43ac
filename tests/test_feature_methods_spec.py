"""Attention transfer, hints, RKD, SP and the layer-pair base: shapes, defaults and error paths the peer values miss.

Added for mutants that survived the peer-fixture tests (docs/architecture.md, "Mutation testing"): maps of
different spatial sizes, 1-D and 3-D maps, pooled and per-position hints, features at small scale, a teacher
that runs in bfloat16, and the messages that name a missing layer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmdistill.batch import LABEL
from mmdistill.errors import ConfigError
from mmdistill.methods.attention import AttentionTransfer, at_loss
from mmdistill.methods.base import Method, NoParams, StudentOutputs, TeacherOutputs
from mmdistill.methods.hint import FeatureHint
from mmdistill.methods.rkd import RelationalKD, pairwise_distance, rkd_terms
from mmdistill.methods.similarity import SimilarityPreservingKD, batch_similarity

torch.set_num_threads(1)


def at_by_hand(hs, ht):
    """Authors' code form after pooling the teacher's map to the student's size (mean of 2x2 / 2 / 2x2x2 cells)."""
    q_s, q_t = hs.pow(2).sum(1), ht.pow(2).sum(1)
    if q_t.shape[1:] != q_s.shape[1:]:
        k = q_t.shape[-1] // q_s.shape[-1]
        q_t = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[q_s.dim() - 1](q_t.unsqueeze(1), k).squeeze(1)
    q_s, q_t = q_s.flatten(1), q_t.flatten(1)
    q_s, q_t = q_s / q_s.norm(dim=1, keepdim=True), q_t / q_t.norm(dim=1, keepdim=True)
    return (q_s - q_t).pow(2).mean()


@pytest.mark.parametrize("spatial", [(8,), (4, 4), (2, 4, 4)])
def test_attention_pools_a_larger_teacher_map_to_the_student_size(spatial):
    torch.manual_seed(0)
    hs = torch.randn(3, 4, *spatial)
    ht = torch.randn(3, 6, *(2 * s for s in spatial))
    assert at_loss(hs, ht).item() == pytest.approx(at_by_hand(hs, ht).item(), rel=1e-5)  # default form: code
    same = torch.randn(3, 6, *spatial)
    assert at_loss(hs, same).item() == pytest.approx(at_by_hand(hs, same).item(), rel=1e-5)


def test_attention_method_terms_reach_the_total_through_its_weights():
    torch.manual_seed(1)
    hs, ht = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 8, 8)
    method = AttentionTransfer(AttentionTransfer.Params(student_layer="s", teacher_layer="t", beta=4.0))
    assert method.feature_terms(hs, ht)["at"].item() == pytest.approx(at_by_hand(hs, ht).item(), rel=1e-5)


def hint_for(hs, ht, **params):
    """A hint method as ``setup`` leaves it for these features (pooled when the spatial sizes differ)."""
    method = FeatureHint(FeatureHint.Params(student_layer="s", teacher_layer="t", **params))
    method.pool = hs.shape[2:] != ht.shape[2:]
    method.projector = torch.nn.Linear(hs.shape[1], ht.shape[1])
    return method


def outputs(hs, ht, n):
    y = torch.zeros(n, dtype=torch.long)
    logits = torch.zeros(n, 3)
    return {LABEL: y}, StudentOutputs(logits, {"s": hs}), TeacherOutputs(logits, {"t": ht})


def test_hint_pools_maps_of_different_sizes_and_maps_channels_per_position_otherwise():
    torch.manual_seed(2)
    hs, ht = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 8, 8)
    method = hint_for(hs, ht)
    got = method.losses(*outputs(hs, ht, 2))["hint"]
    want = F.mse_loss(method.projector(hs.mean((2, 3))), ht.mean((2, 3)))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    hs1, ht1 = torch.randn(2, 3, 7), torch.randn(2, 5, 7)  # (B, C, L), same length: per position
    method = hint_for(hs1, ht1)
    got = method.losses(*outputs(hs1, ht1, 2))["hint"]
    want = F.mse_loss(method.projector(hs1.transpose(1, 2)), ht1.transpose(1, 2))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize(("s_shape", "t_shape"), [((2, 3), (2, 5, 4, 4)), ((2, 3, 4), (2, 5, 8))])
def test_hint_pools_whichever_side_has_spatial_axes(s_shape, t_shape):
    torch.manual_seed(5)
    hs, ht = torch.randn(*s_shape), torch.randn(*t_shape)
    method = hint_for(hs, ht)

    def pooled(h):
        return h if h.dim() == 2 else h.flatten(2).mean(-1)

    got = method.losses(*outputs(hs, ht, 2))["hint"]
    assert got.item() == pytest.approx(F.mse_loss(method.projector(pooled(hs)), pooled(ht)).item(), rel=1e-6)


def test_hint_names_the_layer_whose_features_are_missing_or_do_not_fit():
    hs, ht = torch.randn(2, 3), torch.randn(2, 5)
    method = hint_for(hs, ht)
    batch, s_out, t_out = outputs(hs, ht, 2)
    with pytest.raises(ConfigError, match=r"method\.params\.student_layer: no features from layer 's'"):
        method.losses(batch, StudentOutputs(s_out.logits, {}), t_out)
    with pytest.raises(ConfigError, match=r"method\.params\.teacher_layer: no features from layer 't'"):
        method.losses(batch, s_out, TeacherOutputs(t_out.logits, {}))
    with pytest.raises(ConfigError, match=r"hint features \(2, 5\) of 's' do not match \(2, 6\) of teacher_layer 't'"):
        method.losses(batch, s_out, TeacherOutputs(t_out.logits, {"t": torch.randn(2, 6)}))


def test_rkd_distances_below_one_are_kept_and_normalised_by_their_mean():
    f = torch.tensor([[0.0, 0.0], [0.3, 0.4], [0.0, 0.1]])  # distances 0.5, 0.1, sqrt(0.09 + 0.09)
    d = pairwise_distance(f)
    assert d[0, 1].item() == pytest.approx(0.5, abs=1e-6) and d[0, 2].item() == pytest.approx(0.1, abs=1e-6)
    far = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])  # the same layout at 10x scale: the same normalised terms
    assert [t.item() for t in rkd_terms(f, far)] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert rkd_terms(f, torch.tensor([[0.0, 0.0], [0.3, 0.4], [0.0, 0.3]]))[0].item() > 1e-4


def test_layer_pair_methods_compare_a_bfloat16_teacher_in_the_student_dtype():
    torch.manual_seed(3)
    hs, ht = torch.randn(6, 4), torch.randn(6, 5).bfloat16()
    method = RelationalKD(RelationalKD.Params(student_layer="s", teacher_layer="t"))
    got = method.losses(*outputs(hs, ht, 6))
    want = rkd_terms(hs, ht.float())
    assert got["rkd_distance"].dtype == torch.float32
    assert got["rkd_distance"].item() == pytest.approx(want[0].item(), rel=1e-6)
    assert got["rkd_angle"].item() == pytest.approx(want[1].item(), rel=1e-6)


def test_similarity_preserving_uses_row_l2_normalised_gram_matrices():
    torch.manual_seed(4)
    hs, ht = torch.randn(4, 3), torch.randn(4, 6)

    def g(h):
        q = h @ h.T
        return q / q.norm(dim=1, keepdim=True)

    assert torch.allclose(batch_similarity(hs), g(hs), atol=1e-6)
    method = SimilarityPreservingKD(SimilarityPreservingKD.Params(student_layer="s", teacher_layer="t"))
    want = (g(ht) - g(hs)).pow(2).sum() / 16
    assert method.feature_terms(hs, ht)["sp"].item() == pytest.approx(want.item(), rel=1e-5)


def test_a_method_takes_the_task_it_is_given():
    class Bare(Method):
        pass

    assert Bare(NoParams(), None, "regression").task.name == "regression"
    assert Bare(NoParams()).task.name == "classification"
