"""The counted classification metrics give torchmetrics' values bitwise, on random data with ties and absent
classes, batch by batch as an evaluation feeds them."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchmetrics

from mmdistill.tasks.class_metrics import counted_classification_metrics


def torchmetrics_collection(num_classes: int) -> torchmetrics.MetricCollection:
    metrics = {
        "accuracy": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": torchmetrics.classification.MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes == 2:
        metrics["auroc"] = torchmetrics.classification.BinaryAUROC()
    return torchmetrics.MetricCollection(metrics)


def feed(metrics, batches) -> dict[str, float]:
    metrics.reset()
    for logits, target in batches:
        probs = logits.softmax(-1)
        metrics["accuracy"].update(probs, target)
        metrics["f1_macro"].update(probs, target)
        if "auroc" in metrics:
            metrics["auroc"].update(probs[:, 1], target)
    return {k: float(v) for k, v in metrics.compute().items()}


def random_batches(seed: int, num_classes: int, coarse: bool, labels_used: int) -> list:
    """Logits rounded to a coarse grid when ``coarse`` (many tied scores); labels only from the first
    ``labels_used`` classes (the others occur at most as predictions)."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for size in (64, 64, 17):
        logits = torch.randn(size, num_classes, generator=gen) * 2
        if coarse:
            logits = (logits * 2).round() / 2
        batches.append((logits, torch.randint(0, labels_used, (size,), generator=gen)))
    return batches


@pytest.mark.parametrize("num_classes", [2, 3, 10])
@pytest.mark.parametrize("coarse", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counted_metrics_equal_torchmetrics_bitwise(num_classes, coarse, seed):
    labels_used = num_classes if seed else max(num_classes - 1, 2)
    batches = random_batches(seed, num_classes, coarse, labels_used)
    ours, theirs = (
        feed(counted_classification_metrics(num_classes), batches),
        feed(torchmetrics_collection(num_classes), batches),
    )
    assert ours == theirs and list(ours) == list(theirs)  # the same floats, the same names in the same order


def test_auroc_with_one_class_only_equals_torchmetrics():
    logits = torch.randn(20, 2, generator=torch.Generator().manual_seed(3))
    for target in (torch.zeros(20, dtype=torch.long), torch.ones(20, dtype=torch.long)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = feed(counted_classification_metrics(2), [(logits, target)])
            theirs = feed(torchmetrics_collection(2), [(logits, target)])
        assert ours == theirs


def test_reset_forgets_the_previous_batches():
    metrics = counted_classification_metrics(2)
    first = feed(metrics, random_batches(0, 2, False, 2))
    feed(metrics, random_batches(1, 2, True, 2))
    assert feed(metrics, random_batches(0, 2, False, 2)) == first


def test_a_target_outside_the_classes_is_refused():
    metrics = counted_classification_metrics(3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics["accuracy"].update(torch.rand(4, 3), torch.tensor([0, 1, 2, 3]))
