"""Single-label classification metrics computed from counts, without importing torchmetrics.

Importing torchmetrics costs about 1.8 s of CPU (its package imports every domain, and with them ``transformers``
and ``scipy.signal`` where they are installed); a run of a small model pays it at its first evaluation. These
classes compute what torchmetrics' ``MulticlassAccuracy(average="micro")``, ``MulticlassF1Score(average="macro")``
and ``BinaryAUROC()`` compute, with the same operations in the same dtypes, so the values are bitwise equal
(``tests/test_class_metrics_equal_torchmetrics.py`` checks it on random data, ties included):

* accuracy  = sum_i [argmax p_i = y_i] / N (float32);
* macro-F1  = mean over classes with tp + fp + fn > 0 of 2 tp / (2 tp + fp + fn), from the confusion matrix;
* AUROC     = trapezoidal area under the ROC curve of the scores p_i1 (scores outside [0, 1] pass a sigmoid),
  one point per distinct score (the curve of scikit-learn's ``roc_curve``).

One process only: under DDP the task uses torchmetrics, which gathers the states of every process.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor


def _divide(num: Tensor, denom: Tensor) -> Tensor:
    """``num / denom`` in float32 (integers cast), 0 where ``denom`` is 0 (torchmetrics' ``_safe_divide``)."""
    num = num if num.is_floating_point() else num.float()
    denom = denom if denom.is_floating_point() else denom.float()
    return torch.where(denom != 0, num / denom, torch.zeros((), dtype=num.dtype, device=num.device))


def _check_class_targets(target: Tensor, num_classes: int) -> None:
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"metric targets must lie in [0, {num_classes}), got min {int(target.min())} and max {int(target.max())}"
        )


class Accuracy:
    """Micro accuracy: the fraction of examples whose highest-scoring class is their label."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros((), dtype=torch.long)
        self.total = torch.zeros((), dtype=torch.long)

    def update(self, probs: Tensor, target: Tensor) -> None:
        _check_class_targets(target, self.num_classes)
        self.correct = self.correct.to(target.device) + (probs.argmax(dim=1) == target).sum()
        self.total = self.total.to(target.device) + target.numel()

    def compute(self) -> Tensor:
        return _divide(self.correct, self.total)


class MacroF1:
    """Macro-F1 over the classes that occur as a label or a prediction, from the confusion matrix's counts."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def update(self, probs: Tensor, target: Tensor) -> None:
        _check_class_targets(target, self.num_classes)
        preds = probs.argmax(dim=1)
        counts = torch.bincount(target.long() * self.num_classes + preds, minlength=self.num_classes**2)
        self.confusion = self.confusion.to(target.device) + counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> Tensor:
        tp = self.confusion.diag()
        fp, fn = self.confusion.sum(0) - tp, self.confusion.sum(1) - tp
        f1 = _divide(2 * tp, 2 * tp + fn + fp)
        weights = torch.ones_like(f1)
        weights[tp + fp + fn == 0] = 0.0
        return _divide(weights * f1, weights.sum(-1, keepdim=True)).sum(-1)


class BinaryAUROC:
    """Area under the ROC curve of the positive class's score, every distinct score a threshold."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.scores: list[Tensor] = []
        self.targets: list[Tensor] = []

    def update(self, scores: Tensor, target: Tensor) -> None:
        if target.numel() and not bool(((target == 0) | (target == 1)).all()):
            raise ValueError("AUROC targets must be 0 or 1")
        scores, target = scores.flatten(), target.flatten()
        if not bool(((scores >= 0) & (scores <= 1)).all()):
            scores = scores.sigmoid()
        self.scores.append(scores)
        self.targets.append(target)

    def compute(self) -> Tensor:
        scores, target = torch.cat(self.scores), torch.cat(self.targets)
        order = torch.argsort(scores, descending=True)
        scores, target = scores[order], target[order]
        last_of_each_value = F.pad(torch.where(scores[1:] - scores[:-1])[0], [0, 1], value=target.size(0) - 1)
        true_pos = torch.cumsum((target == 1).long() * 1.0, dim=0)[last_of_each_value]  # float32, as torchmetrics
        false_pos = 1 + last_of_each_value - true_pos
        start = torch.zeros(1, dtype=true_pos.dtype, device=true_pos.device)  # the curve starts at (0, 0)
        fpr = _rate(torch.cat([start, false_pos]), "negative", scores.dtype)
        tpr = _rate(torch.cat([start, true_pos]), "positive", scores.dtype)
        return torch.trapz(tpr, fpr, dim=-1)


def _rate(cumulative: Tensor, kind: str, dtype: torch.dtype) -> Tensor:
    """A cumulative count over the thresholds as a rate; zeros (with a warning) when there is no such example."""
    if cumulative[-1] <= 0:
        warnings.warn(f"AUROC: no {kind} examples in the targets; their rate is taken as 0", stacklevel=3)
        return torch.zeros(len(cumulative), dtype=dtype, device=cumulative.device)
    return cumulative / cumulative[-1]


class ClassificationMetrics(dict):
    """The metrics by name, with the part of torchmetrics' ``MetricCollection`` that evaluation uses."""

    def to(self, device: torch.device | str) -> ClassificationMetrics:
        return self  # the states follow the device of the first update

    def reset(self) -> None:
        for metric in self.values():
            metric.reset()

    def compute(self) -> dict[str, Tensor]:
        return {name: metric.compute() for name, metric in self.items()}


def counted_classification_metrics(num_classes: int) -> ClassificationMetrics:
    """accuracy (micro), f1_macro, and auroc for two classes, by name in sorted order (as a ``MetricCollection``)."""
    metrics: dict[str, Accuracy | MacroF1 | BinaryAUROC] = {
        "accuracy": Accuracy(num_classes),
        "f1_macro": MacroF1(num_classes),
    }
    if num_classes == 2:
        metrics["auroc"] = BinaryAUROC()
    return ClassificationMetrics(sorted(metrics.items()))
