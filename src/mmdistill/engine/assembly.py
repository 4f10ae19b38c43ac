"""The run assembly: the one place that turns a run's configuration into its parts, and trains them.

    spec = RunSpec(student, teacher, data, "runs/kd", method="kd", trainer=TrainerConfig(epochs=5))
    result = train_run(spec)                    # = build_run(spec).fit(), under the run's determinism settings

A :class:`RunSpec` says what one run is: the models, the data splits, the method and its parameters, masking,
trainer, cache, task and seed. :func:`build_run` makes its parts (task, trainer settings, masker, method, devices)
and checks that they fit together before anything trains; :meth:`Run.fit` trains, evaluates and writes the run's
folder. Every route goes through here: :func:`mmdistill.engine.api.distill` (a spec from Python objects), the
``train`` protocol (:func:`part_spec`: a spec per part of a seed from a :class:`~mmdistill.config.RunConfig`), its
:func:`~mmdistill.engine.protocol.preflight` (:meth:`Run.check_one_loss`) and the studies (through ``distill``).
Everything that reloads a run folder (``evaluate``, ``analyze``, ``report``, the advisor) builds its models with
:func:`build_run_model`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from torch import nn

from ..batch import Batch
from ..config import CacheConfig, MaskingConfig, RunConfig, TrainerConfig
from ..data.contracts.split import Splits
from ..errors import CheckpointError, ConfigError, MachineError, OutputExistsError
from ..io import write_json
from ..masking import Masker, check_pairing, fit_masker
from ..methods.base import Method, TeacherRequest
from ..methods.multi_teacher_base import TeacherGroupOutputs
from ..models.multimodal import build_model
from ..tasks import PERCENT, UNITS_KEY, Task
from ..usercode import kept
from .batches import eval_batches, to_device, worker_failure
from .metrics import evaluate
from .parts import (
    _check_pair,
    _read_columns,
    _teacher_mode,
    build_method,
    check_teacher_training,
    run_task,
    start_fabric,
)
from .run_checks import check_cache_settings, check_eval_rows
from .system import run_outputs, runfolder  # noqa: F401  (declares what a distill() folder holds: what overwrite=True removes)
from .system.checkpoint import load_tensors, load_weights, refuse_cast, save_tensors
from .system.launch import run_determinism
from .system.run_record import describe_run, write_record
from .teacher import CacheStorage, TeacherGroup, cached_table, cached_views, default_cache_dir, teacher_outputs
from .trainer import DistillationModule, FitResult, TeacherSource, fit

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


@dataclass
class RunSpec:
    """What one training run is made of. ``data``: splits (:func:`mmdistill.data.contracts.item_dataset.as_splits`);
    ``task``: a name, ``{"name", "params"}``, a TaskConfig or a Task (None: the data's own); ``origin``: the data's
    config when mmdistill built them (recorded in a ``distill()`` folder, :mod:`.run_record`)."""

    student: nn.Module
    teacher: nn.Module | None
    data: Splits
    out_dir: Path
    method: str = "kd"
    method_params: dict | None = None
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    task: Any = None
    seed: int = 0
    origin: dict | None = None
    teacher_trainable: bool = False  # the teacher learns alongside the student (online distillation)


def run_trainer(trainer: TrainerConfig | None, task: Task, num_classes: int, key: str = "trainer") -> TrainerConfig:
    """The trainer settings a run uses, the one place a run's monitor is set and checked: ``monitor``, when the
    settings leave it unset, is the task's default (``task.default_monitor``); settings the task refuses
    (``task.check_trainer``: a monitor it lacks, a ``min_delta`` the monitor cannot meet), or ``auroc`` on data that
    are not two-class, are refused naming ``key``."""
    trainer = trainer or TrainerConfig()
    if "monitor" not in trainer.model_fields_set:
        trainer = trainer.model_copy(update={"monitor": task.default_monitor})
    task.check_trainer(trainer, key)  # its monitor, and an early_stopping.min_delta the monitor can meet
    if trainer.monitor == "auroc" and num_classes != 2:
        raise ConfigError(
            f"{key}.monitor: 'auroc' is computed for two-class data only, and this dataset has {num_classes} "
            "classes; use accuracy, f1_macro or loss"
        )
    return trainer


@dataclass
class Run:
    """A run's parts, built and checked by :func:`build_run`; :meth:`fit` trains them."""

    spec: RunSpec
    fabric: Any  # a Fabric, or launch.SingleCPUProcess
    task: Task
    trainer: TrainerConfig
    masker: Masker
    method: Method
    teacher: nn.Module | None  # None when the method needs none
    module: DistillationModule
    sample: Batch  # a few training examples on the run's device

    def check_one_loss(self) -> None:
        """One loss on the sample, without gradients: the method's terms can be computed for these models."""
        algo, teacher = self.method, self.teacher
        t_out = None if teacher is None else teacher_outputs(teacher, self.sample, algo.teacher_request(), self.masker)
        with torch.no_grad():
            algo.losses(self.sample, algo.forward_student(self.spec.student.eval(), self.sample), t_out)

    def fit(
        self,
        resume: bool = False,
        quiet: bool = False,
        desc: str = "train",
        overwrite: bool = False,
        evaluate_test: bool = True,
    ) -> RunResult:
        """Train the student (from the teacher's cached or online outputs), select by validation, evaluate on
        validation and test, and write ``student.safetensors`` and ``result.json`` into ``spec.out_dir``.
        ``resume``: continue the run there; ``overwrite``: replace a ``distill`` run there (else it is refused);
        ``evaluate_test=False``: the test split is not read (test metrics ``{}``)."""
        spec, fabric, data = self.spec, self.fabric, self.spec.data
        out_dir = Path(spec.out_dir)
        if fabric.is_global_zero:  # before any work
            self._check_out_dir(out_dir, resume, overwrite)
        train = self.method.prepare(data.train, self.teacher, fabric.device)
        source, online = self._teacher_source(train)
        if fabric.is_global_zero:  # after every check, before the first write: never into others' files
            runfolder.guard_model_folder(out_dir, resume, overwrite)
        fabric.barrier()
        own_folder = (runfolder.read_marker(out_dir) or {}).get("command") == "distill"  # not a part of a train run
        train = _read_columns(train, spec.student, self.teacher if online else None)
        trainer, seed = self.trainer, spec.seed
        fitted = fit(fabric, self.module, train, data.val, trainer, seed, out_dir, source, resume, quiet, desc)
        val = self._evaluate(data.val)
        test = self._evaluate(data.test) if evaluate_test else {}
        if fabric.is_global_zero:
            self._write_results(out_dir, fitted, val, test, own_folder)
        fabric.barrier()
        return RunResult(
            test,
            val,
            fitted.best_epoch,
            fitted.epochs_run,
            fitted.stopped_early,
            fitted.test_checkpoint,
            spec.student,
            fitted.train_seconds,
            fitted.train_steps,
        )

    def _check_out_dir(self, out_dir: Path, resume: bool, overwrite: bool) -> None:
        """Refuse, writing nothing: a folder that is not this run's to write (:func:`.runfolder.guard_model_folder`),
        and the folder whose ``student.safetensors`` holds this run's teacher (where the teacher was trained)."""
        if resume and overwrite:
            raise ConfigError(
                "distill: resume=True and overwrite=True: give one of them (continue the run, or replace it)"
            )
        runfolder.guard_model_folder(out_dir, resume, overwrite, check_only=True)
        weights = out_dir / "student.safetensors"
        if self.teacher is not None and weights.is_file() and _same_weights(self.teacher, weights):
            raise OutputExistsError(
                f"{weights} holds the weights of this run's teacher (out_dir is the folder it was trained in), "
                f"which distill() into out_dir {out_dir} would replace; choose another out_dir"
            )

    def _teacher_source(self, train) -> tuple[TeacherSource | None, bool]:
        """(the teacher's outputs for a training batch, whether the teacher runs online); (None, False) without a
        teacher. Cached: rank 0 builds the cache behind a barrier, every rank reads it."""
        teacher, masker, fabric, cache = self.teacher, self.masker, self.fabric, self.spec.cache
        if teacher is None:
            return None, False
        request, learns = self.method.teacher_request(), self.method.teacher_learns
        if _teacher_mode(cache, train, learns=learns) == "online":  # refusals: _check_teacher_cache, in build_run
            return lambda batch: teacher_outputs(teacher, batch, request, masker, learns), True
        cache_dir = Path(cache.dir) if cache.dir else default_cache_dir()
        storage = CacheStorage(cache.dtype, cache.top_k)
        if cached_views(cache.augmentations, train) > 1:  # each epoch reads one of K seeded views per example
            train.read_views(cache.augmentations, self.spec.seed)
        tables = []
        with _named_as_the_cache(cache_dir):
            for member in teacher.teachers if isinstance(teacher, TeacherGroup) else [teacher]:  # a file per teacher
                where = (member, train, request, masker, cache_dir, self.trainer.batch_size * 4, fabric.device)
                if fabric.is_global_zero:
                    cached_table(*where, True, storage, self.trainer)  # items read by the trainer's DataLoader workers
                fabric.barrier()
                tables.append(cached_table(*where, False, storage)[0])
        if isinstance(teacher, TeacherGroup):
            names = teacher.names
            return lambda batch: TeacherGroupOutputs.of(names, [t.lookup(batch, fabric.device) for t in tables]), False
        return lambda batch: tables[0].lookup(batch, fabric.device), False

    def _evaluate(self, split) -> dict[str, float]:
        fabric, trainer = self.fabric, self.trainer
        batches = eval_batches(split, trainer.batch_size, fabric.global_rank, fabric.world_size, trainer, fabric.device)
        fractions = evaluate(self.spec.student, batches, self.spec.data.num_classes, fabric.device, task=self.task)
        return self.task.for_people(fractions)  # RunResult and result.json: percent metrics in percent

    def _write_results(self, out_dir: Path, fitted: FitResult, val: dict, test: dict, own_folder: bool) -> None:
        """``student.safetensors`` and ``result.json``; in a user's own ``distill()`` folder also the record that
        makes it readable by the commands (:mod:`.run_record`), or in ``result.json`` the reason there is none."""
        spec = self.spec
        save_tensors(out_dir / "student.safetensors", spec.student.state_dict(), {"checkpoint": fitted.test_checkpoint})
        record = None
        if own_folder:
            group = self.teacher if isinstance(self.teacher, TeacherGroup) else None
            several = group is not None
            record = describe_run(
                spec.student,
                None if several else self.teacher,
                spec.origin,
                spec.method,
                spec.method_params,
                masking=spec.masking,
                trainer=self.trainer,
                cache=spec.cache,
                task={"name": self.task.name, "params": self.task.params.model_dump(mode="json")},
                seed=spec.seed,
                teacher_trainable=spec.teacher_trainable,
            )
            if group is not None and not isinstance(record, str):
                record = _with_teachers(record, group)
            if not isinstance(record, str):
                write_record(out_dir, record, None if several else self.teacher)
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
                "seed": spec.seed,
                "method": spec.method,
                "task": self.task.name,
                UNITS_KEY: PERCENT,
            },
        )


