"""Multi-label classification: any subset of C labels per example (MM-IMDB's 23 genres).

    output (B, C) logits, target float multi-hot (B, C) in {0, 1}
    loss      BCE-with-logits, mean over labels and examples
    KD        T^2 * mean_{x, c} KL(Bern(sigmoid(t_c / T)) || Bern(sigmoid(s_c / T)))
              per-label binary KL, KL(q || p) = q log(q / p) + (1 - q) log((1 - q) / (1 - p))
    metrics   f1_micro, f1_macro (threshold 0.5 on sigmoid; MM-IMDB's micro/macro F1, Arevalo et al., 2017),
              map: mean over labels with at least one positive of their average precision

The binary KL of a label is the two-class softmax KL of the logits (z, 0): softmax((z, 0) / T) =
(sigmoid(z / T), 1 - sigmoid(z / T)), so the KD term reuses :func:`mmdistill.methods.kd.kd_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kl import kd_loss as hinton_kd_loss
from ..kl import kd_per_example as hinton_kd_per_example
from .base import MetricSpec, Task, first_bad_row, percent, where

if TYPE_CHECKING:
    import torchmetrics


def two_class_logits(logits: Tensor) -> Tensor:
    """(..., C) label logits -> (..., C, 2) logits (z, 0), whose softmax is (sigmoid(z), 1 - sigmoid(z))."""
    return torch.stack([logits, torch.zeros_like(logits)], -1)


def mean_ap_over_present_labels(num_labels: int) -> torchmetrics.Metric:
    """mAP: average precision of each label, averaged over the labels with a positive in the evaluated split.

    (torchmetrics' macro average counts a label without positives as AP 0.)
    """
    import torchmetrics

    class PresentLabelsMAP(torchmetrics.classification.MultilabelAveragePrecision):
        positives: Tensor  # a metric state (add_state)

        def __init__(self) -> None:
            super().__init__(num_labels, average="none")
            self.add_state("positives", torch.zeros(num_labels), dist_reduce_fx="sum")

        def update(self, preds: Tensor, target: Tensor) -> None:
            super().update(preds, target)
            self.positives += target.sum(0)

        def compute(self) -> Tensor:  # type: ignore[override]  # as torchmetrics' own: the curve base gives a tuple
            import warnings

            with warnings.catch_warnings():  # "no positive samples" for the labels left out below
                warnings.simplefilter("ignore", UserWarning)
                ap = super().compute()
            present = self.positives > 0
            return ap[present].mean() if present.any() else ap.new_tensor(float("nan"))

    return PresentLabelsMAP()


class Multilabel(Task):
    name = "multilabel"
    metric_specs: ClassVar[Mapping[str, MetricSpec]] = {
        "f1_micro": percent("micro-F1"),
        "f1_macro": percent("macro-F1"),
        "map": percent("mAP"),
    }
    default_monitor = "f1_micro"
    output_columns = "labels"
    one_target_per_example = True

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))

    def kd_loss(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        return hinton_kd_loss(two_class_logits(student_out), two_class_logits(teacher_out), temperature)

    def kd_per_example(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        per_label = hinton_kd_per_example(two_class_logits(student_out), two_class_logits(teacher_out), temperature)
        return per_label.mean(-1)

    def check_target(self, target: Any, num_classes: int | None, index: Tensor | None = None) -> None:
        if not isinstance(target, Tensor):
            raise self.refuse(
                f"task 'multilabel' expects a float multi-hot tensor (B, {num_classes}), got {type(target).__name__}"
            )
        if target.dim() == 1 and not target.is_floating_point():
            raise self.refuse(
                f"task 'multilabel' expects a float multi-hot tensor (B, {num_classes}) with one 0/1 "
                f"column per label; got {target.dtype} of shape {tuple(target.shape)}, class indices: "
                "use task 'classification', or F.one_hot(y, num_classes).float() for one label each"
            )
        if num_classes is None and target.dim() == 2:
            num_classes = target.shape[1]
        if target.dim() != 2 or target.shape[1] != num_classes:
            raise self.refuse(
                f"task 'multilabel' expects a float multi-hot tensor (B, {num_classes}), one column per "
                f"label; got {target.dtype} of shape {tuple(target.shape)}"
            )
        if not target.is_floating_point():
            raise self.refuse(
                f"task 'multilabel' expects a float multi-hot tensor (B, {num_classes}); got dtype "
                f"{target.dtype}: convert it with .float()"
            )
        bad = (target != 0) & (target != 1)
        if bad.any():
            row = first_bad_row(bad)
            col = int(bad[row].nonzero()[0, 0])
            raise self.refuse(
                f"task 'multilabel' expects multi-hot values 0 or 1; got {float(target[row, col])} for "
                f"label {col} at {where(index, row)}"
            )

    def metrics(self, num_classes: int) -> torchmetrics.MetricCollection:
        import torchmetrics

        f1 = torchmetrics.classification.MultilabelF1Score
        return torchmetrics.MetricCollection(
            {
                "f1_micro": f1(num_classes, average="micro"),
                "f1_macro": f1(num_classes, average="macro"),
                "map": mean_ap_over_present_labels(num_classes),
            }
        )

    def update_metrics(self, metrics: torchmetrics.MetricCollection, output: Tensor, target: Tensor) -> None:
        probs, hits = output.sigmoid(), target.long()
        for name in ("f1_micro", "f1_macro", "map"):
            metrics[name].update(probs, hits)

    def monitor_value(self, output: Tensor, target: Tensor) -> float:
        """micro-F1 in closed form, ``2 TP / (2 TP + FP + FN)`` over every (example, label), a label predicted when
        its sigmoid exceeds 0.5 (torchmetrics' MultilabelF1Score, average="micro"); 0 without any positive."""
        predicted, truth = output.sigmoid() > 0.5, target > 0.5
        tp = float((predicted & truth).sum())
        wrong = float((predicted ^ truth).sum())
        return 2 * tp / (2 * tp + wrong) if tp + wrong > 0 else 0.0

    def loss_sum(self, output: Tensor, target: Tensor) -> tuple[Tensor, int]:
        per_example = F.binary_cross_entropy_with_logits(output, target.to(output.dtype), reduction="none").mean(1)
        return per_example.sum(), len(target)
