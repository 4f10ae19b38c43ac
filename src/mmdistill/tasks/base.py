"""The task contract: what a prediction task gives the trainer, the methods and the evaluation.

A :class:`Task` holds the task's parameters (a pydantic ``Params`` model, ``task.params`` in the config) and gives

* ``loss(output, target)``: the supervised term (scalar);
* ``kd_loss(student_out, teacher_out, temperature, target=None)``: the KD term (scalar);
* ``kd_per_example(student_out, teacher_out, temperature, target=None)``: the same term per example, shape (B,),
  whose mean is ``kd_loss`` (MSD weights it per example); ``saliency(full, removed, target)``: MSD's KL saliency,
  the per-example KD of the teacher's output on ``x^(-m)`` towards its output on ``x``, at T = 1;
* ``check_target(target, num_classes, index=None)``: the form of ``batch["label"]`` (a :class:`TargetError`,
  both a DataError and a BatchError, naming the key, what was expected and the example);
* ``metrics(num_classes)``: a torchmetrics ``MetricCollection`` with stable names; ``update_metrics`` feeds it one
  batch; ``loss_sum(output, target)`` gives (sum, count) for the evaluation's mean ``loss``;
* ``monitors``: the metrics ``trainer.monitor`` may name, each with ``True`` if higher is better;
* ``gives``: what the task's outputs give a method (:data:`CLASS_DISTRIBUTION`, :data:`TRUE_CLASS`; with
  ``uses_temperature`` also :data:`SOFTENED_OUTPUTS`); a method declares what it needs
  (:mod:`mmdistill.methods.params`), so no task lists methods.

``num_classes`` is the number of output columns: classes (classification, segmentation), labels (multilabel),
regression outputs D (1 for a (B,) target).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

from ..errors import ConfigError, TargetError
from ..registry import METHODS

if TYPE_CHECKING:
    import torchmetrics

LABEL_KEY = "label"
# What a task's outputs may give a method (``Task.gives``; a method's ``task_needs`` names what it needs).
CLASS_DISTRIBUTION = "one class distribution per example"  # one softmax over classes per example
TRUE_CLASS = "one true class per example"
SOFTENED_OUTPUTS = "outputs softened by a temperature"  # softmax(z / T) or sigmoid(z / T): Task.uses_temperature


class NoTaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def where(index: Tensor | None, row: int) -> str:
    """``example index 17`` when the batch carries ``"index"``, else ``row 3 of the batch``."""
    if index is not None and index.numel() > row:
        return f"example index {int(index.reshape(-1)[row])}"
    return f"row {row} of the batch"


def first_bad_row(bad: Tensor) -> int:
    """The first example (axis 0) holding a True anywhere in ``bad``."""
    return int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0, 0])


class Task:
    """Base class; subclasses set ``name``, ``Params``, ``monitors``, ``default_monitor`` and the methods below."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoTaskParams
    monitors: ClassVar[Mapping[str, bool]] = {"loss": False}  # metric -> higher is better
    default_monitor: ClassVar[str] = "loss"
    uses_temperature: ClassVar[bool] = True
    gives: ClassVar[frozenset[str]] = frozenset()  # CLASS_DISTRIBUTION, TRUE_CLASS (SOFTENED_OUTPUTS: uses_temperature)

    def __init__(self, params: BaseModel | Mapping[str, Any] | None = None) -> None:
        if params is None or isinstance(params, Mapping):
            try:
                params = self.Params.model_validate(dict(params or {}))
            except ValidationError as err:
                e = err.errors()[0]
                key = "task.params." + ".".join(str(p) for p in e["loc"])
                if e["type"] == "extra_forbidden":
                    raise ConfigError(
                        f"{key}: unknown key; valid keys: {', '.join(self.Params.model_fields)}"
                    ) from None
                raise ConfigError(f"{key}: {e['msg']} (task {self.name!r})") from None
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params.model_dump()})"

    def cache_key(self) -> tuple:
        return (self.name, tuple(sorted(self.params.model_dump().items())))

    # -- losses ------------------------------------------------------------------------------------------------
    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def kd_loss(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    def kd_per_example(
        self, student_out: Tensor, teacher_out: Tensor, temperature: float = 1.0, target: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError

    def saliency(self, full: Tensor, removed: Tensor, target: Tensor | None = None) -> Tensor:
        """(B,) MSD's ``kl`` saliency of one modality: ``kd_per_example(removed -> full)`` at T = 1.

        For classification this is ``KL(p_t(x) || p_t(x^(-m)))`` of
        :func:`mmdistill.methods.msd_saliency.saliency_from_logits`.
        """
        return self.kd_per_example(removed, full, 1.0, target)

    # -- targets -----------------------------------------------------------------------------------------------
    def check_target(self, target: Any, num_classes: int, index: Tensor | None = None) -> None:
        raise NotImplementedError

    def refuse(self, what: str) -> TargetError:
        return TargetError(f"{LABEL_KEY!r}: {what}")

    # -- evaluation --------------------------------------------------------------------------------------------
    def metrics(self, num_classes: int) -> torchmetrics.MetricCollection:
        raise NotImplementedError

    def update_metrics(self, metrics: torchmetrics.MetricCollection, output: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def loss_sum(self, output: Tensor, target: Tensor) -> tuple[Tensor, int | Tensor]:
        """(sum of the loss over the batch's units, number of units): the evaluation's ``loss`` is sum / count."""
        return self.loss(output, target) * len(target), len(target)

    # -- what carries over ---------------------------------------------------------------------------------
    def gives_to_methods(self, need: str) -> bool:
        """Whether the task's outputs give what a method needs (one of the names above)."""
        return need in self.gives or (need == SOFTENED_OUTPUTS and self.uses_temperature)

    def check_method(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """ConfigError naming the key when method ``method`` with ``params`` cannot run on this task, or a parameter
        is invalid: the method's own check (``Method.checked_params``), asked from the task's side."""
        METHODS.get(method).checked_params(method, params, self)

    def check_monitor(self, monitor: str, key: str = "trainer.monitor") -> None:
        if monitor not in self.monitors:
            raise ConfigError(
                f"{key}: {monitor!r} is not a metric of task {self.name!r}; use one of {', '.join(self.monitors)}"
            )

    def higher_is_better(self, monitor: str) -> bool:
        self.check_monitor(monitor)
        return self.monitors[monitor]
