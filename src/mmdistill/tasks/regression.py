"""Regression: D real outputs per example (CMU-MOSI sentiment: D = 1).

    output (B,) or (B, D), target float (B,) or (B, D)      ((B, 1) and (B,) are paired as one column)
    loss      MSE(y, s(x)) or L1(y, s(x))                     (``task.params.loss``), mean over examples and outputs
    KD        regression to the teacher: MSE(t(x), s(x)) or L1(t(x), s(x)), the same ``loss``; no temperature
    metrics   mae, pearson (Pearson r of each output over the split, averaged over outputs; CMU-MOSI's metrics)

There are no class probabilities to soften, so Hinton's temperature has no meaning here: ``temperature`` in
``method.params`` is refused by name, and :meth:`Regression.kd_loss` refuses any temperature but 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from ..errors import BatchError, ConfigError
from .base import MetricSpec, Task, first_bad_row, where

if TYPE_CHECKING:
    import torchmetrics

NO_TEMPERATURE = "regression's KD term is a distance to the teacher's output, with no class probabilities to soften"


class RegressionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loss: Literal["mse", "l1"] = "mse"


def paired(output: Tensor, target: Tensor, what: str = "'label'") -> tuple[Tensor, Tensor]:
    """``output`` and ``target`` as tensors of one shape: (B, 1) against (B,) becomes (B,) against (B,)."""
    if output.dim() == 2 and output.shape[1] == 1 and target.dim() == 1:
        output = output[:, 0]
    elif target.dim() == 2 and target.shape[1] == 1 and output.dim() == 1:
        target = target[:, 0]
    if output.shape != target.shape:  # never broadcast (B,) against (B, 1): that would compare every pair
        raise BatchError(
            f"{what}: shape {tuple(target.shape)} does not match the model's output {tuple(output.shape)}"
            " (task 'regression' expects (B,) or (B, D) for both)"
        )
    return output, target


def pearson_over_outputs(num_outputs: int) -> torchmetrics.Metric:
    """Pearson r of each output column over the split, averaged over the columns."""
    import torchmetrics

    class MeanPearson(torchmetrics.regression.PearsonCorrCoef):
        def compute(self) -> Tensor:
            return super().compute().float().mean()

    return MeanPearson(num_outputs=num_outputs)


class Regression(Task):
    name = "regression"
    Params = RegressionParams
    params: RegressionParams
    metric_specs: ClassVar[Mapping[str, MetricSpec]] = {
        "mae": MetricSpec("MAE", higher_is_better=False, digits=4),
        "pearson": MetricSpec("Pearson r", digits=3, bounds=(-1.0, 1.0)),
    }
    default_monitor = "mae"
    summary_note = (
        "MAE in the target's units, Pearson r as is; an interval past [-1, 1] is shown clipped and marked (clipped)"
    )
    num_classes_from_targets = True  # the number of target columns
    output_columns = "outputs"
    uses_temperature = False
    one_target_per_example = True

    def _distance(self, a: Tensor, b: Tensor, reduction: str = "mean") -> Tensor:
        fn = F.mse_loss if self.params.loss == "mse" else F.l1_loss
        return fn(a, b.to(a.dtype), reduction=reduction)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self._distance(*paired(output, target))

    def kd_loss(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        """``mean (s - t)^2`` (mse) or ``mean |s - t|`` (l1) over examples and outputs; ``temperature`` must be 1."""
        self._no_temperature(temperature)
        return self._distance(*paired(student_out, teacher_out, "teacher output"))

    def kd_per_example(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        self._no_temperature(temperature)
        s, t = paired(student_out, teacher_out, "teacher output")
        per = self._distance(s, t, "none")
        return per.reshape(per.shape[0], -1).mean(1)

    @staticmethod
    def _no_temperature(temperature: float) -> None:
        if temperature != 1.0:
            raise ConfigError(
                f"method.params.temperature: {temperature} refused for task 'regression': {NO_TEMPERATURE}"
            )

    def check_target(self, target: Any, num_classes: int | None, index: Tensor | None = None) -> None:
        if num_classes is None and isinstance(target, Tensor) and target.dim() in (1, 2):
            num_classes = 1 if target.dim() == 1 else target.shape[1]  # not known yet: the target's own columns
        shape = "(B,)" if num_classes == 1 else f"(B, {num_classes})"
        if not isinstance(target, Tensor):
            raise self.refuse(f"task 'regression' expects a float tensor {shape}, got {type(target).__name__}")
        if not target.is_floating_point():
            raise self.refuse(
                f"task 'regression' expects a float tensor {shape}; got dtype {target.dtype} (class "
                "indices? use task 'classification'; integer-valued scores: convert with .float())"
            )
        ok = (target.dim() == 1 and num_classes == 1) or (target.dim() == 2 and target.shape[1] == num_classes)
        if not ok:
            raise self.refuse(
                f"task 'regression' expects a float tensor {shape} for a model with {num_classes} "
                f"output(s); got shape {tuple(target.shape)}"
            )
        bad = ~torch.isfinite(target)
        if bad.any():
            row = first_bad_row(bad)
            raise self.refuse(f"task 'regression': a non-finite target (NaN or Inf) at {where(index, row)}")

    def metrics(self, num_classes: int) -> torchmetrics.MetricCollection:
        import torchmetrics

        return torchmetrics.MetricCollection(
            {
                "mae": torchmetrics.regression.MeanAbsoluteError(),
                "pearson": pearson_over_outputs(num_classes),
            }
        )

    def update_metrics(self, metrics: torchmetrics.MetricCollection, output: Tensor, target: Tensor) -> None:
        output, target = paired(output, target)
        if output.dim() == 2 and output.shape[1] == 1:  # one output: PearsonCorrCoef(num_outputs=1) takes (B,)
            output, target = output[:, 0], target[:, 0]
        metrics["mae"].update(output, target)
        metrics["pearson"].update(output, target.to(output.dtype))

    def monitor_value(self, output: Tensor, target: Tensor) -> float:
        """MAE, ``mean |y - s(x)|`` over examples and outputs (torchmetrics' MeanAbsoluteError), in closed form."""
        output, target = paired(output, target)
        return float((output - target.to(output.dtype)).abs().mean())

    def loss_sum(self, output: Tensor, target: Tensor) -> tuple[Tensor, int]:
        per = self._distance(*paired(output, target), "none")
        return per.reshape(per.shape[0], -1).mean(1).sum(), len(target)