def _with_teachers(record: RunConfig, group: TeacherGroup) -> RunConfig | str:
    """A ``distill()`` folder's config with its several teachers as a ``teachers`` section of their model configs
    (their weights are not kept: the commands read the student), or the reason there is none."""
    sections = {}
    for name, member in group.members.items():
        model_cfg = getattr(member, "mmdistill_config", None)
        if model_cfg is None:
            return (
                f"teachers.{name} is a {type(member).__name__} built in Python, not by mmdistill.models.build_model "
                "from a model config"
            )
        sections[name] = {"model": model_cfg.model_dump(mode="json")}
    try:
        return RunConfig.model_validate({**record.model_dump(mode="json"), "teachers": sections})
    except (ValueError, ConfigError) as err:  # pydantic's ValidationError is a ValueError
        return f"the run's settings do not form a valid config ({str(err).splitlines()[0][:200]})"


def _same_weights(model: nn.Module, path: Path) -> bool:
    """Whether the safetensors file at ``path`` holds exactly ``model``'s parameters and buffers."""
    try:
        saved, _ = load_tensors(path)
    except CheckpointError:
        return False
    mine = model.state_dict()
    return saved.keys() == mine.keys() and all(torch.equal(saved[k], mine[k].detach().cpu()) for k in mine)


