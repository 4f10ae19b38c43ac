"""Each task's evaluation metrics against hand-computed values, through ``engine.metrics.evaluate``; the
classification path gives the same names and numbers as before tasks existed."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.engine.metrics import evaluate


class Replay(nn.Module):
    """A "model" whose output is the batch's ``out`` tensor: the metrics see exactly the logits we chose."""

    def forward(self, batch):
        return batch["out"]


def run(task, out, label, num_classes, split: int = 2):
    batches = [{"out": o, "label": y} for o, y in zip(out.split(split), label.split(split))]
    return evaluate(Replay(), batches, num_classes, task=task)


def logit(p):
    p = torch.as_tensor(p)
    return torch.log(p / (1 - p))


def old_classification_evaluate(out, label, num_classes, split):
    """The evaluation as it was before tasks (engine/metrics.py at a3f08be), written out."""
    import torchmetrics

    metrics = {
        "accuracy": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": torchmetrics.classification.MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes == 2:
        metrics["auroc"] = torchmetrics.classification.BinaryAUROC()
    metrics = torchmetrics.MetricCollection(metrics)
    loss_sum, count = torch.zeros(()), torch.zeros(())
    for o, y in zip(out.split(split), label.split(split)):
        loss_sum += F.cross_entropy(o, y, reduction="sum")
        count += len(y)
        probs = o.softmax(-1)
        metrics["accuracy"].update(probs, y)
        metrics["f1_macro"].update(probs, y)
        if "auroc" in metrics:
            metrics["auroc"].update(probs[:, 1], y)
    res = {k: float(v) for k, v in metrics.compute().items()}
    res["loss"] = float(loss_sum / count)
    return res


@pytest.mark.parametrize("num_classes", [2, 5])
def test_classification_names_and_numbers_unchanged(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    out, y = torch.randn(37, num_classes, generator=g), torch.randint(0, num_classes, (37,), generator=g)
    new = run(None, out, y, num_classes, split=8)
    assert new == old_classification_evaluate(out, y, num_classes, 8)  # same keys, in order, and the same floats
    assert list(new) == list(old_classification_evaluate(out, y, num_classes, 8))
    assert run("classification", out, y, num_classes, split=8) == new


def test_multilabel_f1_micro_macro_and_map_by_hand():
    # label 0: scores (0.9, 0.2, 0.6), truth (1, 1, 0) -> predictions (1, 0, 1): TP 1, FN 1, FP 1 -> F1 1/2
    #          AP: ranked pos, neg, pos -> (1/1 + 2/3) / 2 = 5/6
    # label 1: scores (0.8, 0.7, 0.6), truth (0, 1, 1) -> predictions (1, 1, 1): TP 2, FP 1 -> F1 4/5
    #          AP: ranked neg, pos, pos -> (1/2 + 2/3) / 2 = 7/12
    # label 2: scores (0.1, 0.2, 0.3), truth (0, 0, 0): no positive, no prediction -> F1 0 (torchmetrics and
    #          sklearn's zero_division convention); AP undefined -> left out of map
    probs = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.7, 0.2], [0.6, 0.6, 0.3]])
    truth = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 1, 0]])
    got = run("multilabel", logit(probs), truth, 3)
    assert got["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))  # TP 3, FP 2, FN 1
    assert got["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert got["map"] == pytest.approx((5 / 6 + 7 / 12) / 2)
    bce = -(truth * probs.log() + (1 - truth) * (1 - probs).log()).mean(1).mean()
    assert got["loss"] == pytest.approx(bce.item(), rel=1e-5)


def test_regression_mae_and_pearson_by_hand():
    # out (1, 2, 3) vs truth (1, 3, 2): MAE 2/3; deviations (-1, 0, 1), (-1, 1, 0): r = 1 / sqrt(2 * 2) = 1/2
    out, truth = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0])
    got = run("regression", out, truth, 1)
    assert got["mae"] == pytest.approx(2 / 3)
    assert got["pearson"] == pytest.approx(0.5)
    assert got["loss"] == pytest.approx(2 / 3)  # MSE (0 + 1 + 1) / 3
    got = run("regression", out[:, None], truth, 1)  # a (B, 1) output against a (B,) target
    assert (got["mae"], got["pearson"]) == (pytest.approx(2 / 3), pytest.approx(0.5))
    # two outputs: the second perfectly anti-correlated (r = -1); pearson is the mean over outputs
    out2 = torch.stack([out, torch.tensor([1.0, 2.0, 3.0])], 1)
    truth2 = torch.stack([truth, torch.tensor([3.0, 2.0, 1.0])], 1)
    got = run("regression", out2, truth2, 2)
    assert got["pearson"] == pytest.approx((0.5 - 1.0) / 2)
    assert got["mae"] == pytest.approx((0 + 1 + 1 + 2 + 0 + 2) / 6)


