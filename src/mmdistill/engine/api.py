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
from ..data import DataSplits
from ..data.item_dataset import ItemDataset, ItemSplits, as_splits
from ..errors import ConfigError, MachineError
from ..io import write_json
from ..masking import Masker, fit_masker
from ..methods.base import Method
from ..models.multimodal import model_modalities
from ..registry import METHODS
from .checkpoint import save_tensors
from .metrics import evaluate
from .teacher import cached_table, default_cache_dir, teacher_outputs
from . import runfolder
from .launch import launch, make_fabric, scoped_determinism
from .batches import eval_batches
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


def build_method(name: str, params: dict[str, Any] | None, masker: Masker) -> Method:
    cls = METHODS.get(name)
    p = validate(cls.Params, dict(params or {}), prefix="method.params.")
    return cls(p, masker)


def _check_pair(student: nn.Module, teacher: nn.Module | None, data: DataSplits | ItemSplits) -> None:
    specs = {s.name: s for s in data.train.specs()}
    for who, model in (("student", student), ("teacher", teacher)):
        if model is None:
            continue
        for m in model_modalities(model):
            if m not in specs:
                raise ConfigError(f"{who} reads modality {m!r}, which the dataset does not have; available: {', '.join(specs)}")
    if teacher is not None:
        sample = data.train.__getitems__(range(min(2, len(data.train))))
        with torch.no_grad():
            c_t, c_s = teacher.eval()(sample).shape[-1], student.eval()(sample).shape[-1]
        if c_t != c_s:
            raise ConfigError(f"teacher predicts {c_t} classes but the student predicts {c_s}; they must agree")
        if c_s != data.num_classes:
            raise ConfigError(f"models predict {c_s} classes but the dataset has {data.num_classes}")


def _teacher_mode(cache: CacheConfig, train) -> str:
    """"cache" or "online": online when the training data are random (augmentation: an example's input differs
    every epoch, so a cached output would belong to another input) or have no fingerprint to key a cache by.
    An explicit ``cache.enabled=True`` on such data is refused, saying why."""
    if not cache.enabled:
        return "online"
    random, keyless = getattr(train, "random", False), isinstance(train, ItemDataset) and not train.cacheable
    if not (random or keyless):
        return "cache"
    why = ("the training data are random (a transform or dataset.random=True): an example's input changes every "
           "epoch, so a cached teacher output would belong to another input" if random else
           "the training dataset has no fingerprint() to key a cache by (a string that changes when the data change)")
    if "enabled" in cache.model_fields_set:
        raise ConfigError(f"cache.enabled: cannot cache the teacher's outputs: {why}; set cache.enabled=false (the "
                          "teacher then runs online on each training batch, in eval mode, without gradients)")
    print(f"mmdistill: the teacher runs online on each training batch (no cache): {why}", file=sys.stderr)
    return "online"