@contextmanager
def _named_as_the_cache(cache_dir: Path) -> Iterator[None]:
    """An OS error while the teacher cache is written or read is reported as the cache's (``cache.dir``), never as
    the run's output folder's: a full cache disk is not a full output disk."""
    try:
        yield
    except (OSError, SafetensorError) as err:
        if isinstance(err, OSError) and err.filename is not None and cache_dir not in Path(err.filename).parents:
            raise  # another file's error (the data's, say): named by its path already
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0][:200]
        raise MachineError(
            f"cache.dir: cannot write the teacher cache in {cache_dir} ({why}); free space there, set cache.dir "
            "to a folder on another disk, or set cache.enabled=false"
        ) from err


def _check_models(student: nn.Module, teacher: nn.Module | None) -> None:
    """The student has parameters to train, and none of them is the (frozen) teacher's."""
    if teacher is student:
        raise ConfigError(
            "teacher and student are the same module; give the student a model of its own (build it again, or "
            "copy.deepcopy(teacher) to start from the teacher's weights)"
        )
    shared = (
        {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()} if teacher is not None else set()
    )
    if shared:
        raise ConfigError(
            f"teacher and student share {len(shared)} parameter tensor(s), which the frozen teacher would keep from "
            "training; give the student modules of its own (copy.deepcopy the shared parts)"
        )
    if not any(p.requires_grad for p in student.parameters()):
        raise ConfigError(
            f"student: the {type(student).__name__} has no trainable parameters (none, or all with "
            "requires_grad=False), so training cannot change it; give a model with parameters to train"
        )


