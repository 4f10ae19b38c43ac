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
* ``refused_methods``: method name -> why it does not carry over to this task (:meth:`check_method`).

``num_classes`` is the number of output columns: classes (classification, segmentation), labels (multilabel),
regression outputs D (1 for a (B,) target).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

from ..errors import ConfigError, TargetError

if TYPE_CHECKING:
    import torchmetrics

LABEL_KEY = "label"
FEATURE_METHODS = ("hint", "at", "pkt", "rkd", "sp", "crd")  # read hooked features only: carry over to every task
CLASS_DISTRIBUTION_METHODS = ("dkd", "dist", "logit_std_kd", "c2kd")  # need one softmax over classes per example


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
    refused_methods: ClassVar[Mapping[str, str]] = {}  # method name -> why it does not carry over
    refused_method_params: ClassVar[Mapping[str, str]] = {}  # method.params key -> why it is refused for this task

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
    def method_problem(self, method: str, params: Mapping[str, Any]) -> str | None:
        """Why ``method`` with ``params`` cannot run on this task (a message starting with the config key), or None."""
        if method == "msd" and self.name != "classification":
            if params.get("weighting") == "learned":
                return (
                    f"method.params.weighting: 'learned' does not carry over to task {self.name!r} (its weight net "
                    "reads the entropy of one class distribution per example); use uniform, population or instance"
                )
            if params.get("saliency") == "true_class":
                return (
                    f"method.params.saliency: 'true_class' needs one true class per example, which task "
                    f"{self.name!r} does not have; use 'kl'"
                )
        if method in self.refused_methods:
            return f"method.name: {method!r} does not carry over to task {self.name!r}: {self.refused_methods[method]}"
        for key, why in self.refused_method_params.items():
            name, _, field = key.partition(".")
            if name == method and field in params:
                return f"method.params.{field}: refused for task {self.name!r}: {why}; remove it"
        return None

    def check_method(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        problem = self.method_problem(method, params or {})
        if problem:
            raise ConfigError(problem)

    def check_monitor(self, monitor: str, key: str = "trainer.monitor") -> None:
        if monitor not in self.monitors:
            raise ConfigError(
                f"{key}: {monitor!r} is not a metric of task {self.name!r}; use one of {', '.join(self.monitors)}"
            )

    def higher_is_better(self, monitor: str) -> bool:
        self.check_monitor(monitor)
        return self.monitors[monitor]
