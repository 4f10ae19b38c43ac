"""Evaluation metrics by task (:mod:`mmdistill.tasks`: ``Task.metrics``; each task declares them in
``Task.metric_specs``): torchmetrics, or for single-label classification in one process the same values counted
without it (:mod:`mmdistill.tasks.class_metrics`). Every task adds ``loss``, its supervised loss averaged over the
split. The values are
fractions, as the trainer monitors them; ``Task.for_people`` gives them as people read them (percent metrics x 100).

Under DDP each process sees part of the split; torchmetrics all-gathers its states in
``compute()``, so every process gets the metric over the whole split.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..batch import LABEL, Batch
from ..failures import dependencies_checked
from ..tasks import DEFAULT_TASK, Task, get_task

if TYPE_CHECKING:
    import torchmetrics


@functools.lru_cache(maxsize=16)
def _reusable(task_key: tuple, num_classes: int, device: str, distributed: bool) -> torchmetrics.MetricCollection:
    """The task's metric objects, made once per task, class count, device and whether the process group is up
    (a task may count its metrics itself in one process and need torchmetrics' gathering under DDP)."""
    name, params = task_key
    with dependencies_checked():  # the first torchmetrics import: a torchvision built for another torch is named
        metrics = get_task({"name": name, "params": dict(params)}).metrics(num_classes)
    return metrics.to(device)


def metric_collection(num_classes: int) -> torchmetrics.MetricCollection:
    """The classification metrics (accuracy, f1_macro, auroc for two classes)."""
    with dependencies_checked():
        return get_task(DEFAULT_TASK).metrics(num_classes)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    num_classes: int,
    device: torch.device | str = "cpu",
    transform: Callable[[Batch], Batch] | None = None,
    task: Task | str | Any = None,
) -> dict[str, float]:
    """Metrics of ``model`` over ``batches`` for ``task`` (None: classification), plus the mean task loss as ``loss``.

    ``transform`` is applied to each batch first (e.g. a masker removing a modality).
    """
    task = get_task(task)
    was_training = model.training
    model.eval()
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    metrics = _reusable(task.cache_key(), num_classes, str(torch.device(device)), distributed)  # reset per use
    metrics.reset()
    loss_sum = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        if transform is not None:
            batch = transform(batch)
        output = model(batch).float()
        y = batch[LABEL]
        batch_loss, batch_count = task.loss_sum(output, y)
        loss_sum += batch_loss
        count += batch_count
        task.update_metrics(metrics, output, y)
    if distributed:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    out = {k: float(v) for k, v in metrics.compute().items()}
    metrics.reset()
    out["loss"] = float(loss_sum / count.clamp(min=1))
    model.train(was_training)
    return out
