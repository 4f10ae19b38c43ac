"""The task contract: what a prediction task gives the trainer, the methods and the evaluation.

A :class:`Task` holds the task's parameters (a pydantic ``Params`` model, ``task.params`` in the config) and gives

* ``loss(output, target)``: the supervised term (scalar);
* ``kd_loss(student_out, teacher_out, temperature, target=None)``: the KD term (scalar);
* ``paired_kd_loss(..., rows)``: ``kd_loss`` over the rows where the teacher saw its input (partly paired data);
* ``kd_per_example(student_out, teacher_out, temperature, target=None)``: the same term per example, shape (B,),
  whose mean is ``kd_loss`` (MSD weights it per example); ``saliency(full, removed, target)``: MSD's KL saliency,
  the per-example KD of the teacher's output on ``x^(-m)`` towards its output on ``x``, at T = 1;
* ``check_target(target, num_classes, index=None)``: the form of ``batch["label"]`` (a :class:`TargetError`,
  both a DataError and a BatchError, naming the key, what was expected and the example);
* ``metrics(num_classes)``: a torchmetrics ``MetricCollection`` with stable names; ``update_metrics`` feeds it one
  batch; ``loss_sum(output, target)`` gives (sum, count) for the evaluation's mean ``loss``;
* ``metric_specs``: how people read each metric (:class:`MetricSpec`: title, direction, percent or as is, digits,
  summary column); ``monitors`` (derived): the metrics ``trainer.monitor`` may name, each with ``True`` if higher is
  better, ``loss`` included; ``default_monitor``; ``for_people(values)``: the values as people read them (a
  percent metric x 100);
* ``check_item_target``, ``check_target_fits``, ``check_declared``, ``complete_split``, ``check_outputs``: what the
  item collate, the data and the run assembly ask of the task (one check for column and item data);
* ``gives``: what the task's outputs give a method (:data:`CLASS_DISTRIBUTION`, :data:`TRUE_CLASS`; with
  ``uses_temperature`` also :data:`SOFTENED_OUTPUTS`); a method declares what it needs
  (:mod:`mmdistill.methods.params`), so no task lists methods.

``num_classes`` is the number of output columns: classes (classification, segmentation), labels (multilabel),
regression outputs D (1 for a (B,) target).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor

from ..errors import ConfigError, DataError, TargetError
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


@dataclass(frozen=True)
class MetricSpec:
    """How people read one metric of a task.

    ``percent``: a fraction in [0, 1] that every place a person reads (RunResult, ``evaluate``, logs, summary.md,
    reports) shows x 100, in percent (0.5733 -> 57.33); ``bounds``: the range of the value as people read it (an
    interval past it is shown clipped in summary.md); ``summary``: a column of summary.md and the analyses' tables.
    """

    title: str
    higher_is_better: bool = True
    percent: bool = False
    digits: int = 2
    bounds: tuple[float, float] | None = None
    summary: bool = True


PERCENT_BOUNDS = (0.0, 100.0)
LOSS = MetricSpec("loss", higher_is_better=False, digits=4, summary=False)


def percent(title: str, summary: bool = True) -> MetricSpec:
    """A fraction in [0, 1] shown in percent with two decimals (accuracy, F1, mAP, mIoU)."""
    return MetricSpec(title, True, percent=True, digits=2, bounds=PERCENT_BOUNDS, summary=summary)


def where(index: Tensor | None, row: int) -> str:
    """``example index 17`` when the batch carries ``"index"``, else ``row 3 of the batch``."""
    if index is not None and index.numel() > row:
        return f"example index {int(index.reshape(-1)[row])}"
    return f"row {row} of the batch"


def first_bad_row(bad: Tensor) -> int:
    """The first example (axis 0) holding a True anywhere in ``bad``."""
    return int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0, 0])


class Task:
    """Base class; subclasses set ``name``, ``Params``, ``metric_specs``, ``default_monitor`` and the methods below.

    Register a task of your own with ``@TASKS.register("name")`` (:mod:`mmdistill.tasks`) in a module the config
    lists under ``imports``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoTaskParams
    metric_specs: ClassVar[Mapping[str, MetricSpec]] = {}  # the metrics of ``metrics()``; ``loss`` is added
    monitors: ClassVar[Mapping[str, bool]] = {"loss": False}  # derived from metric_specs: metric -> higher is better
    default_monitor: ClassVar[str] = "loss"
    summary_note: ClassVar[str] = ""  # summary.md's units sentence; empty: from the specs
    num_classes_from_targets: ClassVar[bool] = False  # a split may leave num_classes out (regression: columns)
    output_columns: ClassVar[str] = "classes"  # what the output's columns are, in errors ("labels", "outputs")
    uses_temperature: ClassVar[bool] = True
    gives: ClassVar[frozenset[str]] = frozenset()  # CLASS_DISTRIBUTION, TRUE_CLASS (SOFTENED_OUTPUTS: uses_temperature)
    # One target per example (a class index, a label row, a value row) that a model on one feature row per example
    # predicts with ``loss``, ``kd_loss`` and ``monitor_value``: what the KD advisor's pilot needs (segmentation: no)
    one_target_per_example: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "metric_specs" in cls.__dict__:
            cls.monitors = {**{k: spec.higher_is_better for k, spec in cls.metric_specs.items()}, "loss": False}

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

    def paired_kd_loss(
        self,
        student_out: Tensor,
        teacher_out: Tensor,
        temperature: float = 1.0,
        target: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """:meth:`kd_loss` over ``rows`` only ((B,) bool: the rows where the teacher saw its input, on partly paired
        data; None: every row), i.e. the mean over the paired rows. A batch without a paired row gives 0, with the
        student's graph kept."""
        if rows is None:
            return self.kd_loss(student_out, teacher_out, temperature, target)
        if not bool(rows.any()):
            return student_out.sum() * 0.0
        picked = None if target is None else target[rows]
        return self.kd_loss(student_out[rows], teacher_out[rows], temperature, picked)

    def saliency(self, full: Tensor, removed: Tensor, target: Tensor | None = None) -> Tensor:
        """(B,) MSD's ``kl`` saliency of one modality: ``kd_per_example(removed -> full)`` at T = 1.

        For classification this is ``KL(p_t(x) || p_t(x^(-m)))`` of
        :func:`mmdistill.methods.msd_saliency.saliency_from_logits`.
        """
        return self.kd_per_example(removed, full, 1.0, target)

    # -- targets -----------------------------------------------------------------------------------------------
    def check_target(self, target: Any, num_classes: int | None, index: Tensor | None = None) -> None:
        raise NotImplementedError

    def refuse(self, what: str) -> TargetError:
        return TargetError(f"{LABEL_KEY!r}: {what}")

    def check_item_target(self, target: Tensor, num_classes: int | None, index: int) -> None:
        """One item's target (no batch axis) by :meth:`check_target` on a batch of one: item data and column data
        pass one check."""
        self.check_target(target.unsqueeze(0), num_classes, torch.tensor([index]))

    def check_target_fits(self, target: Tensor, inputs: Mapping[str, Tensor], index: Tensor | None = None) -> None:
        """The batch's targets agree with its stacked inputs (segmentation: a label map per image pixel)."""

    @classmethod
    def check_declared(cls, split: Any, where: str) -> None:
        """What a dataset of this task must declare: ``num_classes``, unless the task reads it off the targets."""
        if getattr(split, "num_classes", None) is None and not cls.num_classes_from_targets:
            raise DataError(f"{where}: the dataset has no num_classes attribute; set it (task {cls.name!r})")

    @classmethod
    def split_params(cls, split: Any) -> dict[str, Any]:
        """The task params a dataset carries itself (segmentation: its ``ignore_index``)."""
        return {}

    @classmethod
    def of_split(cls, split: Any) -> Task:
        """This task with the params the split carries (:meth:`split_params`)."""
        return cls(cls.split_params(split))

    def complete_split(self, split: Any, training: bool = False) -> None:
        """Settle what a split of this run leaves open, and refuse one that disagrees with the task's params (once
        per split, before anything trains). Here: ``num_classes`` from the first target's columns when the task
        reads it off the targets."""
        if self.num_classes_from_targets and getattr(split, "num_classes", None) is None:
            y = split.__getitems__([0])[LABEL_KEY]
            split.num_classes = 1 if y.dim() == 1 else int(y.shape[1])

    def check_outputs(self, outputs: Mapping[str, Tensor], target: Tensor) -> None:
        """The models' outputs on a sample have the task's form for ``target`` (``outputs``: who -> output); a
        ConfigError names the model. Here: nothing beyond the number of columns."""

    # -- evaluation --------------------------------------------------------------------------------------------
    def metrics(self, num_classes: int) -> torchmetrics.MetricCollection:
        raise NotImplementedError

    def update_metrics(self, metrics: torchmetrics.MetricCollection, output: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def loss_sum(self, output: Tensor, target: Tensor) -> tuple[Tensor, int | Tensor]:
        """(sum of the loss over the batch's units, number of units): the evaluation's ``loss`` is sum / count."""
        return self.loss(output, target) * len(target), len(target)

    def monitor_value(self, output: Tensor, target: Tensor) -> float:
        """``default_monitor`` on one split's outputs, as the evaluation computes it (a fraction for a percent metric);
        a task may give the same value in closed form, without the metric collection."""
        metrics = self.metrics(int(output.shape[1]) if output.dim() > 1 else 1)
        self.update_metrics(metrics, output, target)
        return float(metrics.compute()[self.default_monitor])

    # -- how people read the metrics -----------------------------------------------------------------------
    def metric_spec(self, metric: str) -> MetricSpec:
        """How people read ``metric`` (``loss`` and a metric the task does not declare: as is)."""
        if metric == "loss":
            return LOSS
        return self.metric_specs.get(metric) or MetricSpec(metric, digits=4, summary=False)

    def summary_columns(self) -> list[tuple[str, MetricSpec]]:
        """(metric, spec) of summary.md's columns, in the task's order."""
        return [(k, spec) for k, spec in self.metric_specs.items() if spec.summary]

    def units_note(self) -> str:
        """summary.md's sentence on units and clipped intervals."""
        if self.summary_note:
            return self.summary_note
        shown = [spec for _, spec in self.summary_columns()]
        if shown and all(spec.percent for spec in shown):
            return "in percent; an interval past [0, 100] is shown clipped and marked (clipped)"
        return ", ".join(f"{spec.title} {'in percent' if spec.percent else 'as is'}" for spec in shown)

    def for_people(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` (metric -> fraction, as the evaluation computes them) as people read them: each percent metric
        x 100 (0.5733 -> 57.33); every other value as it is."""
        return {k: self._shown(k, v) for k, v in values.items()}

    def from_people(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The inverse of :meth:`for_people` (percent metrics / 100)."""
        return {k: v / 100.0 if self._is_percent(k, v) else v for k, v in values.items()}

    def _is_percent(self, metric: str, value: Any) -> bool:
        spec = self.metric_specs.get(metric)
        return spec is not None and spec.percent and isinstance(value, (int, float)) and not isinstance(value, bool)

    def _shown(self, metric: str, value: Any) -> Any:
        return 100.0 * value if self._is_percent(metric, value) else value

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

    def trainer_problem(self, trainer: Any, key: str = "trainer") -> str | None:
        """Why ``trainer`` (a TrainerConfig) cannot run this task, or None: its monitor is not a metric of the task,
        or its ``early_stopping.min_delta`` (in the metric's own units, a fraction for a percent metric) is at least
        the metric's whole range, so no epoch could ever count as better."""
        if trainer.monitor not in self.monitors:
            return (
                f"{key}.monitor: {trainer.monitor!r} is not a metric of task {self.name!r}; use one of "
                f"{', '.join(self.monitors)}"
            )
        spec, stopping = self.metric_spec(trainer.monitor), trainer.early_stopping
        if stopping is None or spec.bounds is None:
            return None
        width = (spec.bounds[1] - spec.bounds[0]) / (100.0 if spec.percent else 1.0)
        if stopping.min_delta >= width:
            unit = "a fraction in [0, 1]" if spec.percent else f"a value in [{spec.bounds[0]:g}, {spec.bounds[1]:g}]"
            return (
                f"{key}: early_stopping.min_delta {stopping.min_delta:g} >= {width:g} can never be met by "
                f"{trainer.monitor!r} ({unit} here); use a value below {width:g}"
            )
        return None

    def check_trainer(self, trainer: Any, key: str = "trainer") -> None:
        problem = self.trainer_problem(trainer, key)
        if problem:
            raise ConfigError(problem)

    def higher_is_better(self, monitor: str) -> bool:
        self.check_monitor(monitor)
        return self.monitors[monitor]
