"""Prediction tasks by name (``task:`` in the config): classification, multilabel, regression, segmentation.

Each task is one file holding its loss, its KD form, its target checks and its metrics (contract:
:mod:`mmdistill.tasks.base`). The task modules are imported at the first look-up, so importing this package
costs nothing at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..registry import Registry
from .base import Task

if TYPE_CHECKING:
    from torch import Tensor

DEFAULT_TASK = "classification"


class _TaskRegistry(Registry):
    def get(self, name: str) -> Any:
        _import_tasks()
        return super().get(name)

    def names(self) -> list[str]:
        _import_tasks()
        return super().names()

    def __contains__(self, name: str) -> bool:
        _import_tasks()
        return super().__contains__(name)


TASKS: Registry = _TaskRegistry("task", "task.name")


def _import_tasks() -> None:
    if TASKS._entries:
        return
    from .classification import Classification
    from .multilabel import Multilabel
    from .regression import Regression
    from .segmentation import Segmentation

    for cls in (Classification, Multilabel, Regression, Segmentation):
        TASKS.register(cls.name)(cls)


def get_task(spec: Task | str | Mapping[str, Any] | None = None) -> Task:
    """A task from its name, ``{"name": ..., "params": {...}}``, a ``TaskConfig``, or a task (returned as is).

    None is classification (every run before tasks existed).
    """
    if isinstance(spec, Task):
        return spec
    if spec is None:
        spec = DEFAULT_TASK
    if isinstance(spec, str):
        return TASKS.get(spec)()
    if not isinstance(spec, Mapping):  # a TaskConfig
        spec = {"name": spec.name, "params": spec.params}
    return TASKS.get(spec.get("name", DEFAULT_TASK))(spec.get("params") or {})


__all__ = ["DEFAULT_TASK", "TASKS", "Task", "get_task"]


def validate_labels(batch: Mapping[str, Tensor], num_classes: int, task=None) -> None:
    """``batch["label"]`` in the form ``task`` expects (a :class:`mmdistill.tasks.Task`, a name, or None for
    classification: a 1-D integer tensor with values in ``[0, num_classes)``). A bad target is a
    :class:`~mmdistill.errors.TargetError` naming the key, what was expected and the example (by ``"index"``)."""
    from ..batch import INDEX, LABEL
    from ..errors import BatchError

    if LABEL not in batch:
        raise BatchError(f"the batch has no {LABEL!r} key")
    get_task(task).check_target(batch[LABEL], num_classes, batch.get(INDEX))
