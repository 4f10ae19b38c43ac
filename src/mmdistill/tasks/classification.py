"""Single-label classification: one class index per example.

output (B, C) logits, target int64 (B,) in [0, C)
loss      CE(y, s(x))
KD        T^2 * KL(p_t(x; T) || p_s(x; T)), batchmean      (Hinton et al., 2015; methods/kd.py: kd_loss)
metrics   accuracy (micro), f1_macro, auroc (two classes only)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kl import kd_loss as hinton_kd_loss
from ..kl import kd_per_example as hinton_kd_per_example
from .base import CLASS_DISTRIBUTION, TRUE_CLASS, MetricSpec, Task, first_bad_row, percent, where
from .class_metrics import ClassificationMetrics, counted_classification_metrics

if TYPE_CHECKING:
    import torchmetrics


def counted_here() -> bool:
    """Whether this process counts its classification metrics itself: yes unless a process group is up (DDP)."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized())


def classification_metrics(num_classes: int) -> torchmetrics.MetricCollection | ClassificationMetrics:
    """accuracy (micro), f1_macro, and auroc for two classes: the names and numbers of every run so far.

    One process counts them itself (:mod:`.class_metrics`: the same values, without torchmetrics' import); under
    DDP torchmetrics gathers the states of every process."""
    if counted_here():
        return counted_classification_metrics(num_classes)
    import torchmetrics  # here, not at module level: importing it costs about 2 s of start-up

    metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection] = {
        "accuracy": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": torchmetrics.classification.MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes == 2:
        metrics["auroc"] = torchmetrics.classification.BinaryAUROC()
    return torchmetrics.MetricCollection(metrics)


class Classification(Task):
    name = "classification"
    metric_specs: ClassVar[Mapping[str, MetricSpec]] = {
        "accuracy": percent("accuracy"),
        "f1_macro": percent("macro-F1"),
        "auroc": percent("AUROC", summary=False),  # two classes only
    }
    default_monitor = "accuracy"
    gives = frozenset({CLASS_DISTRIBUTION, TRUE_CLASS})
    one_target_per_example = True

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)

    def kd_loss(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        return hinton_kd_loss(student_out, teacher_out, temperature)

    def kd_per_example(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        return hinton_kd_per_example(student_out, teacher_out, temperature)

    def check_target(self, target: Any, num_classes: int | None, index: Tensor | None = None) -> None:
        if not isinstance(target, Tensor):
            raise self.refuse(
                f"task 'classification' expects an int64 tensor of class indices (B,), got {type(target).__name__}"
            )
        if target.dim() == 2 and target.shape[1] == num_classes and target.shape[1] > 1:
            raise self.refuse(
                "task 'classification' expects one class index per example, int64 of shape (B,); got "
                f"{target.dtype} of shape "
                f"{tuple(target.shape)}, a multi-hot matrix (one column per class): use task 'multilabel',"
                " or target.argmax(1) if each row has exactly one 1"
            )
        if target.dtype not in (torch.int32, torch.int64) or target.dim() != 1:
            raise self.refuse(
                "task 'classification' expects a 1-D integer tensor of class indices (B,), got dtype "
                f"{target.dtype} and shape "
                f"{tuple(target.shape)}"
            )
        if num_classes is None:  # an item dataset's collate before the run's class count is known
            return
        bad = (target < 0) | (target >= num_classes)
        if bad.any():
            row = first_bad_row(bad)
            raise self.refuse(
                f"values must lie in [0, {num_classes}), got min {int(target.min())} and max "
                f"{int(target.max())} (value {int(target[row])} at {where(index, row)})"
            )

    def metrics(self, num_classes: int) -> torchmetrics.MetricCollection:
        # the counted metrics offer what evaluation uses of a MetricCollection (update, compute, reset, to, names)
        return cast("torchmetrics.MetricCollection", classification_metrics(num_classes))

    def update_metrics(
        self, metrics: torchmetrics.MetricCollection | ClassificationMetrics, output: Tensor, target: Tensor
    ) -> None:
        probs = output.softmax(-1)
        metrics["accuracy"].update(probs, target)
        metrics["f1_macro"].update(probs, target)
        if "auroc" in metrics:
            metrics["auroc"].update(probs[:, 1], target)

    def loss_sum(self, output: Tensor, target: Tensor) -> tuple[Tensor, int]:
        return F.cross_entropy(output, target, reduction="sum"), len(target)
