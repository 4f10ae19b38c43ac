"""Prediction tasks by name (``task:`` in the config): classification, multilabel, regression, segmentation.

Each task is one file holding its loss, its KD form, its target checks and its metrics (contract:
:mod:`mmdistill.tasks.base`). The task modules are imported at the first look-up, so importing this package
costs nothing at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..registry import Registry
from .base import MetricSpec, Task

if TYPE_CHECKING:
    from torch import Tensor

DEFAULT_TASK = "classification"
DEFAULT_MONITOR = "accuracy"  # the default task's default_monitor (a config default, known without importing it)


class _TaskRegistry(Registry):
    def register(self, name: str):
        """``@TASKS.register("name")`` on a :class:`Task` subclass; its ``name`` is set to the registered one."""
        add = super().register(name)

        def add_task(cls):
            if not (isinstance(cls, type) and issubclass(cls, Task)):
                raise TypeError(f"task {name!r}: register a subclass of mmdistill.tasks.Task, got {cls!r}")
            if cls.__dict__.get("name", name) != name:
                raise ValueError(f"task {name!r}: the class says name = {cls.__dict__['name']!r}; use one name")
            cls.name = name
            return add(cls)

        return add_task

    def get(self, name: str, key: str | None = None) -> Any:
        _import_tasks()
        return super().get(name, key)

    def names(self) -> list[str]:
        _import_tasks()
        return super().names()

    def __contains__(self, name: object) -> bool:
        _import_tasks()
        return super().__contains__(name)


TASKS: Registry = _TaskRegistry("task", "task.name")


_BUILTINS_LOADED: list[bool] = []


def _import_tasks() -> None:
    """Register the built-in tasks (once; a user's task registered before still finds them next to it)."""
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED.append(True)
    from .classification import Classification
    from .multilabel import Multilabel
    from .regression import Regression
    from .segmentation import Segmentation

    for cls in (Classification, Multilabel, Regression, Segmentation):
        TASKS.register(cls.name)(cls)


class NamedParams(Protocol):
    """A ``TaskConfig`` as this layer sees it (the config module sits above the tasks)."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...


def get_task(spec: Task | str | Mapping[str, Any] | NamedParams | None = None) -> Task:
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


UNITS_KEY, PERCENT = "units", "percent"  # result.json / metrics.json: percent metrics stored in percent


def stored_in_percent(doc: Mapping[str, Any]) -> bool:
    """Whether a stored result (result.json, metrics.json) holds its percent metrics in percent (this mmdistill) or
    as fractions (written before the unit rule; readers scale them)."""
    return doc.get(UNITS_KEY) == PERCENT


__all__ = ["DEFAULT_TASK", "PERCENT", "TASKS", "UNITS_KEY", "MetricSpec", "Task", "get_task", "stored_in_percent"]


def validate_labels(batch: Mapping[str, Tensor], num_classes: int, task=None) -> None:
    """``batch["label"]`` in the form ``task`` expects (a :class:`mmdistill.tasks.Task`, a name, or None for
    classification: a 1-D integer tensor with values in ``[0, num_classes)``). A bad target is a
    :class:`~mmdistill.errors.TargetError` naming the key, what was expected and the example (by ``"index"``)."""
    from ..batch import INDEX, LABEL
    from ..errors import BatchError

    if LABEL not in batch:
        raise BatchError(f"the batch has no {LABEL!r} key")
    get_task(task).check_target(batch[LABEL], num_classes, batch.get(INDEX))
