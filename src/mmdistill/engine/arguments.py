"""``distill()``'s arguments checked before anything runs: each wrong type or bad value is a ConfigError naming the
argument (``trainer: expected a TrainerConfig (or a dict of its keys), got str``), never an AttributeError or a
TypeError from deep inside the run.

The config arguments (``trainer``, ``masking``, ``cache``) may be given as their config objects, as dicts of their
keys (validated, each bad key named: ``trainer.epochs: ...``) or as None (the defaults).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from torch import nn

from ..config import CacheConfig, MaskingConfig, TrainerConfig, teacher_name_problem
from ..errors import ConfigError
from ..schema import SEED_MAX, checked_int, checked_mapping
from ..strict_yaml import short
from .teacher import TeacherGroup

C = TypeVar("C", bound=BaseModel)
SPLITS = ("train", "val", "test")


def config_argument(value: Any, cls: type[C], key: str) -> C:
    """``value`` as a ``cls`` config: the object itself, a dict of its keys (validated) or None (the defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.model_validate(dict(value))
    raise ConfigError(f"{key}: expected a {cls.__name__} (or a dict of its keys), got {short(value)} ({_kind(value)})")


def model_argument(value: Any, key: str, optional: bool = False) -> nn.Module | None:
    """A model: a ``torch.nn.Module`` (None only when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, nn.Module):
        what = "a torch.nn.Module or None" if optional else "a torch.nn.Module"
        raise ConfigError(f"{key}: expected {what}, got {short(value)} ({_kind(value)})")
    return value


def teacher_argument(value: Any) -> nn.Module | None:
    """The teacher: a module or None; several teachers as a list or tuple of modules (named ``"0"``, ``"1"``, ... by
    position) or a mapping name -> module, made one :class:`~.teacher.TeacherGroup`."""
    if isinstance(value, (list, tuple)):
        value = {str(i): t for i, t in enumerate(value)}
    if not isinstance(value, Mapping):
        return model_argument(value, "teacher", optional=True)
    if not value:
        raise ConfigError("teacher: an empty list or mapping of teachers; give one or more teacher modules")
    for name, model in value.items():
        problem = teacher_name_problem(name)
        if problem:
            raise ConfigError(problem)
        model_argument(model, f"teachers.{name}")
    return TeacherGroup(dict(value))


def out_dir_argument(value: Any) -> Path:
    """The output folder: a non-empty path (str or os.PathLike) the OS can open."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"out_dir: expected a folder path (str or pathlib.Path), got {short(value)} ({_kind(value)})")
    if str(value).strip() == "":
        raise ConfigError("out_dir: an empty path; give the folder for checkpoints, metrics and the student")
    try:
        return CacheConfig(dir=value).dir or Path(value)  # the same path checks as every path in a config
    except ConfigError as err:
        raise ConfigError(str(err).replace("cache.dir", "out_dir", 1)) from None


def flag_argument(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected True or False, got {short(value)} ({_kind(value)})")
    return value


def transforms_argument(value: Any) -> dict[str, Callable[[dict], dict]]:
    """Split name -> a callable transform (item dict -> item dict)."""
    transforms = checked_mapping(value, "transforms")
    for split, transform in transforms.items():
        if split not in SPLITS:
            raise ConfigError(f"transforms: unknown split {short(split)}; expected train, val or test")
        if not callable(transform):
            raise ConfigError(
                f"transforms.{split}: expected a callable (item dict -> item dict), got {short(transform)} "
                f"({_kind(transform)})"
            )
    return transforms


def task_argument(value: Any) -> Any:
    """A task: None (the data's own), a registered name, ``{"name", "params"}``, a TaskConfig or a Task."""
    from ..config import TaskConfig
    from ..tasks import Task

    if value is None or isinstance(value, (str, Task, TaskConfig)):
        return value
    if isinstance(value, Mapping):
        return TaskConfig.model_validate(dict(value))
    raise ConfigError(
        f"task: expected a registered task's name, {{'name': ..., 'params': {{...}}}}, a TaskConfig or a "
        f"Task, got {short(value)} ({_kind(value)})"
    )


def distill_arguments(**given: Any) -> dict[str, Any]:
    """The arguments of ``distill()`` named in ``given``, each checked (and config dicts validated)."""
    checks: dict[str, Callable[[Any], Any]] = {
        "student": lambda v: model_argument(v, "student"),
        "teacher": teacher_argument,
        "out_dir": out_dir_argument,
        "method": lambda v: v if isinstance(v, str) else _refuse("method", v, "a method name such as 'kd'"),
        "method_params": lambda v: None if v is None else checked_mapping(v, "method_params"),
        "masking": lambda v: config_argument(v, MaskingConfig, "masking"),
        "trainer": lambda v: config_argument(v, TrainerConfig, "trainer"),
        "cache": lambda v: config_argument(v, CacheConfig, "cache"),
        "seed": lambda v: checked_int(v, "seed", ge=0, le=SEED_MAX),
        "resume": lambda v: flag_argument(v, "resume"),
        "quiet": lambda v: flag_argument(v, "quiet"),
        "overwrite": lambda v: flag_argument(v, "overwrite"),
        "teacher_trainable": lambda v: flag_argument(v, "teacher_trainable"),
        "transforms": lambda v: None if v is None else transforms_argument(v),
        "task": task_argument,
    }
    return {name: checks[name](value) for name, value in given.items()}


def _refuse(key: str, value: Any, expected: str) -> Any:
    raise ConfigError(f"{key}: expected {expected}, got {short(value)} ({_kind(value)})")


def _kind(value: Any) -> str:
    return type(value).__name__
