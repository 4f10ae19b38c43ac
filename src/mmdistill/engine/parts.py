"""The parts of one run and the checks that they fit together, before anything trains.

:func:`build_method` (a method for a task), :func:`run_task` (the run's task, checked against every split's targets),
:func:`_check_pair` (student and teacher read modalities the data have; their outputs agree with each other and the
task), :func:`_teacher_mode` (the teacher from a cache or online), :func:`check_teacher_training` (a teacher that
learns alongside), :func:`_read_columns` (column data holding only what a step reads) and :func:`start_fabric` (the
devices and processes). :mod:`.assembly` puts them together.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..batch import LABEL
from ..config import CacheConfig, TrainerConfig, check_resources, validate
from ..data.contracts.split import Split, Splits
from ..errors import ConfigError, MachineError
from ..masking import Masker
from ..methods.base import Method
from ..models.custom import model_output
from ..models.multimodal import model_modalities
from ..registry import METHODS
from ..tasks import DEFAULT_TASK, Task, get_task
from .batches import to_device
from .system.launch import launch, make_fabric
from .teacher import TeacherGroup, augmentation_problem

if TYPE_CHECKING:
    from lightning_fabric import Fabric


def build_method(name: str, params: dict[str, Any] | None, masker: Masker, task: Task | str | Any = None) -> Method:
    """The method ``name`` with ``params`` for ``task`` (None: classification); a method or a parameter that does not
    carry over to the task is refused by name (``Task.check_method``), before the parameters are validated."""
    cls = METHODS.get(name)
    task = get_task(task)
    task.check_method(name, params)
    p = validate(cls.Params, dict(params or {}), prefix="method.params.")
    algo = cls(p, masker)
    algo.task = task  # set here, not passed: a user's method may define __init__(params, masker)
    return algo


def run_task(task: Task | str | Any, data: Splits) -> Task:
    """The run's task: ``task`` (a name, ``{"name", "params"}``, a TaskConfig or a Task) or, when None, the one the
    data declare (``dataset.task``; classification when they declare none). Every split must hold that task's targets.

    The task completes what each split leaves open and refuses one that disagrees with it (``Task.complete_split``:
    e.g. segmentation's ``ignore_index``, regression's number of target columns). What it settles is set on the
    :class:`~mmdistill.data.contracts.split.Split` (an item dataset's wrapper), never on the user's dataset object.
    """
    task = get_task(task if task is not None else data.train.task)
    for split in (data.train, data.val, data.test):
        own = split.task or DEFAULT_TASK
        if own != task.name:
            raise ConfigError(
                f"task: the run's task is {task.name!r} but split {split.name!r} holds {own!r} targets "
                f"(its dataset's task); set task: {own}, or give data of task {task.name!r}"
            )
        task.complete_split(split, training=split is data.train)
    return task


def _columns(out: torch.Tensor) -> int:
    return out.shape[1] if out.dim() > 1 else 1


def named_teachers(teacher: nn.Module | None) -> list[tuple[str, nn.Module]]:
    """The run's teachers by the key that names each in errors: ``teacher``, or ``teachers.<name>`` in a group."""
    if teacher is None:
        return []
    if isinstance(teacher, TeacherGroup):
        return [(f"teachers.{name}", t) for name, t in teacher.members.items()]
    return [("teacher", teacher)]


def _check_pair(
    student: nn.Module,
    teacher: nn.Module | None,
    data: Splits,
    task: Task | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """The models read modalities the data have; their outputs agree with each other and with the task: the
    number of columns (classes, labels, regression outputs; every teacher of a group alike), and the task's own form
    (``Task.check_outputs``, e.g. (B, C, H, W) at the label map's size for segmentation)."""
    task = get_task(task)
    specs = {s.name: s for s in data.train.specs()}
    teachers = named_teachers(teacher)
    for who, model in [("student", student), *teachers]:
        for m in model_modalities(model):
            if m not in specs:
                raise ConfigError(
                    f"{who} reads modality {m!r}, which the dataset does not have; available: {', '.join(specs)}"
                )
    sample = data.train.__getitems__(range(min(2, len(data.train))))
    sample = to_device(sample, torch.device(device))  # ``device``: where the models are
    with torch.no_grad():
        outs = {"student": model_output(student.eval(), sample, "student")}  # a forward that fails is named
        for who, model in teachers:
            outs[who] = model_output(model.eval(), sample, who)
    what = task.output_columns
    columns = {who: _columns(out) for who, out in outs.items()}
    if teachers:
        first = teachers[0][0]
        for who, _ in teachers[1:]:
            if columns[who] != columns[first]:
                raise ConfigError(
                    f"{who} predicts {columns[who]} {what} but {first} predicts {columns[first]}; every teacher must "
                    f"predict the same {what}"
                )
        if columns[first] != columns["student"]:
            raise ConfigError(
                f"{first} predicts {columns[first]} {what} but the student predicts {columns['student']}; they must "
                "agree"
            )
    if _columns(outs["student"]) != data.num_classes:
        raise ConfigError(f"models predict {_columns(outs['student'])} {what} but the dataset has {data.num_classes}")
    task.check_outputs(outs, sample[LABEL])


def _read_columns(train: Split, student: nn.Module, online_teacher: nn.Module | None) -> Split:
    """The training split reading only what a step reads (``Split.narrowed``): the student's modalities, and the
    teacher's when it runs online (a cached teacher is looked up by row index). A crossmodal student on column data
    then never gathers the teacher's modality (e.g. the images, for an audio student) batch after batch; a split
    that cannot narrow its reads is returned as it is."""
    needed = set(model_modalities(student))
    if online_teacher is not None:
        needed |= set(model_modalities(online_teacher))
    return train.narrowed([m for m in train.modality_names if m in needed])


def check_teacher_training(name: str, method: Method, learns: bool, cache: CacheConfig) -> None:
    """A teacher that learns alongside (``teacher.trainable``) needs a method that gives it a loss of its own
    (``Method.teacher_training``), and a method that requires one gets it; its outputs are never cached."""
    kind = method.teacher_training
    if learns and kind == "never":
        trainers = [m for m in METHODS.names() if METHODS.get(m).teacher_training != "never"]
        raise ConfigError(
            f"teacher.trainable: method {name!r} gives the teacher no loss of its own, so it would not learn; use a "
            f"method that trains it alongside ({', '.join(trainers)}) or set teacher.trainable: false"
        )
    if not learns and kind == "required":
        raise ConfigError(
            f"teacher.trainable: method {name!r} trains the teacher alongside the student; set teacher.trainable: "
            "true (distill(..., teacher_trainable=True))"
        )
    if learns and cache.enabled and "enabled" in cache.model_fields_set:
        raise ConfigError(
            "cache.enabled: the teacher learns alongside the student (teacher.trainable: true), so its outputs change "
            "at every step and cannot be cached; leave cache.enabled unset or set it to false"
        )


def _teacher_mode(cache: CacheConfig, train: Split, quiet: bool = False, learns: bool = False) -> str:
    """ "cache" or "online": online when the teacher ``learns`` alongside, when the training data are random
    (augmentation: an example's input differs every epoch, so a cached output would belong to another input) or
    have no fingerprint to key a cache by. An explicit ``cache.enabled=True`` on random or keyless data is refused,
    saying why; else a note says so (``quiet``: none)."""
    if not cache.enabled or learns:
        return "online"
    random, keyless = train.random, not train.cacheable
    if not (random or keyless):
        if cache.augmentations > 1 and not quiet:
            print(
                f"mmdistill: cache.augmentations: {cache.augmentations}: the training data draw no random numbers "
                "(no random transform), so each example has one view; caching that one (K = 1)",
                file=sys.stderr,
            )
        return "cache"
    if random and cache.augmentations > 1:
        problem = augmentation_problem(train)
        if problem is None:
            return "cache"
        if "augmentations" in cache.model_fields_set:
            raise ConfigError(f"cache.augmentations: cannot cache the teacher's outputs on augmentations: {problem}")
    why = (
        "the training data are random (a transform or dataset.random=True): an example's input changes every "
        "epoch, so a cached teacher output would belong to another input (cache.augmentations: K caches K seeded "
        "augmentations of each example)"
        if random
        else "the training dataset has no fingerprint() to key a cache by (a string that changes when the data change)"
    )
    if "enabled" in cache.model_fields_set:
        raise ConfigError(
            f"cache.enabled: cannot cache the teacher's outputs: {why}; set cache.enabled=false (the "
            "teacher then runs online on each training batch, in eval mode, without gradients)"
        )
    if not quiet:
        print(f"mmdistill: the teacher runs online on each training batch (no cache): {why}", file=sys.stderr)
    return "online"


def start_fabric(trainer: TrainerConfig) -> Fabric:
    """``make_fabric`` + ``launch``, with set-up failures as one message (no GPU, a strategy that cannot start)."""
    if trainer.strategy == "ddp_spawn":
        raise ConfigError(
            "trainer.strategy: 'ddp_spawn' cannot run mmdistill's training loop (Fabric needs a launch "
            "function); use trainer.strategy=ddp, which starts the worker processes itself"
        )
    check_resources(trainer)  # the Python API gets the same machine checks as a config file (devices, threads, GPU)
    try:
        fabric = make_fabric(trainer)
        launch(fabric)
    except (RuntimeError, ValueError, TypeError, ImportError) as err:  # MisconfigurationException is a ValueError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise MachineError(
            f"trainer.accelerator={trainer.accelerator}, trainer.devices={trainer.devices}, "
            f"trainer.strategy={trainer.strategy}: this machine cannot start the run ({first}); "
            f"use trainer.accelerator=cpu or settings this machine has"
        ) from None
    # A SingleCPUProcess stands in for a Fabric: what it lacks of one it takes from a real single-CPU Fabric, made on
    # first use (its docstring), so the training loop takes either.
    return cast("Fabric", fabric)
