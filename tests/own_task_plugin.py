"""A user's own prediction task in one file, as the tests install it (copied into tmp_path, put on PYTHONPATH).

It registers the task ``ordinal`` (ordered classes, e.g. a 1-4 star rating) with its loss, KD term, target check
and metrics, and gives a data factory whose datasets declare that task. A config uses both with
``imports: [my_task]``, ``task: ordinal`` and ``data: {dataset: "my_task:make_splits"}``.
"""

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdistill.kl import kd_loss, kd_per_example
from mmdistill.tasks import TASKS, MetricSpec, Task
from mmdistill.tasks.base import percent, where


def used(name):
    path = os.environ.get("OWN_PLUGINS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


@TASKS.register("ordinal")
class Ordinal(Task):
    """Ordered classes 0 < 1 < ... < C-1: cross-entropy, Hinton KD; ``within_one`` is the share of examples
    predicted at most one class off (a percent metric), ``off_by`` the mean distance |argmax - y| in classes."""

    metric_specs = {
        "within_one": percent("within-one accuracy"),
        "off_by": MetricSpec("mean class distance", higher_is_better=False, digits=3),
    }
    default_monitor = "within_one"

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        used("task loss")
        return F.cross_entropy(output, target)

    def kd_loss(self, student_out, teacher_out, temperature=1.0, target=None):
        used("task kd")
        return kd_loss(student_out, teacher_out, temperature)

    def kd_per_example(self, student_out, teacher_out, temperature=1.0, target=None):
        return kd_per_example(student_out, teacher_out, temperature)

    def check_target(self, target, num_classes, index=None):
        used("task check")
        if not isinstance(target, Tensor) or target.dtype != torch.int64 or target.dim() != 1:
            raise self.refuse(
                f"task 'ordinal' expects int64 class indices (B,), got {getattr(target, 'dtype', target)}"
            )
        bad = (target < 0) | (target >= (num_classes or 2**62))
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise self.refuse(
                f"task 'ordinal': class {int(target[row])} outside [0, {num_classes}) at {where(index, row)}"
            )

    def metrics(self, num_classes):
        import torchmetrics

        return torchmetrics.MetricCollection(
            {"within_one": torchmetrics.MeanMetric(), "off_by": torchmetrics.MeanMetric()}
        )

    def update_metrics(self, metrics, output, target):
        distance = (output.argmax(1) - target).abs().float()
        metrics["within_one"].update((distance <= 1).float())
        metrics["off_by"].update(distance)


class Ratings(torch.utils.data.Dataset):
    """Two noisy views of a rating in 0..3: ``a`` and ``b`` (float vectors), ``label`` the rating."""

    task, num_classes = "ordinal", 4

    def __init__(self, n: int, seed: int, bad_label: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        base = self.y.float()[:, None] + 0.3 * torch.randn(n, 4, generator=g)
        self.a, self.b = base + 0.2 * torch.randn(n, 4, generator=g), base + 0.5 * torch.randn(n, 4, generator=g)
        self.bad_label = bad_label

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        label = torch.tensor(7) if self.bad_label and i == 3 else self.y[i]
        return {"a": self.a[i], "b": self.b[i], "label": label}


def make_splits(n: int = 48, bad_label: bool = False):
    return {"train": Ratings(n, 0, bad_label), "val": Ratings(n // 2, 1), "test": Ratings(n // 2, 2)}
