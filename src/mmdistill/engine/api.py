"""Python API: distil a teacher into a student, one run from modules.

    from mmdistill.engine.api import distill
    result = distill(student, teacher, splits, method="kd", method_params={"temperature": 4}, out_dir="runs/kd")

The multi-seed protocol around it (teacher, distilled student and no-KD student per seed, statistics; what
``mmdistill train`` runs) is :mod:`mmdistill.engine.protocol`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import CacheConfig, MaskingConfig, TrainerConfig, check_resources, validate
from ..data import DataSplits, MultimodalDataset
from ..data.item_dataset import ItemDataset, ItemSplits, as_splits
from ..errors import ConfigError, MachineError
from ..io import write_json
from ..masking import Masker, fit_masker
from ..methods.base import Method
from ..models.multimodal import model_modalities
from ..registry import METHODS
from ..batch import LABEL
from ..tasks import DEFAULT_TASK, Task, get_task
from .checkpoint import save_tensors
from .metrics import evaluate
from .teacher import cached_table, default_cache_dir, teacher_outputs
from . import runfolder
from .launch import launch, make_fabric, scoped_determinism
from .run_record import describe_run, write_record
from .batches import eval_batches, to_device
from .trainer import DistillationModule, fit

if TYPE_CHECKING:
    from lightning_fabric import Fabric


@dataclass
class RunResult:
    test: dict[str, float]
    val: dict[str, float]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    test_checkpoint: str
    student: nn.Module
    train_seconds: float = 0.0
    train_steps: int = 0


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


def run_task(task: Task | str | Any, data: DataSplits | ItemSplits) -> Task:
    """The run's task: ``task`` (a name, ``{"name", "params"}``, a TaskConfig or a Task) or, when None, the one the
    data declare (``dataset.task``; classification when they declare none). Every split must hold that task's targets.

    Completes what the data leave open: a segmentation item dataset without its own ``ignore_index`` takes the
    task's; a regression dataset without ``num_classes`` gets its number of target columns.
    """
    task = get_task(task if task is not None else getattr(data.train, "task", None))
    for split in (data.train, data.val, data.test):
        own = getattr(split, "task", None) or DEFAULT_TASK
        if own != task.name:
            raise ConfigError(
                f"task: the run's task is {task.name!r} but split {split.name!r} holds {own!r} targets "
                f"(its dataset's task); set task: {own}, or give data of task {task.name!r}"
            )
        if task.name == "segmentation":
            mine = getattr(split, "ignore_index", None)
            if mine is None and isinstance(split, ItemDataset):
                split.ignore_index = task.ignore_index
            elif mine is not None and mine != task.ignore_index:
                raise ConfigError(
                    f"task.params.ignore_index: {task.ignore_index}, but split {split.name!r} marks "
                    f"unlabelled pixels with {mine}; set task.params.ignore_index: {mine}"
                )
        if task.name == "regression" and getattr(split, "num_classes", None) is None:
            y = split.__getitems__([0])[LABEL]
            split.num_classes = 1 if y.dim() == 1 else int(y.shape[1])
    return task


def _columns(out: torch.Tensor) -> int:
    return out.shape[1] if out.dim() > 1 else 1


def _check_pair(
    student: nn.Module,
    teacher: nn.Module | None,
    data: DataSplits | ItemSplits,
    task: Task | None = None,
    device: torch.device = torch.device("cpu"),
) -> None:
    """The models read modalities the data have; their outputs agree with each other and with the task: the
    number of columns (classes, labels, regression outputs), and (B, C, H, W) at the label map's size for
    segmentation."""
    task = get_task(task)
    specs = {s.name: s for s in data.train.specs()}
    for who, model in (("student", student), ("teacher", teacher)):
        if model is None:
            continue
        for m in model_modalities(model):
            if m not in specs:
                raise ConfigError(
                    f"{who} reads modality {m!r}, which the dataset does not have; available: {', '.join(specs)}"
                )
    if teacher is None and task.name == DEFAULT_TASK:
        return
    sample = data.train.__getitems__(range(min(2, len(data.train))))
    sample = to_device(sample, torch.device(device))  # ``device``: where the models are
    with torch.no_grad():
        outs = {"student": student.eval()(sample)}
        if teacher is not None:
            outs["teacher"] = teacher.eval()(sample)
    what = {"multilabel": "labels", "regression": "outputs"}.get(task.name, "classes")
    if teacher is not None and _columns(outs["teacher"]) != _columns(outs["student"]):
        raise ConfigError(
            f"teacher predicts {_columns(outs['teacher'])} {what} but the student predicts "
            f"{_columns(outs['student'])}; they must agree"
        )
    if _columns(outs["student"]) != data.num_classes:
        raise ConfigError(f"models predict {_columns(outs['student'])} {what} but the dataset has {data.num_classes}")
    if task.name == "segmentation":
        size = tuple(sample[LABEL].shape[1:])
        for who, out in outs.items():
            if out.dim() != 4 or tuple(out.shape[2:]) != size:
                raise ConfigError(
                    f"{who}.model: task 'segmentation' needs logits (B, C, H, W) at the label map's "
                    f"size (H, W) = {size}; the model outputs {tuple(out.shape)}"
                )


def _read_columns(train, student: nn.Module, online_teacher: nn.Module | None):
    """Column data holding only what a training step reads: the student's modalities, and the teacher's when it runs
    online (a cached teacher is looked up by row index). A crossmodal student then never gathers the teacher's
    modality (e.g. the images, for an audio student) batch after batch. Other datasets are returned as they are."""
    if not isinstance(train, MultimodalDataset):
        return train
    needed = set(model_modalities(student))
    if online_teacher is not None:
        needed |= set(model_modalities(online_teacher))
    if needed.issuperset(train.modality_names):
        return train
    return train.select([m for m in train.modality_names if m in needed])


def _teacher_mode(cache: CacheConfig, train) -> str:
    """ "cache" or "online": online when the training data are random (augmentation: an example's input differs
    every epoch, so a cached output would belong to another input) or have no fingerprint to key a cache by.
    An explicit ``cache.enabled=True`` on such data is refused, saying why."""
    if not cache.enabled:
        return "online"
    random, keyless = getattr(train, "random", False), isinstance(train, ItemDataset) and not train.cacheable
    if not (random or keyless):
        return "cache"
    why = (
        "the training data are random (a transform or dataset.random=True): an example's input changes every "
        "epoch, so a cached teacher output would belong to another input"
        if random
        else "the training dataset has no fingerprint() to key a cache by (a string that changes when the data change)"
    )
    if "enabled" in cache.model_fields_set:
        raise ConfigError(
            f"cache.enabled: cannot cache the teacher's outputs: {why}; set cache.enabled=false (the "
            "teacher then runs online on each training batch, in eval mode, without gradients)"
        )
    print(f"mmdistill: the teacher runs online on each training batch (no cache): {why}", file=sys.stderr)
    return "online"


@scoped_determinism
def distill(
    student: nn.Module,
    teacher: nn.Module | None,
    data: DataSplits | Any = None,
    out_dir: str | Path | None = None,
    method: str = "kd",
    method_params: dict | None = None,
    masking: MaskingConfig | None = None,
    trainer: TrainerConfig | None = None,
    cache: CacheConfig | None = None,
    seed: int = 0,
    resume: bool = False,
    quiet: bool = True,
    fabric: Fabric | None = None,
    desc: str = "train",
    *,
    train: Dataset | None = None,
    val: Dataset | None = None,
    test: Dataset | None = None,
    transforms: dict[str, Callable[[dict], dict]] | None = None,
    task: Task | str | Any = None,
) -> RunResult:
    """Train ``student`` with ``method`` (distilling from the frozen ``teacher`` if the method needs one).

    Data: ``data`` (a :class:`DataSplits`, or any object / dict with ``train``, ``val``, ``test``) or
    ``train=, val=, test=``: :class:`MultimodalDataset` columns (fast path) or any map-style torch Dataset of
    dict items (:mod:`mmdistill.data.item_dataset`; loaded per ``trainer.num_workers`` etc.); ``transforms``: split
    name -> callable(item) -> item (augmentation on ``"train"`` only, usually). With random training data (a
    transform, or ``dataset.random``) the teacher runs online on each augmented batch instead of from the cache.
    ``task``: the prediction task (:mod:`mmdistill.tasks`: a name such as ``"multilabel"``, ``{"name", "params"}``
    or a Task); None: the data's own (``dataset.task``), else classification. It gives the losses, the KD form and
    the metrics; ``trainer.monitor``, when the trainer config does not set it, is the task's default.
    Writes checkpoints, ``metrics.csv``, TensorBoard logs and ``student.safetensors`` (the
    weights used for test) to ``out_dir``. Returns test and validation metrics.
    """
    if out_dir is None:
        raise ConfigError("distill: out_dir is required (the folder for checkpoints, metrics and the student)")
    data_origin = getattr(data, "mmdistill_data", None)  # the data's config, if mmdistill built them (run_record)
    data = as_splits(data, train, val, test, transforms, task=get_task(task).name if task is not None else None)
    task = run_task(task, data)
    trainer = trainer or TrainerConfig()
    if "monitor" not in trainer.model_fields_set:
        trainer = trainer.model_copy(update={"monitor": task.default_monitor})
    task.check_monitor(trainer.monitor)
    masking = masking or MaskingConfig()
    cache = cache or CacheConfig()
    out_dir = Path(out_dir)
    if fabric is None:
        fabric = start_fabric(trainer)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    masker = fit_masker(masking, data.train)
    algo = build_method(method, method_params, masker, task)
    if algo.needs_teacher and teacher is None:
        raise ConfigError(f"method {method!r} needs a teacher; give teacher (a model or teacher.checkpoint)")
    teacher = teacher if algo.needs_teacher else None
    # The models and the method (its masker) on the run's device before the checks, setup() and prepare() run them:
    # a teacher trained earlier in this process may already be on the GPU.
    for part in (student, teacher, algo):
        if part is not None:
            part.to(fabric.device)
    _check_pair(student, teacher, data, task, fabric.device)
    sample = to_device(data.train.__getitems__(range(min(8, len(data.train)))), fabric.device)
    algo.setup(sample, student, teacher)
    module = DistillationModule(student, algo)

    source = None
    if teacher is not None:
        teacher.eval()  # already on the run's device
        for p in teacher.parameters():
            p.requires_grad_(False)
    train = algo.prepare(data.train, teacher, fabric.device)
    if teacher is not None:
        request = algo.teacher_request()
        learned_null = any(masker.changes_in_training(m) for v in request.views for m in masker.strategy if m not in v)
        online = _teacher_mode(cache, train) == "online"
        if cache.enabled and not online and learned_null:
            raise ConfigError(
                "cache.enabled: the teacher's modality views use learned null tokens, which change during "
                "training, so they cannot be cached; set cache.enabled=false or another masking strategy"
            )
        if not online:
            cache_dir = Path(cache.dir) if cache.dir else default_cache_dir()
            if fabric.is_global_zero:
                cached_table(teacher, train, request, masker, cache_dir, trainer.batch_size * 4, fabric.device)
            fabric.barrier()
            table, _ = cached_table(
                teacher, train, request, masker, cache_dir, trainer.batch_size * 4, fabric.device, build=False
            )
            source = lambda batch: table.lookup(batch, fabric.device)  # noqa: E731
        else:
            source = lambda batch: teacher_outputs(teacher, batch, request, masker)  # noqa: E731

    if fabric.is_global_zero:  # after every check, before the first write: never into files mmdistill did not create
        runfolder.guard_model_folder(out_dir)
    fabric.barrier()
    own_folder = (runfolder.read_marker(out_dir) or {}).get("command") == "distill"  # not a part of a train run
    online_teacher = teacher if teacher is not None and online else None
    train = _read_columns(train, student, online_teacher)
    fitted = fit(fabric, module, train, data.val, trainer, seed, out_dir, source, resume=resume, quiet=quiet, desc=desc)
    world, rank = fabric.world_size, fabric.global_rank
    bs = trainer.batch_size
    val, test = (
        evaluate(
            student,
            eval_batches(split, bs, rank, world, trainer, fabric.device),
            data.num_classes,
            fabric.device,
            task=task,
        )
        for split in (data.val, data.test)
    )
    if fabric.is_global_zero:
        save_tensors(out_dir / "student.safetensors", student.state_dict(), {"checkpoint": fitted.test_checkpoint})
        record = None
        if own_folder:  # a user's distill() folder: make it one the commands read (engine/run_record.py)
            record = describe_run(
                student,
                teacher,
                data_origin,
                method,
                method_params,
                masking=masking,
                trainer=trainer,
                cache=cache,
                task={"name": task.name, "params": task.params.model_dump(mode="json")},
                seed=seed,
            )
            if not isinstance(record, str):
                write_record(out_dir, record, teacher)
        write_json(
            out_dir / "result.json",
            {
                **({"not_a_run_folder": record} if isinstance(record, str) else {}),
                "test": test,
                "val": val,
                "best_epoch": fitted.best_epoch,
                "epochs_run": fitted.epochs_run,
                "stopped_early": fitted.stopped_early,
                "test_checkpoint": fitted.test_checkpoint,
                "seed": seed,
                "method": method,
            },
        )
    fabric.barrier()
    return RunResult(
        test,
        val,
        fitted.best_epoch,
        fitted.epochs_run,
        fitted.stopped_early,
        fitted.test_checkpoint,
        student,
        fitted.train_seconds,
        fitted.train_steps,
    )


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
    return fabric
