"""Typed run configuration (pydantic), YAML loading and dotted command-line overrides.

An unknown key, a wrong type, a value out of range or a missing file is a :class:`ConfigError`
that names the dotted key and lists the valid ones. Numbers are strict (no ``true`` for 1, no
NaN/Inf) and bounded to their meaningful range; YAML is read in the strict dialect of
:mod:`mmdistill.strict_yaml` (no duplicate keys, no octal). Method parameters are validated by the method's own
``Params`` model, dataset parameters by the dataset builder's signature.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from . import strict_yaml
from .errors import ConfigError
from .models.multimodal import AnyModelConfig
from .registry import METHODS, import_modules
from .schema import SEED_MAX, ConfigModel, parse
from .strict_yaml import cut, short
from .tasks import DEFAULT_MONITOR, DEFAULT_TASK


class _Strict(ConfigModel):
    """A run-config section: unknown keys refused; built from Python, a bad value is a ConfigError naming its key."""


# Numbers and switches are strict: no bool as a number (``epochs: true``), no numeric string, no NaN/Inf.
def Int(default: Any = ..., *, ge: int | None = None, le: int | None = None, **kw: Any) -> Any:
    return Field(default, strict=True, ge=ge, le=le, **kw)


def Float(default: Any = ..., **kw: Any) -> Any:
    return Field(default, strict=True, allow_inf_nan=False, **kw)


def Bool(default: Any = ..., **kw: Any) -> Any:
    return Field(default, strict=True, **kw)


MAX_EPOCHS = 1_000_000
MAX_BATCH = 1 << 24
MIN_TEMPERATURE = 0.05  # below it softmax(z / T) is one-hot in float32 for any logit gap > 5: no soft targets left
MAX_TEMPERATURE = 100.0  # beyond it KD is logit matching already; larger T only loses float32 precision in T^2 * KL


class OptimizerConfig(_Strict):
    config_key: ClassVar[str] = "trainer.optimizer"
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Float(1e-3, gt=0, le=10, description="learning rate, in (0, 10]")
    weight_decay: float = Float(0.0, ge=0, le=1)
    momentum: float = Float(0.9, ge=0, lt=1, description="sgd only, in [0, 1)")


class SchedulerConfig(_Strict):
    config_key: ClassVar[str] = "trainer.scheduler"
    name: Literal["none", "cosine", "step"] = "none"
    step_size: int = Int(10, ge=1, le=MAX_EPOCHS, description="step: epochs between decays")
    gamma: float = Float(0.1, gt=0, le=1, description="step: decay factor, in (0, 1]")


class EarlyStoppingConfig(_Strict):
    config_key: ClassVar[str] = "trainer.early_stopping"
    patience: int = Int(
        10, ge=1, le=MAX_EPOCHS, description="epochs without improvement of trainer.monitor before stopping"
    )
    min_delta: float = Float(0.0, ge=0, description="smallest change of trainer.monitor that counts as an improvement")


# A metric of the run's task (mmdistill.tasks: Task.monitors); RunConfig and distill() check it against the task.
MonitorName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]


class TrainerConfig(_Strict):
    config_key: ClassVar[str] = "trainer"
    epochs: int = Int(20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Int(64, ge=1, le=MAX_BATCH, description="global batch size (split across DDP processes)")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    grad_clip: float | None = Float(None, gt=0, description="max global gradient norm")
    monitor: MonitorName = Field(
        DEFAULT_MONITOR, description="a metric of the task (docs/tasks.md); default: the task's; auroc: 2 classes only"
    )
    early_stopping: EarlyStoppingConfig | None = None
    test_checkpoint: Literal["best", "last"] = Field("best", description="weights used for the test metrics")
    checkpoint_every: int = Int(
        1,
        ge=1,
        le=MAX_EPOCHS,
        description="epochs between resumable checkpoints (last.safetensors: weights, optimizer, RNG); the last epoch "
        "and the best weights are always saved, and --resume restarts from the latest one",
    )
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "auto"] = "cpu"
    devices: int = Int(1, ge=1, le=4096, description="processes per node; at most the CPUs (cpu) or visible GPUs")
    num_nodes: int = Int(1, ge=1, le=4096)
    strategy: Literal["auto", "ddp"] = "auto"
    ddp_timeout_s: float = Float(
        300.0, gt=0, le=7 * 86400, description="DDP: a collective waiting longer than this fails the run"
    )
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = Field("32-true", description="16-mixed: GPU only")
    num_threads: int | None = Int(None, ge=1, le=4096, description="torch.set_num_threads for this run")
    # DataLoader options: used for item datasets (any torch Dataset); column datasets always take the fast path
    num_workers: int = Int(0, ge=0, le=1024, description="DataLoader worker processes (0: the training process loads)")
    pin_memory: bool | None = Bool(None, description="page-locked batches for CUDA copies; null: on when on CUDA")
    persistent_workers: bool = Bool(False, description="keep the workers between epochs (needs num_workers > 0)")
    prefetch_factor: int | None = Int(
        None,
        ge=1,
        le=1024,
        description="batches loaded ahead per worker (needs num_workers > 0); null: PyTorch's default (2)",
    )
    worker_timeout_s: float = Float(
        600.0,
        gt=0,
        le=7 * 86400,
        description="DataLoader workers: no batch for this long stops the run, naming the split and the items being "
        "read (a read that never returns); used when num_workers > 0",
    )

    @model_validator(mode="after")
    def _loader_options_need_workers(self) -> TrainerConfig:
        if self.num_workers == 0:
            if self.prefetch_factor is not None:
                raise ValueError(
                    f"prefetch_factor {self.prefetch_factor} needs worker processes (num_workers > 0); "
                    "remove it or set num_workers"
                )
            if self.persistent_workers:
                raise ValueError(
                    "persistent_workers: true needs worker processes (num_workers > 0); remove it or set num_workers"
                )
        return self


PATH_MAX, NAME_MAX = 4095, 255  # Linux limits, in bytes


def _usable_path(value: Path | None) -> Path | None:
    """A path the OS can open: no NUL byte, each part at most NAME_MAX bytes, the whole at most PATH_MAX bytes."""
    if value is None:
        return value
    text = str(value)
    if "\0" in text:
        raise ValueError("a path cannot hold a NUL byte")
    if len(os.fsencode(text)) > PATH_MAX:
        raise ValueError(f"path is {len(os.fsencode(text))} bytes long; the OS allows {PATH_MAX}")
    long = [part for part in value.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        raise ValueError(
            f"path part {cut(long[0], 40)!r} is {len(os.fsencode(long[0]))} bytes long; the OS allows {NAME_MAX}"
        )
    return value


UsablePath = Annotated[Path, AfterValidator(_usable_path)]


_IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class TransformConfig(_Strict):
    config_key: ClassVar[str] = "transform"
    factory: str = Field(
        ...,
        pattern=_IMPORT_PATH,
        description="'package.module:name'; called with params, returns the transform (item dict -> item dict)",
    )
    params: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Strict):
    config_key: ClassVar[str] = "data"
    name: str = "toy-two-modality"
    params: dict[str, Any] = Field(default_factory=dict)
    split_seed: int = Int(0, ge=0, le=SEED_MAX, description="seed of the train/val/test split (fixed across run seeds)")
    dataset: str | None = Field(
        None,
        pattern=_IMPORT_PATH,
        description="'package.module:factory' called with "
        "params; returns train/val/test datasets (instead of a registered name)",
    )
    transforms: dict[Literal["train", "val", "test"], TransformConfig] = Field(
        default_factory=dict, description="per-split transforms (augmentation on train only)"
    )

    @model_validator(mode="after")
    def _name_or_dataset(self) -> DataConfig:
        if self.dataset is not None and self.name != DataConfig.model_fields["name"].default:
            raise ValueError(
                f"give name (a registered dataset) or dataset (a factory), not both; got name "
                f"{self.name!r} and dataset {self.dataset!r}"
            )
        return self


class MaskingConfig(_Strict):
    config_key: ClassVar[str] = "masking"
    strategy: str = "zeros"
    per_modality: dict[str, str] = Field(default_factory=dict)


class MethodConfig(_Strict):
    config_key: ClassVar[str] = "method"
    name: str = "kd"
    params: dict[str, Any] = Field(default_factory=dict)

    def check_for(self, task: Any) -> None:
        """The method is registered, carries over to ``task`` and its params are valid (``Method.checked_params``:
        a ValueError naming the key, for the run config's own error)."""
        try:
            METHODS.get(self.name).checked_params(self.name, self.params, task)
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("invalid config: ")) from None