def _check_teacher_cache(
    cache: CacheConfig, train, request: TeacherRequest, masker: Masker, learns: bool = False
) -> None:
    """Before any training, whatever would refuse the teacher's cache once the teacher has trained: an explicit
    ``cache.enabled`` on data it cannot key, learned null tokens in the teacher's views, and the cache's own needs
    (:func:`~mmdistill.engine.run_checks.check_cache_settings`)."""
    if _teacher_mode(cache, train, quiet=True, learns=learns) == "online":
        return
    if any(masker.changes_in_training(m) for v in request.views for m in masker.strategy if m not in v):
        raise ConfigError(
            "cache.enabled: the teacher's modality views use learned null tokens, which change during "
            "training, so they cannot be cached; set cache.enabled=false or another masking strategy"
        )
    check_cache_settings(cache, train)
    classes = getattr(train, "num_classes", None)
    if cache.top_k is not None and isinstance(classes, int) and cache.top_k > classes:
        raise ConfigError(f"cache.top_k: {cache.top_k} is above the data's {classes} classes; use 1 ... {classes}")


def _teacher_for(teacher: nn.Module | None, algo: Method, method: str) -> nn.Module | None:
    """The teacher ``algo`` distils from: several teachers (a :class:`TeacherGroup`) only for a method that takes
    several (``several_teachers``); a group of one given to a one-teacher method is its one teacher."""
    if not isinstance(teacher, TeacherGroup) or getattr(algo, "several_teachers", False):
        return teacher
    if len(teacher.names) > 1:
        raise ConfigError(
            f"teachers: method {method!r} distils from one teacher and this run names {len(teacher.names)} "
            f"({', '.join(teacher.names)}); use multi_teacher_kd, multi_teacher_adaptive or mst_distill, or give one "
            "teacher"
        )
    return teacher.teachers[0]


def build_run(spec: RunSpec, fabric: Fabric | None = None) -> Run:
    """The parts of ``spec``'s run, checked to fit before anything trains: the task (held by every split), the
    trainer settings (:func:`run_trainer`), the devices (``fabric``; None: started from the trainer settings), the
    masker, the method (with a teacher when it needs one), the models' modalities and outputs against the data and
    the task, and the method's set-up on a few examples; what would otherwise be refused only after a model trained
    (:func:`_check_models`, the teacher cache's settings, unreadable or non-finite validation and test items). Writes
    nothing."""
    data = spec.data
    task = run_task(spec.task, data)
    trainer = run_trainer(spec.trainer, task, data.num_classes)
    if fabric is None:
        fabric = start_fabric(trainer)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    masker = fit_masker(spec.masking, data.train)
    algo = build_method(spec.method, spec.method_params, masker, task)
    if algo.needs_teacher and spec.teacher is None:
        raise ConfigError(f"method {spec.method!r} needs a teacher; give teacher (a model or teacher.checkpoint)")
    teacher = _teacher_for(spec.teacher, algo, spec.method) if algo.needs_teacher else None
    if teacher is not None:
        check_teacher_training(spec.method, algo, spec.teacher_trainable, spec.cache)
    algo.teacher_learns = learns = teacher is not None and spec.teacher_trainable
    _check_models(spec.student, teacher)
    if teacher is not None:  # partly paired data: the KD terms use the rows the teacher sees (or are refused)
        read = getattr(teacher, "modalities", None)
        algo.paired_on = tuple(read) if read else None
        check_pairing(data.train, spec.method, algo.partly_paired, algo.paired_on)
    check_eval_rows(data)
    # The models and the method (its masker) on the run's device before the checks, setup() and prepare() run them:
    # a teacher trained earlier in this process may already be on the GPU.
    for part in (spec.student, teacher, algo):
        if part is not None:
            part.to(fabric.device)
    _check_pair(spec.student, teacher, data, task, fabric.device)
    sample = to_device(data.train.__getitems__(range(min(8, len(data.train)))), fabric.device)
    algo.setup(sample, spec.student, teacher)
    module = DistillationModule(spec.student, algo, teacher if learns else None)
    if teacher is not None:
        _check_teacher_cache(spec.cache, data.train, algo.teacher_request(), masker, learns)
        teacher.train(learns)  # already on the run's device; a teacher that learns trains all its parameters
        for p in teacher.parameters():
            p.requires_grad_(learns)
    return Run(spec, fabric, task, trainer, masker, algo, teacher, module, sample)


