"""MSD's modality saliency (methods/msd_saliency.py) against values worked out by hand.

    kl:          s_m(x) = KL(p_t(x) || p_t(x^(-m)))
    true_class:  s_m(x) = p_t(y | x) - p_t(y | x^(-m))

Two examples, three classes, two removal views (M = 2). Logits are chosen so that the softmaxes are exact:
[0, 0, 0] -> (1/3, 1/3, 1/3); [ln 2, 0, 0] -> (1/2, 1/4, 1/4); [ln 6, ln 3, ln 1] -> (6/10, 3/10, 1/10).
"""

from __future__ import annotations

import math

import pytest
import torch

from mmdistill.methods.msd_saliency import removal_views, saliency_from_logits
from mmdistill.tasks import get_task

torch.set_num_threads(1)

L2, L3, L6 = math.log(2), math.log(3), math.log(6)
FULL = torch.tensor([[L2, 0.0, 0.0], [L6, L3, 0.0]])  # p(x1) = (1/2, 1/4, 1/4); p(x2) = (.6, .3, .1)
REMOVED = torch.tensor(
    [
        [[0.0, 0.0, 0.0], [L2, 0.0, 0.0]],  # view 1: p = (1/3, 1/3, 1/3) and (1/2, 1/4, 1/4)
        [[0.0, L2, 0.0], [L6, L3, 0.0]],  # view 2: p = (1/4, 1/2, 1/4) and (.6, .3, .1) (unchanged)
    ]
)
LABELS = torch.tensor([0, 1])


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_kl_saliency_is_the_kl_from_the_full_prediction_to_each_removal_view():
    got = saliency_from_logits(FULL, REMOVED, LABELS, "kl")
    p1, p2 = (1 / 2, 1 / 4, 1 / 4), (0.6, 0.3, 0.1)
    expected = [
        [kl(p1, (1 / 3, 1 / 3, 1 / 3)), kl(p2, (1 / 2, 1 / 4, 1 / 4))],
        [kl(p1, (1 / 4, 1 / 2, 1 / 4)), 0.0],  # removing modality 2 leaves example 2's prediction unchanged
    ]
    assert got.shape == (2, 2)
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6), (got, expected)
    # the labels play no part in the KL form
    assert torch.equal(got, saliency_from_logits(FULL, REMOVED, None, "kl"))


def test_true_class_saliency_is_the_drop_of_the_true_class_probability():
    got = saliency_from_logits(FULL, REMOVED, LABELS, "true_class")
    # example 1 (y = 0): p(0|x) = 1/2; example 2 (y = 1): p(1|x) = 0.3
    expected = [[1 / 2 - 1 / 3, 0.3 - 1 / 4], [1 / 2 - 1 / 4, 0.3 - 0.3]]
    assert got.shape == (2, 2)
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6), (got, expected)
    # a removal that raises the true class's probability has negative saliency
    assert saliency_from_logits(FULL, REMOVED, torch.tensor([1, 1]), "true_class")[1, 0] == pytest.approx(-1 / 4)


def test_true_class_saliency_needs_the_labels():
    with pytest.raises(ValueError, match="true_class saliency needs the labels"):
        saliency_from_logits(FULL, REMOVED, None, "true_class")


def test_the_default_form_is_kl_and_classification_uses_it_too():
    assert torch.equal(saliency_from_logits(FULL, REMOVED, LABELS), saliency_from_logits(FULL, REMOVED, LABELS, "kl"))
    classification = saliency_from_logits(FULL, REMOVED, LABELS, "kl", get_task("classification"))
    assert torch.equal(classification, saliency_from_logits(FULL, REMOVED, LABELS, "kl"))


def test_other_tasks_take_their_own_saliency_per_view():
    regression = get_task("regression")
    full, removed = torch.tensor([[1.0], [2.0]]), torch.tensor([[[1.0], [0.0]], [[3.0], [2.0]]])
    got = saliency_from_logits(full, removed, torch.zeros(2, 1), "kl", regression)
    expected = torch.stack([regression.saliency(full, r, torch.zeros(2, 1)) for r in removed])
    assert torch.equal(got, expected) and got[0, 0] == 0 and got[0, 1] > 0 and got[1, 1] == 0


def test_removal_views_keep_every_modality_but_one():
    assert removal_views(["image", "audio", "text"]) == [("audio", "text"), ("image", "text"), ("image", "audio")]
    assert removal_views(["a"]) == [()]


def test_true_class_saliency_with_more_views_than_examples():
    """M = 3 removal views of B = 2 examples: the label index follows the example axis, not the view axis."""
    removed = torch.cat([REMOVED, torch.tensor([[[L6, L3, 0.0], [0.0, 0.0, 0.0]]])])  # view 3
    got = saliency_from_logits(FULL, removed, LABELS, "true_class")
    expected = [[1 / 2 - 1 / 3, 0.3 - 1 / 4], [1 / 2 - 1 / 4, 0.0], [1 / 2 - 0.6, 0.3 - 1 / 3]]
    assert got.shape == (3, 2)
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6), got


def test_segmentation_saliency_counts_only_the_labelled_pixels():
    """One example, two pixels: pixel 0 labelled, pixel 1 ignore_index. Only pixel 0's KL counts."""
    task = get_task({"name": "segmentation", "params": {"ignore_index": 255}})
    full = torch.tensor(
        [[[[L2, 0.0]], [[0.0, 0.0]]]]
    )  # (B=1, C=2, H=1, W=2): pixel 0 p = (2/3, 1/3), pixel 1 (1/2, 1/2)
    removed = torch.tensor([[[[[0.0, L3]], [[0.0, 0.0]]]]])  # (M=1, ...): pixel 0 (1/2, 1/2), pixel 1 (3/4, 1/4)
    labels = torch.tensor([[[0, 255]]])
    got = saliency_from_logits(full, removed, labels, "kl", task)
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx(kl((2 / 3, 1 / 3), (1 / 2, 1 / 2)), abs=1e-6)