MODEL_HELP = "the reference model's settings, or your own model: {factory: 'pkg.mod:fn' | name: registered, params}"


class StudentConfig(_Strict):
    config_key: ClassVar[str] = "student"
    model: AnyModelConfig = Field(description=MODEL_HELP)


class TeacherConfig(_Strict):
    config_key: ClassVar[str] = "teacher"
    model: AnyModelConfig = Field(description=MODEL_HELP)
    checkpoint: UsablePath | None = Field(None, description="safetensors weights; null: train the teacher first")
    trainer: TrainerConfig | None = Field(None, description="trainer for the teacher; null: the run's trainer")
    trainable: bool = Bool(
        False, description="the teacher learns alongside the student (online distillation: methods dml, c2kd)"
    )


TEACHER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a teacher's name: a config key and a folder name
TEACHERS_HELP = (
    "several teachers: a list, or a mapping name -> teacher section (model, checkpoint, trainer); give teacher or "
    "teachers, not both"
)


def teacher_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a teacher (it becomes a config key and a folder name), or None."""
    if isinstance(name, str) and TEACHER_NAME.fullmatch(name):
        return None
    return (
        f"teachers: name {short(name)} is not a teacher name; use letters, digits, '_' and '-' (at most 64, "
        "starting with a letter or digit)"
    )


class CacheConfig(_Strict):
    config_key: ClassVar[str] = "cache"
    enabled: bool = Bool(True)
    dir: UsablePath | None = Field(None, description="null: $MMDISTILL_CACHE or ~/.cache/mmdistill")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="how the cached outputs are stored (read back as float32)"
    )
    top_k: int | None = Int(None, ge=1, le=1 << 24, description="keep the teacher's K largest logits per example")
    augmentations: int = Int(
        1,
        ge=1,
        le=1024,
        description="cache the teacher's outputs on K seeded augmentations of each example (training data with a "
        "random transform); each epoch the student reads one of them",
    )


class TaskConfig(_Strict):
    """``task: segmentation`` or ``task: {name: segmentation, params: {ignore_index: 255}}`` (docs/tasks.md)."""

    config_key: ClassVar[str] = "task"

    name: str = DEFAULT_TASK
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _plain_name(cls, raw: Any) -> Any:
        return {"name": raw} if isinstance(raw, str) else raw


class RunConfig(_Strict):
    imports: list[str] = Field(
        default_factory=list,
        description="modules imported before the config is resolved "
        "(they register your methods, encoders, maskers, models, datasets)",
    )
    seed: int = Int(0, ge=0, le=SEED_MAX)
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig | None = None
    teachers: dict[str, TeacherConfig] | None = Field(None, description=TEACHERS_HELP)
    student: StudentConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)

    @model_validator(mode="before")
    @classmethod
    def _monitor_default_of_the_task(cls, raw: Any) -> Any:
        """A trainer section that names no monitor gets its task's default (mae for regression, ...)."""
        task = raw.get("task") if isinstance(raw, dict) else None
        name = task if isinstance(task, str) else task.get("name") if isinstance(task, dict) else None
        if not isinstance(name, str) or name == DEFAULT_TASK:
            return raw
        from .tasks import TASKS

        if name not in TASKS:
            return raw  # refused by TaskConfig with the known names
        raw = dict(raw)
        monitor = TASKS.get(name).default_monitor
        if raw.get("trainer") is None:
            raw["trainer"] = {"monitor": monitor}
        elif isinstance(raw["trainer"], dict):
            raw["trainer"] = {"monitor": monitor, **raw["trainer"]}
        teacher = raw.get("teacher")
        if isinstance(teacher, dict) and isinstance(teacher.get("trainer"), dict):
            raw["teacher"] = {**teacher, "trainer": {"monitor": monitor, **teacher["trainer"]}}
        teachers = cls._teachers_listed_or_named(raw.get("teachers"))
        if isinstance(teachers, dict):
            raw["teachers"] = {
                name: {**t, "trainer": {"monitor": monitor, **t["trainer"]}}
                if isinstance(t, dict) and isinstance(t.get("trainer"), dict)
                else t
                for name, t in teachers.items()
            }
        return raw

    @field_validator("teachers", mode="before")
    @classmethod
    def _teachers_listed_or_named(cls, raw: Any) -> Any:
        """A list of teacher sections names each by its position ("0", "1", ...)."""
        return {str(i): section for i, section in enumerate(raw)} if isinstance(raw, list) else raw

    @field_validator("teachers", mode="after")
    @classmethod
    def _teacher_or_teachers(cls, teachers: dict[str, TeacherConfig] | None, info: ValidationInfo) -> Any:
        """Several teachers, each with a plain name, and not beside a single ``teacher`` (declared before it)."""
        if teachers is None:
            return teachers
        if info.data.get("teacher") is not None:
            raise ValueError("give teacher (one teacher) or teachers (several), not both")
        if not teachers:
            raise ValueError("no teacher given; give one or more teacher sections, or leave teachers out")
        for name in teachers:
            problem = teacher_name_problem(name)
            if problem:
                raise ValueError(problem.removeprefix("teachers: "))
        return teachers

    def teacher_sections(self) -> dict[str, TeacherConfig]:
        """Each teacher section by its config key: ``{"teacher": ...}``, ``{"teachers.<name>": ...}`` or none."""
        if self.teachers:
            return {f"teachers.{name}": section for name, section in self.teachers.items()}
        return {"teacher": self.teacher} if self.teacher is not None else {}

    @model_validator(mode="after")
    def _task_fits(self) -> RunConfig:
        """A known task with valid params, monitors that are its metrics, and a method that carries over to it."""
        from .tasks import get_task

        task = get_task(self.task)
        teacher_trainers = [(f"{key}.trainer", t.trainer) for key, t in self.teacher_sections().items()]
        for key, trainer in [("trainer", self.trainer), *teacher_trainers]:
            if trainer is not None:
                problem = task.trainer_problem(trainer, key)
                if problem:
                    raise ValueError(problem)
        self.method.check_for(task)
        return self

    @model_serializer(mode="wrap")
    def _no_empty_imports(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if not out.get("imports"):
            out.pop("imports", None)  # a config without plugins reads as it did before `imports` existed
        if out.get("teachers") is None:
            out.pop("teachers", None)  # a one-teacher config reads as it did before `teachers` existed
        return out


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_resources(trainer: TrainerConfig, key: str = "trainer") -> None:
    """The trainer settings against this machine: devices, threads, accelerator, nodes. ConfigError names the key."""
    cpus = usable_cpus()
    acc = trainer.accelerator
    gpus = visible_gpus() if acc in ("gpu", "cuda", "auto") else 0
    if acc in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(
            f"{key}.accelerator: {acc!r} needs a GPU, but none is visible (torch.cuda.is_available() is "
            "False); use trainer.accelerator=cpu"
        )
    if acc == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError(f"{key}.accelerator: 'mps' is not available on this machine; use trainer.accelerator=cpu")
    if acc in ("gpu", "cuda") or (acc == "auto" and gpus):
        if trainer.devices > gpus:
            raise ConfigError(f"{key}.devices: {trainer.devices} processes, but {gpus} GPU(s) are visible")
    elif acc != "mps" and trainer.devices > cpus:
        raise ConfigError(
            f"{key}.devices: {trainer.devices} processes on CPU, but this process may use {cpus} CPU(s); "
            f"use at most {cpus}"
        )
    on_gpu = acc in ("gpu", "cuda") or (acc == "auto" and gpus > 0)
    if trainer.precision == "16-mixed" and not on_gpu:
        raise ConfigError(
            f"{key}.precision: '16-mixed' (fp16 AMP) needs a GPU; on {acc!r} use 'bf16-mixed' or '32-true'"
        )
    if trainer.num_threads is not None and trainer.num_threads > 4 * cpus:
        raise ConfigError(f"{key}.num_threads: {trainer.num_threads} threads for {cpus} CPU(s); use at most {4 * cpus}")
    if trainer.num_nodes > 1 and not any(
        v in os.environ for v in ("MASTER_ADDR", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID")
    ):
        raise ConfigError(
            f"{key}.num_nodes: {trainer.num_nodes} nodes need a multi-node launcher (torchrun or SLURM, "
            "which set MASTER_ADDR); none was found"
        )
    world = trainer.devices * trainer.num_nodes
    if trainer.batch_size % world:
        raise ConfigError(
            f"{key}.batch_size: {trainer.batch_size} must be divisible by the number of processes ({world})"
        )


def validate(model: type[BaseModel], raw: Any, prefix: str = "") -> BaseModel:
    """``model.model_validate(raw)``, errors rewritten as one ConfigError naming each key (values cut to 80 chars)."""
    return parse(model, raw, prefix, head="invalid config: ")


def apply_overrides(raw: dict, overrides: list[str], label: str = "override") -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as strict YAML, see :mod:`mmdistill.strict_yaml`) to a nested dict.

    ``label`` names the option in errors (``override`` for config overrides, ``--param`` for dataset parameters).
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{label} {short(item)}: expected KEY=VALUE with a dotted key, e.g. trainer.epochs=3")
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"{label} {short(key)}: {short(p)} is not a section")
        try:
            node[parts[-1]] = strict_yaml.load(value)
        except (yaml.YAMLError, ValueError) as err:
            raise ConfigError(
                f"{label} {short(key)}: value {short(value)} is not valid YAML ({short(str(err).splitlines()[0], 200)})"
            ) from None
    return raw


MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path: str | Path) -> dict:
    """The mapping in a YAML config file; a missing, unreadable, non-UTF-8, empty or non-mapping file: ConfigError."""
    p = Path(path)
    where = f"config file {short(str(p), 200)}"
    if p.is_dir():
        raise ConfigError(f"{where} is a folder; expected a YAML file")
    if not p.exists():
        raise ConfigError(f"{where} does not exist")
    if not p.is_file():
        raise ConfigError(f"{where} is not a regular file; expected a YAML file")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{where} is {p.stat().st_size} bytes; a config is a small YAML file (at most {MAX_CONFIG_BYTES})"
        )
    data = p.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{where} is UTF-16 (or UTF-32) encoded; save it as UTF-8")
    if b"\0" in data:
        raise ConfigError(f"{where} holds NUL bytes, so it is not a text file; expected a UTF-8 YAML file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); expected a UTF-8 YAML file"
        ) from None
    try:
        raw = strict_yaml.load(text)
    except yaml.YAMLError as err:
        detail = "; ".join(short(line.strip(), 200) for line in str(err).splitlines()[:4] if line.strip())
        raise ConfigError(f"{where} is not valid YAML: {detail}") from None
    if raw is None:
        raise ConfigError(f"{where} is empty; expected a YAML mapping (at least a 'student' section)")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: expected a mapping at the top level (keys such as 'student', 'trainer'), "
            f"got a {type(raw).__name__}"
        )
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None, check_machine: bool = True) -> RunConfig:
    """Read a YAML config (strict, safe loader), apply overrides, validate.

    ``check_machine``: also check the trainer settings against this machine (:func:`check_resources`);
    pass False to read a config written elsewhere without running it (e.g. to evaluate a run).
    """
    if path is not None and (isinstance(path, bytes) or not isinstance(path, (str, os.PathLike))):
        raise ConfigError(f"config: expected the path of a YAML file (str or pathlib.Path), got {short(path)}")
    overrides = list(overrides) if isinstance(overrides, (list, tuple)) else overrides
    if overrides is not None and (not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides)):
        raise ConfigError(
            f"overrides: expected a list of 'key=value' strings (e.g. ['trainer.epochs=3']), got {short(overrides)}"
        )
    raw: dict = apply_overrides(read_config_file(path) if path is not None else {}, overrides or [])
    import_modules(raw.get("imports") or [])  # users' plugins register their entries before the config is resolved
    cfg = validate(RunConfig, raw)
    assert isinstance(cfg, RunConfig)
    for key, section in cfg.teacher_sections().items():
        if section.checkpoint is not None and not section.checkpoint.is_file():
            raise ConfigError(f"{key}.checkpoint: file {short(str(section.checkpoint), 200)} does not exist")
    if check_machine:
        check_resources(cfg.trainer)
        for key, section in cfg.teacher_sections().items():
            if section.trainer is not None:
                check_resources(section.trainer, f"{key}.trainer")
    return cfg


def dump_config(cfg: BaseModel) -> str:
    """The config as YAML that :func:`load_config` reads back to the same values."""
    return strict_yaml.dump(cfg.model_dump(mode="json"))
