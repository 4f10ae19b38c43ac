"""MSD's modality saliency (methods/msd_saliency.py) against hand-worked values of its two formulas."""

import math

import pytest
import torch

from mmdistill.masking import Masker
from mmdistill.methods.msd_saliency import instance_saliency, removal_views, saliency_from_logits
from mmdistill.models import EncoderConfig, ModelConfig, build_model
from mmdistill.tasks import get_task

torch.set_num_threads(1)
LN3 = math.log(3.0)


def kl_rows(full, removed):
    """KL(p || q) per row, written out: sum_c p_c (log p_c - log q_c)."""
    p, q = full.softmax(-1), removed.softmax(-1)
    return (p * (p.log() - q.log())).sum(-1)


def test_removal_views_drop_exactly_one_modality_each_in_order():
    assert removal_views(["a", "b", "c"]) == [("b", "c"), ("a", "c"), ("a", "b")]
    assert removal_views(["x"]) == [()]


def test_true_class_saliency_is_the_drop_of_the_true_class_probability():
    # example 0: p_t(x) = (1/4, 3/4), label 1; example 1: p_t(x) = (3/4, 1/4), label 0
    full = torch.tensor([[0.0, LN3], [LN3, 0.0]])
    removed = torch.tensor(
        [
            [[0.0, 0.0], [0.0, 0.0]],  # without modality 0: (1/2, 1/2) for both
            [[LN3, 0.0], [0.0, LN3]],  # without modality 1: (3/4, 1/4) then (1/4, 3/4)
        ]
    )
    s = saliency_from_logits(full, removed, torch.tensor([1, 0]), "true_class")
    expected = torch.tensor([[0.75 - 0.5, 0.75 - 0.5], [0.75 - 0.25, 0.75 - 0.25]])
    assert s.shape == (2, 2)
    torch.testing.assert_close(s, expected)


def test_true_class_saliency_can_be_negative_when_removing_a_modality_helps():
    full = torch.tensor([[0.0, 0.0]])  # p(y=1) = 1/2
    removed = torch.tensor([[[0.0, LN3]]])  # without it, p(y=1) = 3/4
    torch.testing.assert_close(
        saliency_from_logits(full, removed, torch.tensor([1]), "true_class"), torch.tensor([[-0.25]])
    )


def test_true_class_saliency_refuses_missing_labels_naming_them():
    with pytest.raises(ValueError, match="labels"):
        saliency_from_logits(torch.zeros(2, 3), torch.zeros(1, 2, 3), None, "true_class")


def test_kl_saliency_is_the_kl_from_the_full_prediction_to_the_removed_one():
    torch.manual_seed(0)
    full, removed = torch.randn(5, 4), torch.randn(3, 5, 4)
    expected = torch.stack([kl_rows(full, r) for r in removed])
    for task in (None, get_task("classification")):
        s = saliency_from_logits(full, removed, None, "kl", task)
        assert s.shape == (3, 5)
        torch.testing.assert_close(s, expected, rtol=1e-5, atol=1e-6)
    assert (saliency_from_logits(full, full.expand(2, 5, 4), None, "kl") < 1e-6).all(), "nothing removed: 0"


def test_saliency_of_low_precision_outputs_is_computed_in_float32():
    torch.manual_seed(1)
    full, removed = torch.randn(4, 3).bfloat16(), torch.randn(2, 4, 3).bfloat16()
    labels = torch.tensor([0, 1, 2, 0])
    for kind in ("kl", "true_class"):
        s = saliency_from_logits(full, removed, labels, kind)
        assert s.dtype == torch.float32, kind
        torch.testing.assert_close(s, saliency_from_logits(full.float(), removed.float(), labels, kind))
    reg = saliency_from_logits(full[:, :1], removed[:, :, :1], None, "kl", get_task("regression"))
    assert reg.dtype == torch.float32


def test_kl_saliency_of_another_task_is_its_per_example_distance():
    full = torch.tensor([[1.0], [2.0], [0.0]])
    removed = torch.tensor([[[3.0], [2.0], [0.5]], [[1.0], [-1.0], [0.0]]])
    s = saliency_from_logits(full, removed, None, "kl", get_task("regression"))  # mse by default
    torch.testing.assert_close(s, torch.tensor([[4.0, 0.0, 0.25], [0.0, 9.0, 0.0]]))


