"""Dense per-pixel classification (semantic segmentation; NYU Depth V2 in the MFH paper, Xue et al., ICLR 2023).

output (B, C, H, W) logits, target int64 label map (B, H, W): classes in [0, C) or ``ignore_index`` (default 255)
V = {pixels with target != ignore_index}   (the valid pixels of the batch)
loss      per-pixel CE averaged over V
KD        T^2 * (1 / |V|) sum_{p in V} KL(p_t(p; T) || p_s(p; T))     (softmax over the C classes at pixel p)
          = methods/kd.py's kd_loss on the valid pixels flattened to (|V|, C)
per example (MSD): the same KL averaged over the example's own valid pixels (0 when it has none)
metrics   miou: IoU = TP / (TP + FP + FN) per class over the split (ignored pixels left out), averaged over the
          classes that occur in the target or the prediction (mmsegmentation's convention); pixel_accuracy: the
          share of valid pixels predicted right
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from ..errors import BatchError, ConfigError, DataError, TargetError
from ..kl import kd_loss as hinton_kd_loss
from ..kl import kd_per_example as hinton_kd_per_example
from .base import MetricSpec, Task, first_bad_row, percent, where

if TYPE_CHECKING:
    import torchmetrics


def held_targets(split: Any) -> Tensor | None:
    """The split's targets when it holds them in memory (column data; an item dataset whose dataset gives ``labels``
    or ``targets``), else None: reading an item dataset's targets would read every item once more."""
    own = vars(split).get("labels")
    if own is None:
        inner = getattr(split, "dataset", None)
        own = getattr(inner, "labels", None) if inner is not None else None
        own = own if own is not None else getattr(inner, "targets", None)
    return torch.as_tensor(own) if own is not None and len(own) == len(split) else None


class SegmentationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ignore_index: int = Field(
        255, strict=True, ge=-(2**31), le=2**31 - 1, description="label of unlabelled pixels; must not be a real class"
    )


def pixels_last(logits: Tensor) -> Tensor:
    """(B, C, *spatial) -> (B, *spatial, C)."""
    return logits.movedim(1, -1)


def mean_iou(num_classes: int, ignore_index: int) -> torchmetrics.Metric:
    """IoU per class over the split, averaged over the classes with a non-empty union (absent classes left out)."""
    import torchmetrics

    class PresentClassesMeanIoU(torchmetrics.classification.MulticlassJaccardIndex):
        def __init__(self) -> None:
            super().__init__(num_classes, average="none", ignore_index=ignore_index, zero_division=float("nan"))

        def compute(self) -> Tensor:
            return super().compute().nanmean()

    return PresentClassesMeanIoU()


