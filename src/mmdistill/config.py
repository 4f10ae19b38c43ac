"""Typed run configuration (pydantic), YAML loading and dotted command-line overrides.

An unknown key, a wrong type or a missing file is a :class:`ConfigError` that names the
dotted key and lists the valid ones. Method parameters are validated by the method's own
``Params`` model, dataset parameters by the dataset builder's signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError
from .models.multimodal import ModelConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, description="sgd only")


class SchedulerConfig(_Strict):
    name: Literal["none", "cosine", "step"] = "none"
    step_size: int = Field(10, gt=0, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0, description="step: decay factor")


class EarlyStoppingConfig(_Strict):
    patience: int = Field(10, ge=1, description="epochs without improvement of trainer.monitor before stopping")
    min_delta: float = 0.0


class TrainerConfig(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1, description="global batch size (split across DDP processes)")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    grad_clip: Optional[float] = Field(None, gt=0, description="max global gradient norm")
    monitor: Literal["accuracy", "f1_macro", "auroc", "loss"] = "accuracy"
    early_stopping: Optional[EarlyStoppingConfig] = None
    test_checkpoint: Literal["best", "last"] = Field("best", description="weights used for the test metrics")
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "auto"] = "cpu"
    devices: int = Field(1, ge=1)
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    ddp_timeout_s: float = Field(300.0, gt=0, description="DDP: a collective waiting longer than this fails the run")
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "64-true"] = "32-true"
    num_threads: Optional[int] = Field(None, ge=1, description="torch.set_num_threads for this run")


class DataConfig(_Strict):
    name: str = "toy-two-modality"
    params: dict[str, Any] = Field(default_factory=dict)
    split_seed: int = Field(0, description="seed of the train/val/test split (fixed across run seeds)")


class MaskingConfig(_Strict):
    strategy: str = "zeros"
    per_modality: dict[str, str] = Field(default_factory=dict)


class MethodConfig(_Strict):
    name: str = "kd"
    params: dict[str, Any] = Field(default_factory=dict)


class StudentConfig(_Strict):
    model: ModelConfig


class TeacherConfig(_Strict):
    model: ModelConfig
    checkpoint: Optional[Path] = Field(None, description="safetensors weights; null: train the teacher first")
    trainer: Optional[TrainerConfig] = Field(None, description="trainer for the teacher; null: the run's trainer")


class CacheConfig(_Strict):
    enabled: bool = True
    dir: Optional[Path] = Field(None, description="null: $MMDISTILL_CACHE or ~/.cache/mmdistill")


class RunConfig(_Strict):
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: Optional[TeacherConfig] = None
    student: StudentConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Walk ``loc`` through nested pydantic models and list the fields at its parent."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        ann = current.model_fields[part].annotation
        for arg in getattr(ann, "__args__", ()) or ():  # Optional[X] -> X
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                ann = arg
        current = ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def validate(model: type[BaseModel], raw: Any, prefix: str = "") -> BaseModel:
    """``model.model_validate(raw)`` with errors rewritten as one ConfigError naming each key."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = prefix + ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                valid = _valid_keys(model, tuple(e["loc"]))
                lines.append(f"{key}: unknown key; valid keys: {', '.join(valid or [])}")
            elif e["type"] == "missing":
                lines.append(f"{key}: required key is missing")
            else:
                lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. trainer.epochs=3")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {key!r}: value {value!r} is not valid YAML ({str(err).splitlines()[0]})") from None
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (safe loader), apply overrides, validate."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(p)!r}: expected a mapping at the top level")
    cfg = validate(RunConfig, apply_overrides(raw, overrides or []))
    assert isinstance(cfg, RunConfig)
    if cfg.teacher and cfg.teacher.checkpoint is not None and not cfg.teacher.checkpoint.is_file():
        raise ConfigError(f"teacher.checkpoint: file {str(cfg.teacher.checkpoint)!r} does not exist")
    return cfg


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