def test_instance_saliency_covers_every_example_over_batches_in_eval_mode(toy_splits):
    specs, n = toy_splits.train.specs(), toy_splits.num_classes
    torch.manual_seed(0)
    teacher = build_model(
        ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[16], out_dim=8)), specs, n
    ).train()
    masker = Masker(specs, "zeros").fit(toy_splits.train.feature_mean())
    data = toy_splits.val
    s = instance_saliency(teacher, data, masker, ["a", "b"], "kl", batch_size=7)
    assert not teacher.training, "the saliency is the eval-mode teacher's"
    assert s.shape == (len(data), 2) and len(data) % 7 != 0, "the last, shorter batch is kept"
    batch = data.__getitems__(range(len(data)))
    with torch.no_grad():
        full = teacher(batch)
        without_a, without_b = teacher(masker.keep_only(batch, "b")), teacher(masker.keep_only(batch, "a"))
    torch.testing.assert_close(s, torch.stack([kl_rows(full, without_a), kl_rows(full, without_b)], 1))
    t = instance_saliency(teacher, data, masker, ["a", "b"], "true_class", batch_size=len(data) + 5)
    y = batch["label"]
    p, pa, pb = (o.softmax(-1).gather(-1, y.view(-1, 1)).squeeze(-1) for o in (full, without_a, without_b))
    torch.testing.assert_close(t, torch.stack([p - pa, p - pb], 1))


def test_the_default_saliency_is_the_kl_form():
    torch.manual_seed(2)
    full, removed = torch.randn(3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(
        saliency_from_logits(full, removed, None), saliency_from_logits(full, removed, None, "kl")
    )


def test_segmentation_saliency_averages_over_the_valid_pixels_only():
    # one example, 2 classes, 1 x 2 pixels: pixel 0 valid with KL = k, pixel 1 ignored (255) with a large KL
    full = torch.tensor([[[[0.0, 0.0]], [[LN3, 5.0]]]])  # (B=1, C=2, H=1, W=2): p(pixel 0) = (1/4, 3/4)
    removed = torch.tensor([[[[[0.0, 5.0]], [[0.0, 0.0]]]]])  # (M=1, ...): q(pixel 0) = (1/2, 1/2)
    labels = torch.tensor([[[1, 255]]])
    k = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    s = saliency_from_logits(full, removed, labels, "kl", get_task("segmentation"))
    torch.testing.assert_close(s, torch.tensor([[k]]))


def test_large_inputs_are_scored_in_fewer_rows_per_pass_with_the_same_result(toy_splits, monkeypatch):
    """Rows per teacher pass shrink so that rows x variants x input values stays under MAX_PASS_ELEMENTS (AV-MNIST's
    spectrograms); small feature vectors keep the given batch size; the scores do not depend on it."""
    from mmdistill.methods import msd_saliency

    data = toy_splits.val
    per_row = sum(v[0].numel() for k, v in data.__getitems__(range(1)).items() if v.is_floating_point())
    assert msd_saliency.rows_per_pass(data, 3, 512) == 512
    monkeypatch.setattr(msd_saliency, "MAX_PASS_ELEMENTS", 3 * per_row * 5 + 1)
    assert msd_saliency.rows_per_pass(data, 3, 512) == 5 and msd_saliency.rows_per_pass(data, 3, 4) == 4
    monkeypatch.setattr(msd_saliency, "MAX_PASS_ELEMENTS", 1)
    assert msd_saliency.rows_per_pass(data, 3, 512) == 1
    specs = toy_splits.train.specs()
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[16], out_dim=8)), specs, 4)
    masker = Masker(specs, "zeros").fit(toy_splits.train.feature_mean())
    calls = []
    forward = teacher.forward
    monkeypatch.setattr(teacher, "forward", lambda b: calls.append(len(b["label"])) or forward(b))
    one_row = instance_saliency(teacher, data, masker, ["a", "b"], "kl")
    assert set(calls) == {3}, "one row (three variants) per pass"
    monkeypatch.setattr(msd_saliency, "MAX_PASS_ELEMENTS", 1 << 22)
    torch.testing.assert_close(one_row, instance_saliency(teacher, data, masker, ["a", "b"], "kl"))