@scoped_determinism
def distill(student: nn.Module, teacher: nn.Module | None, data: DataSplits | Any = None,
            out_dir: str | Path | None = None, method: str = "kd", method_params: dict | None = None,
            masking: MaskingConfig | None = None, trainer: TrainerConfig | None = None, cache: CacheConfig | None = None,
            seed: int = 0, resume: bool = False, quiet: bool = True, fabric: Fabric | None = None, desc: str = "train",
            *, train: Dataset | None = None, val: Dataset | None = None, test: Dataset | None = None,
            transforms: dict[str, Callable[[dict], dict]] | None = None) -> RunResult:
    """Train ``student`` with ``method`` (distilling from the frozen ``teacher`` if the method needs one).

    Data: ``data`` (a :class:`DataSplits`, or any object / dict with ``train``, ``val``, ``test``) or
    ``train=, val=, test=``: :class:`MultimodalDataset` columns (fast path) or any map-style torch Dataset of
    dict items (:mod:`mmdistill.data.item_dataset`; loaded per ``trainer.num_workers`` etc.); ``transforms``: split
    name -> callable(item) -> item (augmentation on ``"train"`` only, usually). With random training data (a
    transform, or ``dataset.random``) the teacher runs online on each augmented batch instead of from the cache.
    Writes checkpoints, ``metrics.csv``, TensorBoard logs and ``student.safetensors`` (the
    weights used for test) to ``out_dir``. Returns test and validation metrics.
    """
    if out_dir is None:
        raise ConfigError("distill: out_dir is required (the folder for checkpoints, metrics and the student)")
    data = as_splits(data, train, val, test, transforms)
    trainer = trainer or TrainerConfig()
    masking = masking or MaskingConfig()
    cache = cache or CacheConfig()
    out_dir = Path(out_dir)
    if fabric is None:
        fabric = start_fabric(trainer)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    masker = fit_masker(masking, data.train)
    algo = build_method(method, method_params, masker)
    if algo.needs_teacher and teacher is None:
        raise ConfigError(f"method {method!r} needs a teacher; give teacher (a model or teacher.checkpoint)")
    teacher = teacher if algo.needs_teacher else None
    _check_pair(student, teacher, data)
    sample = data.train.__getitems__(range(min(8, len(data.train))))
    algo.setup(sample, student, teacher)
    module = DistillationModule(student, algo)

    source = None
    if teacher is not None:
        teacher = fabric.to_device(teacher.eval())
        for p in teacher.parameters():
            p.requires_grad_(False)
    train = algo.prepare(data.train, teacher, fabric.device)
    if teacher is not None:
        request = algo.teacher_request()
        learned_null = any(masker.changes_in_training(m) for v in request.views for m in masker.strategy if m not in v)
        online = _teacher_mode(cache, train) == "online"
        if cache.enabled and not online and learned_null:
            raise ConfigError("cache.enabled: the teacher's modality views use learned null tokens, which change during "
                              "training, so they cannot be cached; set cache.enabled=false or another masking strategy")
        if not online:
            cache_dir = Path(cache.dir) if cache.dir else default_cache_dir()
            if fabric.is_global_zero:
                cached_table(teacher, train, request, masker, cache_dir, trainer.batch_size * 4, fabric.device)
            fabric.barrier()
            table, _ = cached_table(teacher, train, request, masker, cache_dir, trainer.batch_size * 4, fabric.device, build=False)
            source = lambda batch: table.lookup(batch, fabric.device)  # noqa: E731
        else:
            source = lambda batch: teacher_outputs(teacher, batch, request, masker)  # noqa: E731

    if fabric.is_global_zero:  # after every check, before the first write: never into files mmdistill did not create
        runfolder.guard_model_folder(out_dir)
    fabric.barrier()
    fitted = fit(fabric, module, train, data.val, trainer, seed, out_dir, source, resume=resume, quiet=quiet, desc=desc)
    world, rank = fabric.world_size, fabric.global_rank
    bs = trainer.batch_size
    val = evaluate(student, eval_batches(data.val, bs, rank, world, trainer, fabric.device), data.num_classes,
                   fabric.device)
    test = evaluate(student, eval_batches(data.test, bs, rank, world, trainer, fabric.device), data.num_classes,
                    fabric.device)
    if fabric.is_global_zero:
        save_tensors(out_dir / "student.safetensors", student.state_dict(), {"checkpoint": fitted.test_checkpoint})
        write_json(out_dir / "result.json", {"test": test, "val": val, "best_epoch": fitted.best_epoch,
                                             "epochs_run": fitted.epochs_run, "stopped_early": fitted.stopped_early,
                                             "test_checkpoint": fitted.test_checkpoint, "seed": seed, "method": method})
    fabric.barrier()
    return RunResult(test, val, fitted.best_epoch, fitted.epochs_run, fitted.stopped_early, fitted.test_checkpoint, student,
                     fitted.train_seconds, fitted.train_steps)


def start_fabric(trainer: TrainerConfig) -> Fabric:
    """``make_fabric`` + ``launch``, with set-up failures as one message (no GPU, a strategy that cannot start)."""
    if trainer.strategy == "ddp_spawn":
        raise ConfigError("trainer.strategy: 'ddp_spawn' cannot run mmdistill's training loop (Fabric needs a launch "
                          "function); use trainer.strategy=ddp, which starts the worker processes itself")
    check_resources(trainer)  # the Python API gets the same machine checks as a config file (devices, threads, GPU)
    try:
        fabric = make_fabric(trainer)
        launch(fabric)
    except (RuntimeError, ValueError, TypeError, ImportError) as err:  # MisconfigurationException is a ValueError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise MachineError(f"trainer.accelerator={trainer.accelerator}, trainer.devices={trainer.devices}, "
                           f"trainer.strategy={trainer.strategy}: this machine cannot start the run ({first}); "
                           f"use trainer.accelerator=cpu or settings this machine has") from None
    return fabric