class Segmentation(Task):
    name = "segmentation"
    Params = SegmentationParams
    params: SegmentationParams
    metric_specs: ClassVar[Mapping[str, MetricSpec]] = {
        "miou": percent("mIoU"),
        "pixel_accuracy": percent("pixel accuracy"),
    }
    default_monitor = "miou"

    @property
    def ignore_index(self) -> int:
        return self.params.ignore_index

    # -- what the data declare and what the run completes --------------------------------------------------
    @classmethod
    def check_declared(cls, split: Any, where: str) -> None:
        """``num_classes``, and an ``ignore_index`` that is not a real class (it would drop that class's pixels)."""
        super().check_declared(split, where)
        ignore, n = getattr(split, "ignore_index", None), split.num_classes
        if ignore is not None and 0 <= ignore < n:
            raise DataError(
                f"{where}: ignore_index {ignore} collides with real class {ignore} (classes are "
                f"0..{n - 1}); use a value outside them, e.g. 255 or -100"
            )

    @classmethod
    def split_params(cls, split: Any) -> dict[str, Any]:
        ignore = getattr(split, "ignore_index", None)
        return {} if ignore is None else {"ignore_index": ignore}

    def complete_split(self, split: Any, training: bool = False) -> None:
        """A split without its own ``ignore_index`` takes the task's; one that marks unlabelled pixels otherwise is
        refused. A training split whose every pixel is ``ignore_index`` is refused (it would train on nothing, at
        loss 0): checked on the targets the split holds in memory (column data; an item dataset with ``labels``)."""
        own = getattr(split, "ignore_index", None)
        if own is None:
            split.ignore_index = self.ignore_index
        elif own != self.ignore_index:
            raise ConfigError(
                f"task.params.ignore_index: {self.ignore_index}, but split {split.name!r} marks "
                f"unlabelled pixels with {own}; set task.params.ignore_index: {own}"
            )
        held = held_targets(split) if training else None
        if held is not None and held.numel() and not bool((held != self.ignore_index).any()):
            raise self.nothing_to_learn(split.name)

    def nothing_to_learn(self, split_name: str) -> TargetError:
        return TargetError(
            f"split {split_name!r}: every pixel of every label map is ignore_index {self.ignore_index}, so "
            "training would learn nothing (loss 0) and the mIoU would be meaningless; label some pixels, or check "
            "task.params.ignore_index and how the label images are read"
        )

    def check_target_fits(self, target: Tensor, inputs: Mapping[str, Tensor], index: Tensor | None = None) -> None:
        """A label map per pixel of each image modality (float (B, C, H, W) inputs)."""
        for key, x in inputs.items():
            if x.is_floating_point() and x.dim() == 4 and tuple(x.shape[-2:]) != tuple(target.shape[-2:]):
                raise self.refuse(
                    f"label map {tuple(target.shape[-2:])} differs from image {key!r}'s size "
                    f"{tuple(x.shape[-2:])} at {where(index, 0)}; a segmentation label needs one class per pixel"
                )

    def check_outputs(self, outputs: Mapping[str, Tensor], target: Tensor) -> None:
        """Logits (B, C, H, W) at the label map's size."""
        size = tuple(target.shape[1:])
        for who, out in outputs.items():
            if out.dim() != 4 or tuple(out.shape[2:]) != size:
                raise ConfigError(
                    f"{who}.model: task 'segmentation' needs logits (B, C, H, W) at the label map's "
                    f"size (H, W) = {size}; the model outputs {tuple(out.shape)}"
                )

    def check_classes(self, num_classes: int) -> None:
        """``ignore_index`` must not be one of the real classes 0 .. num_classes - 1."""
        if 0 <= self.ignore_index < num_classes:
            raise ConfigError(
                f"task.params.ignore_index: {self.ignore_index} is a real class (the model predicts "
                f"classes 0 .. {num_classes - 1}); choose a value outside [0, {num_classes}), e.g. "
                f"{255 if num_classes <= 255 else -1}"
            )

    def _valid(self, target: Tensor | None, output: Tensor) -> Tensor:
        """(B, *spatial) mask of the valid pixels (all when there is no target)."""
        spatial = output.shape[:1] + output.shape[2:]
        if target is None:
            return torch.ones(spatial, dtype=torch.bool, device=output.device)
        if tuple(target.shape) != tuple(spatial):
            raise BatchError(
                f"'label': label map of shape {tuple(target.shape)} does not match the model's output "
                f"{tuple(output.shape)} (expected (B, H, W) = {tuple(spatial)})"
            )
        return target != self.ignore_index

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        valid = self._valid(target, output)
        if not valid.any():  # CE's mean over no pixel is 0/0
            return output.sum() * 0.0
        return F.cross_entropy(output, target, ignore_index=self.ignore_index)

    def kd_loss(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        valid = self._valid(target, student_out)
        if not valid.any():
            return student_out.sum() * 0.0
        return hinton_kd_loss(pixels_last(student_out)[valid], pixels_last(teacher_out)[valid], temperature)

    def kd_per_example(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        valid = self._valid(target, student_out).flatten(1).to(student_out.dtype)
        per_pixel = hinton_kd_per_example(pixels_last(student_out), pixels_last(teacher_out), temperature).flatten(1)
        return (per_pixel * valid).sum(1) / valid.sum(1).clamp(min=1)

    def check_target(self, target: Any, num_classes: int | None, index: Tensor | None = None) -> None:
        if num_classes is not None:
            self.check_classes(num_classes)
        ii = self.ignore_index
        if not isinstance(target, Tensor):
            raise self.refuse(f"task 'segmentation' expects an int64 label map (B, H, W), got {type(target).__name__}")
        if target.is_floating_point():
            raise self.refuse(
                f"task 'segmentation' expects an int64 label map (B, H, W) of class indices (ignore_index "
                f"{ii} for unlabelled pixels); got dtype {target.dtype}. A label image read as floats "
                "(e.g. scaled to [0, 1]) no longer holds class ids: read it as integers"
            )
        if target.dtype != torch.int64:
            raise self.refuse(
                f"task 'segmentation' expects an int64 label map (B, H, W), got dtype {target.dtype}: "
                "convert it with .long()"
            )
        if target.dim() != 3:
            raise self.refuse(f"task 'segmentation' expects a label map (B, H, W), got shape {tuple(target.shape)}")
        if num_classes is None:
            return
        bad = ((target < 0) | (target >= num_classes)) & (target != ii)
        if bad.any():
            row = first_bad_row(bad)
            value = int(target[row][bad[row]][0])
            raise self.refuse(
                f"task 'segmentation' expects classes in [0, {num_classes}) or ignore_index {ii}; got "
                f"{value} at {where(index, row)}"
            )

    def metrics(self, num_classes: int) -> torchmetrics.MetricCollection:
        import torchmetrics

        self.check_classes(num_classes)
        return torchmetrics.MetricCollection(
            {
                "miou": mean_iou(num_classes, self.ignore_index),
                "pixel_accuracy": torchmetrics.classification.MulticlassAccuracy(
                    num_classes, average="micro", ignore_index=self.ignore_index
                ),
            }
        )

    def update_metrics(self, metrics: torchmetrics.MetricCollection, output: Tensor, target: Tensor) -> None:
        pred, target = output.argmax(1), target.long()
        metrics["miou"].update(pred, target)
        metrics["pixel_accuracy"].update(pred, target)

    def loss_sum(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        valid = self._valid(target, output)
        ce = F.cross_entropy(output, target.long(), ignore_index=self.ignore_index, reduction="sum")
        return ce, valid.sum()