def one_hot_maps(pred, num_classes):
    return F.one_hot(pred, num_classes).movedim(-1, 1).float() * 5.0


def test_segmentation_miou_and_pixel_accuracy_by_hand():
    truth = torch.tensor([[[0, 0, 1], [1, 1, 255], [2, 2, 2]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 0], [2, 2, 1]]])
    # 8 valid pixels. class 0: TP 1, FN 1 (the 0 predicted at the ignored pixel does not count) -> 1/2
    # class 1: TP 3, FP 2 -> 3/5; class 2: TP 2, FN 1 -> 2/3; class 3 absent from truth and prediction: left out
    got = run("segmentation", one_hot_maps(pred, 4), truth, 4)
    assert got["miou"] == pytest.approx((1 / 2 + 3 / 5 + 2 / 3) / 3)
    assert got["pixel_accuracy"] == pytest.approx(6 / 8)
    out = one_hot_maps(pred, 4)
    ce = F.cross_entropy(out, truth, ignore_index=255)  # mean over the 8 valid pixels
    assert got["loss"] == pytest.approx(ce.item(), rel=1e-6)
    out[0, :, 1, 2] = torch.tensor([0.0, 0.0, 0.0, 9.0])  # the ignored pixel now predicts class 3: nothing changes
    assert run("segmentation", out, truth, 4) == got


def test_segmentation_metrics_accumulate_over_batches_and_respect_ignore_index():
    g = torch.Generator().manual_seed(4)
    truth = torch.randint(0, 3, (6, 4, 4), generator=g)
    truth[truth == 2] = -1
    pred = torch.randint(0, 3, (6, 4, 4), generator=g)
    task = {"name": "segmentation", "params": {"ignore_index": -1}}
    got = run(task, one_hot_maps(pred, 3), truth, 3, split=4)
    valid = truth != -1
    ious = []
    for c in range(3):
        inter = ((pred == c) & (truth == c) & valid).sum()
        union = (((pred == c) | (truth == c)) & valid).sum()
        if union:
            ious.append(inter / union)
    assert got["miou"] == pytest.approx(float(torch.stack(ious).mean()), rel=1e-6)
    assert got["pixel_accuracy"] == pytest.approx(float((pred == truth)[valid].float().mean()), rel=1e-6)


def test_every_task_reports_only_its_monitors():
    from mmdistill.tasks import TASKS

    cases = {
        "classification": (torch.randn(4, 2), torch.tensor([0, 1, 1, 0]), 2),
        "multilabel": (torch.randn(4, 3), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]), 3),
        "regression": (torch.randn(4), torch.randn(4), 1),
        "segmentation": (torch.randn(4, 3, 2, 2), torch.randint(0, 3, (4, 2, 2)), 3),
    }
    for name, (out, y, n) in cases.items():
        assert set(run(name, out, y, n)) == set(TASKS.get(name).monitors), name
        assert not any(math.isnan(v) for v in run(name, out, y, n).values()), name
