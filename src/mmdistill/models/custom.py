"""Your own model from YAML: by import path (``factory``) or by a name registered in ``MODELS`` (``name``).

    teacher:
      model: {factory: "my_pkg.models:build_teacher", params: {hidden: 32}}
    student:
      model: {name: my_student, params: {}}          # @MODELS.register("my_student") in a module under `imports`

The factory (a function or a class) is called with ``params`` as keyword arguments, plus ``num_classes`` and
``specs`` (the dataset's :class:`~mmdistill.batch.ModalitySpec` list) when its signature names them. It returns an
``nn.Module`` with a ``modalities`` attribute (the batch keys it reads) whose ``forward(batch)`` returns logits
``(batch, num_classes)``: the contract every mmdistill model keeps. The checks the reference model gets apply:
modalities declared and known to the data (:func:`build_custom`), the number of classes on a sample batch
(:func:`check_outputs`), the teacher checkpoint's keys (``engine.api.load_teacher_weights``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from pydantic import (
    Field,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import nn

from ..batch import ModalitySpec, batch_size
from ..errors import ConfigError
from ..registry import MODELS
from ..schema import ConfigModel
from ..strict_yaml import cut, short
from ..usercode import call, import_path

DATA_ARGS = ("num_classes", "specs")  # given by the data, never by params


class CustomModelConfig(ConfigModel):
    """A user's model: exactly one of ``factory`` (``"module.path:callable"``) and ``name`` (registered in MODELS)."""

    config_key: ClassVar[str] = "model"

    factory: str | None = Field(None, description='import path "package.module:callable" of a model factory')
    name: str | None = Field(None, description="a model registered in MODELS by a module under `imports`")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")

    @field_validator("factory")
    @classmethod
    def _importable(cls, path: str | None) -> str | None:
        if path is not None:
            resolve_factory(path)
        return path

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str | None) -> str | None:
        if name is not None and name not in MODELS:
            raise ValueError(MODELS.unknown(name))
        return name

    @model_validator(mode="after")
    def _one_source(self) -> CustomModelConfig:
        if (self.factory is None) == (self.name is None):
            raise ValueError(
                "give exactly one of factory (an import path such as 'my_pkg.models:build') and name "
                "(a model registered in MODELS)"
            )
        check_params(self.callable(), self.params)
        return self

    @model_serializer(mode="wrap")
    def _only_the_source_given(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}

    def callable(self) -> Callable[..., Any]:
        if self.factory is not None:
            return resolve_factory(self.factory)
        assert self.name is not None  # the validator requires one of factory and name
        return MODELS.get(self.name)

    @property
    def source(self) -> str:
        """The config key and value that name the factory, for messages (``factory 'pkg:fn'``)."""
        return f"factory {self.factory!r}" if self.factory is not None else f"name {self.name!r}"


def resolve_factory(path: str) -> Callable[..., Any]:
    """``"package.module:attr.attr"`` -> the callable; a ConfigError (a ValueError: the config key is added by
    pydantic) if not."""
    return import_path(path, "", "a function or class that builds a model")


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # no signature (some builtins): accept anything
        return {}


def check_params(fn: Callable[..., Any], params: dict[str, Any]) -> None:
    """``params`` name only the factory's parameters, give every required one, and leave the data's to the data."""
    sig = _parameters(fn)
    for k in params:
        if k in DATA_ARGS:
            raise ValueError(f"params.{k}: set by mmdistill from the data; remove it")
    if any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        return
    accepted = [n for n, p in sig.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in DATA_ARGS]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise ValueError(
            f"params.{cut(str(unknown[0]), 80)}: unknown parameter of the factory; valid: "
            f"{', '.join(accepted) or 'none'}"
        )
    missing = [n for n in accepted if sig[n].default is inspect.Parameter.empty and n not in params]
    if missing:
        raise ValueError(f"params.{missing[0]}: required parameter of the factory is missing")


def build_custom(
    cfg: CustomModelConfig, specs: Sequence[ModalitySpec], num_classes: int, key: str = "model"
) -> nn.Module:
    """Call the user's factory and check what it returned: an nn.Module declaring modalities the data has."""
    fn = cfg.callable()
    sig = _parameters(fn)
    kwargs = dict(cfg.params)
    data_args = {"num_classes": num_classes, "specs": list(specs)}
    kwargs.update({k: v for k, v in data_args.items() if k in sig})
    try:
        model = call(fn, key, cfg.source, **kwargs)
    except ConfigError as err:  # the factory's complaint about one of its params (``params.x: ...``): under its key
        if not str(err).startswith("params."):
            raise
        raise ConfigError(f"{key}.{err}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{key}.{'factory' if cfg.factory else 'name'}: {cfg.source} returned a "
            f"{type(model).__name__}, expected a torch.nn.Module"
        )
    mods = getattr(model, "modalities", None)
    if isinstance(mods, str) or not mods or not all(isinstance(m, str) for m in mods):
        raise ConfigError(
            f"{key}: the model from {cfg.source} ({type(model).__name__}) must declare the modalities "
            f"it reads as a `modalities` attribute (a tuple of names), got {short(mods)}"
        )
    names = [s.name for s in specs]
    for m in mods:
        if m not in names:
            raise ConfigError(
                f"{key}: the model from {cfg.source} reads modality {short(m)}, which the dataset does "
                f"not have; available: {', '.join(names)}"
            )
    return model


def model_output(model: nn.Module, sample: dict, key: str) -> torch.Tensor:
    """The model's output on a sample batch (eval mode, no gradients; its train/eval mode kept): a tensor with the
    example axis first. A forward that raises, or returns something else, is a ConfigError naming ``key``."""
    training = model.training
    try:
        with torch.no_grad():
            out = call(model.eval(), key, "forward(batch) on a sample batch of the data", sample)
    finally:
        model.train(training)
    n = batch_size(sample)
    if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != n:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"{key}: forward(batch) must return a tensor of shape (batch, outputs, ...) with the batch's {n} "
            f"examples first, got {shape}"
        )
    return out


def check_outputs(model: nn.Module, sample: dict, num_classes: int, key: str) -> None:
    """The model's output on a sample batch has the example axis first and ``num_classes`` columns on axis 1
    (``(B, C)``; ``(B, C, H, W)`` for segmentation; ``(B,)`` only for one output column); its train/eval mode is
    kept."""
    out = model_output(model, sample, key)
    columns = out.shape[1] if out.ndim > 1 else 1
    if columns != num_classes:
        raise ConfigError(
            f"{key}: the model predicts {columns} classes but the dataset has {num_classes} "
            "(the output's columns, axis 1)"
        )
