"""Evaluation metrics from torchmetrics: accuracy, macro-F1, and AUROC for binary tasks.

Under DDP each process sees part of the split; torchmetrics all-gathers its states in
``compute()``, so every process gets the metric over the whole split.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import LABEL, Batch

if TYPE_CHECKING:
    import torchmetrics


@functools.lru_cache(maxsize=16)
def _reusable(num_classes: int, device: str) -> torchmetrics.MetricCollection:
    return metric_collection(num_classes).to(device)


def metric_collection(num_classes: int) -> torchmetrics.MetricCollection:
    import torchmetrics  # here, not at module level: importing it costs about 2 s of start-up (issue 16)

    metrics: dict[str, torchmetrics.Metric] = {
        "accuracy": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": torchmetrics.classification.MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes == 2:
        metrics["auroc"] = torchmetrics.classification.BinaryAUROC()
    return torchmetrics.MetricCollection(metrics)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], num_classes: int, device: torch.device | str = "cpu",
             transform: Callable[[Batch], Batch] | None = None) -> dict[str, float]:
    """Metrics of ``model`` over ``batches`` (plus mean cross-entropy as ``loss``).

    ``transform`` is applied to each batch first (e.g. a masker removing a modality).
    """
    was_training = model.training
    model.eval()
    metrics = _reusable(num_classes, str(torch.device(device)))  # built once per (classes, device), reset per use
    metrics.reset()
    loss_sum = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        if transform is not None:
            batch = transform(batch)
        logits = model(batch).float()
        y = batch[LABEL]
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        count += len(y)
        probs = logits.softmax(-1)
        metrics["accuracy"].update(probs, y)
        metrics["f1_macro"].update(probs, y)
        if "auroc" in metrics:
            metrics["auroc"].update(probs[:, 1], y)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    out = {k: float(v) for k, v in metrics.compute().items()}
    metrics.reset()
    out["loss"] = float(loss_sum / count.clamp(min=1))
    model.train(was_training)
    return out
