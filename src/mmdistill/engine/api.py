"""Python API: distil a teacher into a student, one run from modules.

    from mmdistill.engine.api import distill
    result = distill(student, teacher, splits, method="kd", method_params={"temperature": 4}, out_dir="runs/kd")

``distill`` describes the run (:class:`~mmdistill.engine.assembly.RunSpec`) and hands it to the run assembly
(:mod:`mmdistill.engine.assembly`), which builds, checks and trains it. The multi-seed protocol around it (teacher,
distilled student and no-KD student per seed, statistics; what ``mmdistill train`` runs) is
:mod:`mmdistill.engine.protocol`.

Several teachers: ``teacher`` as a list of modules (named ``"0"``, ``"1"``, ...) or a mapping name -> module, for
a method that distils from several (``multi_teacher_kd``, ``multi_teacher_adaptive``, ``mst_distill``); each
teacher's outputs are cached (or run online) on their own.

``teacher_trainable=True``: the teacher learns alongside the student, in the same optimizer step (``dml``, ``c2kd``;
online, never cached; its weights change in place and are in every checkpoint).

Data: ``data`` (a :class:`DataSplits`, or any object / dict with ``train``, ``val``, ``test``) or
``train=, val=, test=``: :class:`MultimodalDataset` columns (fast path) or any map-style torch Dataset of dict items
(:mod:`mmdistill.data.contracts.item_dataset`; loaded per ``trainer.num_workers`` etc.); ``transforms``: split name ->
callable(item) -> item (augmentation on ``"train"`` only, usually). With random training data (a transform, or
``dataset.random``) the teacher runs online on each augmented batch instead of from the cache.

``task``: the prediction task (:mod:`mmdistill.tasks`: a registered task's name, ``{"name", "params"}`` or a Task);
None: the data's own (``dataset.task``), else classification. It gives the losses, the KD form and the metrics;
``trainer.monitor``, when the trainer config does not set it, is the task's default.

Writes checkpoints, ``metrics.csv``, TensorBoard logs and ``student.safetensors`` (the weights used for test) to
``out_dir``. A run already there is refused (OutputExistsError) unless ``resume=True`` (continue it) or
``overwrite=True`` (replace it; only a folder an earlier ``distill()`` made, holding nothing else). Progress goes to
stderr (a bar on a terminal, one line per epoch otherwise); ``quiet=True`` silences it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.utils.data import Dataset

from ..config import CacheConfig, MaskingConfig, TrainerConfig
from ..data import DataSplits
from ..data.contracts.item_dataset import as_splits
from ..errors import ConfigError
from ..tasks import Task, get_task
from .arguments import distill_arguments
from .assembly import RunResult, RunSpec, train_run
from .parts import build_method, run_task, start_fabric

if TYPE_CHECKING:
    from lightning_fabric import Fabric

__all__ = ["RunResult", "build_method", "distill", "run_task", "start_fabric"]


def distill(
    student: nn.Module,
    teacher: nn.Module | list[nn.Module] | dict[str, nn.Module] | None,
    data: DataSplits | Any = None,
    out_dir: str | Path | None = None,
    method: str = "kd",
    method_params: dict | None = None,
    masking: MaskingConfig | None = None,
    trainer: TrainerConfig | None = None,
    cache: CacheConfig | None = None,
    seed: int = 0,
    resume: bool = False,
    quiet: bool = False,
    fabric: Fabric | None = None,
    desc: str = "train",
    *,
    train: Dataset | None = None,
    val: Dataset | None = None,
    test: Dataset | None = None,
    transforms: dict[str, Callable[[dict], dict]] | None = None,
    task: Task | str | Any = None,
    overwrite: bool = False,
    teacher_trainable: bool = False,
) -> RunResult:
    """Train ``student`` with ``method`` (distilling from the frozen ``teacher`` if the method needs one) on ``data``
    (or ``train=, val=, test=``) for ``task``; write the run into ``out_dir`` and return its validation and test
    metrics. A run already in ``out_dir`` is refused unless ``resume=True`` or ``overwrite=True``; progress goes to
    stderr unless ``quiet=True``. The arguments in full: this module's docstring.
    """
    if out_dir is None:
        raise ConfigError("distill: out_dir is required (the folder for checkpoints, metrics and the student)")
    # each wrong type or bad value is named (engine/arguments.py); config dicts are validated
    a = distill_arguments(
        student=student, teacher=teacher, out_dir=out_dir, method=method, method_params=method_params,
        masking=masking, trainer=trainer, cache=cache, seed=seed, resume=resume, quiet=quiet, overwrite=overwrite,
        transforms=transforms, task=task, teacher_trainable=teacher_trainable,
    )  # fmt: skip
    origin = getattr(data, "mmdistill_data", None)  # the data's config, if mmdistill built them (run_record)
    own_task = get_task(a["task"]).name if task is not None else None
    data = as_splits(data, train, val, test, a["transforms"], task=own_task)
    spec = RunSpec(
        a["student"], a["teacher"], data, a["out_dir"], method, a["method_params"], a["masking"], a["trainer"],
        a["cache"], a["task"], a["seed"], origin, a["teacher_trainable"],
    )  # fmt: skip
    return train_run(spec, fabric, resume=a["resume"], quiet=a["quiet"], desc=desc, overwrite=a["overwrite"])