def train_run(spec: RunSpec, fabric: Fabric | None = None, **fit_options: Any) -> RunResult:
    """``build_run(spec, fabric).fit(**fit_options)`` (``resume``, ``quiet``, ``desc``, ``overwrite``,
    ``evaluate_test``) with deterministic kernels on CPU, the caller's settings restored after
    (:func:`~mmdistill.engine.system.launch.run_determinism`)."""
    with run_determinism(spec.trainer or TrainerConfig()):
        try:
            return build_run(spec, fabric).fit(**fit_options)
        except RuntimeError as err:  # a DataLoader worker's report, raised wherever the run was (engine/batches.py)
            problem = worker_failure(err)
            if problem is None:
                raise
            raise problem from kept(err)


def part_spec(
    cfg: RunConfig, part: str, data: Splits, seed: int, out_dir: Path, teacher: nn.Module | None = None
) -> RunSpec:
    """The run of one part of a ``train`` seed, its model freshly built from ``cfg``: ``"teacher"`` or
    ``"teachers.<name>"`` (supervised, with the section's ``trainer`` or the run's), ``"student"`` (the config's
    method, distilling from ``teacher``) or ``"nokd"`` (the student trained without distillation, with the student's
    settings)."""
    if part in cfg.teacher_sections():
        model = build_run_model(cfg, part, data)
        trainer = cfg.teacher_sections()[part].trainer or cfg.trainer
        return RunSpec(model, None, data, out_dir, "supervised", trainer=trainer, task=cfg.task, seed=seed)
    method, params = (cfg.method.name, cfg.method.params) if part == "student" else ("supervised", None)
    model = build_run_model(cfg, "student", data)
    learns = part == "student" and any(t.trainable for t in cfg.teacher_sections().values())
    return RunSpec(
        model, teacher, data, out_dir, method, params, cfg.masking, cfg.trainer, cfg.cache, cfg.task, seed,
        teacher_trainable=learns,
    )  # fmt: skip


def build_run_model(cfg: RunConfig, role: str, data: Splits, load_checkpoint: bool = True) -> nn.Module:
    """The model of ``cfg``'s section ``role`` (``"student"``, ``"teacher"`` or ``"teachers.<name>"``) for ``data``
    (fresh weights; a teacher with its ``checkpoint`` loaded when the section names one and ``load_checkpoint``);
    errors name the config key."""
    section = cfg.teacher_sections().get(role) or getattr(cfg, role)
    model = build_model(section.model, data.train.specs(), data.num_classes, f"{role}.model")
    if role != "student" and load_checkpoint and section.checkpoint is not None:
        load_teacher_weights(model, section.checkpoint, role)
    return model


def build_run_teacher(cfg: RunConfig, data: Splits, load_checkpoint: bool = True) -> nn.Module | None:
    """The run's teacher (``teacher:``), its teachers as one :class:`TeacherGroup` (``teachers:``), or None."""
    if not cfg.teachers:
        return build_run_model(cfg, "teacher", data, load_checkpoint) if cfg.teacher is not None else None
    return TeacherGroup(
        {name: build_run_model(cfg, f"teachers.{name}", data, load_checkpoint) for name in cfg.teachers}
    )


def load_teacher_weights(teacher: nn.Module, path: Path, key: str = "teacher") -> None:
    """``<key>.checkpoint`` into the teacher model of section ``key``; a mismatch names the keys."""
    weights = load_weights(path)
    refuse_cast(weights, teacher, path, f"{key}.checkpoint")
    try:
        result = teacher.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(
            f"{key}.checkpoint: {path} does not fit {key}.model: {str(err).splitlines()[-1].strip()}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{key}.checkpoint: {path} does not fit {key}.model: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}"
        )
