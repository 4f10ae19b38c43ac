"""Reference multimodal classifier: per-modality encoders -> fusion -> head (MultiBench's shape).

Fusion:

* ``concat``  head(concat_m enc_m(x_m))
* ``sum``     head(sum_m enc_m(x_m))           (encoders share ``out_dim``)
* ``late``    mean_m head_m(enc_m(x_m))        (late logit averaging)

Any ``nn.Module`` with a ``modalities`` attribute whose ``forward(batch)`` returns logits
can stand in for this class; mmdistill never calls anything else on a model. From YAML such a model
is named by import path or registered name (:mod:`.custom`); :func:`build_model` builds either kind,
and every command that rebuilds a run's models goes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, cast

import torch
from pydantic import BaseModel, Discriminator, Field, Tag, field_validator
from torch import Tensor, nn

from ..batch import MASK_SUFFIX, RESERVED, ModalitySpec, validate_inputs
from ..errors import ConfigError
from ..registry import ENCODERS
from ..schema import TAGGED_MODELS, ConfigModel, checked_int, parse
from ..strict_yaml import cut, short
from .custom import CustomModelConfig, build_custom
from .encoders import BUILTIN_ENCODERS, EncoderConfig, Width, _mlp, build_encoder


class ModelConfig(ConfigModel):
    """A reference model: which modalities it reads and how it encodes and fuses them."""

    config_key: ClassVar[str] = "model"

    modalities: list[str] = Field(min_length=1, description="modality names, each once; not a reserved batch key")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="default encoder for every modality")
    encoders: dict[str, EncoderConfig] = Field(default_factory=dict, description="per-modality overrides")
    fusion: Literal["concat", "sum", "late"] = "concat"
    head_hidden: list[Width] = Field(default_factory=list, max_length=64)
    dropout: float = Field(0.0, strict=True, ge=0, lt=1, allow_inf_nan=False, description="probability, in [0, 1)")

    @field_validator("modalities")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for m in names:
            if m in RESERVED or m.endswith(MASK_SUFFIX) or not m:
                raise ValueError(
                    f"{short(m)} cannot name a modality: {', '.join(map(repr, RESERVED))} and names ending in "
                    f"{MASK_SUFFIX!r} are reserved batch keys"
                )
        dup = sorted({m for m in names if names.count(m) > 1})
        if dup:
            raise ValueError(f"modality {dup[0]!r} is listed twice")
        return names


class MultimodalClassifier(nn.Module):
    """``encoders[m]`` for each modality, a fusion rule and a classification head."""

    def __init__(self, specs: Sequence[ModalitySpec], num_classes: int, cfg: ModelConfig, key: str = "model") -> None:
        super().__init__()
        by_name = {s.name: s for s in specs}
        for m in cfg.modalities:
            if m not in by_name:
                raise ConfigError(
                    f"{key}.modalities: dataset has no modality {short(m)}; available: {', '.join(by_name)}"
                )
        for m in cfg.encoders:
            if m not in cfg.modalities:
                raise ConfigError(f"{key}.encoders.{cut(m)}: not one of the model's modalities {cfg.modalities}")
        for m in cfg.modalities:
            check_encoder_fits(
                by_name[m],
                cfg.encoders.get(m, cfg.encoder),
                f"{key}.encoders.{m}" if m in cfg.encoders else f"{key}.encoder",
            )
        self.modalities = tuple(cfg.modalities)
        self.input_specs = [by_name[m] for m in self.modalities]
        self.num_classes = num_classes
        self.fusion = cfg.fusion
        self.encoders = nn.ModuleDict(
            {
                m: build_encoder(
                    by_name[m].shape,
                    cfg.encoders.get(m, cfg.encoder),
                    f"{key}.encoders.{m}" if m in cfg.encoders else f"{key}.encoder",
                )
                for m in self.modalities
            }
        )
        dims = [cast(int, self.encoders[m].out_dim) for m in self.modalities]  # an int: build_encoder checked it
        if cfg.fusion == "sum" and len(set(dims)) > 1:
            raise ConfigError(f"{key}.fusion 'sum' needs equal encoder out_dim, got {dict(zip(self.modalities, dims))}")
        if cfg.fusion == "late":
            self.heads = nn.ModuleDict({m: self._head(d, cfg, num_classes) for m, d in zip(self.modalities, dims)})
        else:
            in_dim = sum(dims) if cfg.fusion == "concat" else dims[0]
            self.head = self._head(in_dim, cfg, num_classes)

    @staticmethod
    def _head(in_dim: int, cfg: ModelConfig, num_classes: int) -> nn.Module:
        hidden = _mlp(in_dim, cfg.head_hidden, cfg.dropout)
        return nn.Sequential(hidden, nn.Linear(cfg.head_hidden[-1] if cfg.head_hidden else in_dim, num_classes))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        validate_inputs(batch, self.input_specs, who=type(self).__name__)
        feats = {m: self.encoders[m](batch[m], batch.get(m + MASK_SUFFIX)) for m in self.modalities}
        if self.fusion == "late":
            return torch.stack([self.heads[m](feats[m]) for m in self.modalities]).mean(0)
        if self.fusion == "sum":
            return self.head(torch.stack(list(feats.values())).sum(0))
        return self.head(torch.cat(list(feats.values()), dim=1))


MAX_CLASSES = 1 << 24  # classes, labels or output columns a model may predict

# Tags of the two kinds of model config; pydantic puts them in error locations, and config.validate drops them.
REFERENCE_TAG, CUSTOM_TAG = "<reference model>", "<custom model>"


def _model_kind(raw: Any) -> str:
    if isinstance(raw, CustomModelConfig) or (isinstance(raw, dict) and ("factory" in raw or "name" in raw)):
        return CUSTOM_TAG
    return REFERENCE_TAG


# ``teacher.model`` / ``student.model``: the reference classifier's settings, or {factory | name, params}
AnyModelConfig = Annotated[
    Annotated[ModelConfig, Tag(REFERENCE_TAG)] | Annotated[CustomModelConfig, Tag(CUSTOM_TAG)],
    Discriminator(_model_kind),
]
MODEL_CONFIG_TAGS: dict[str, type[BaseModel]] = {REFERENCE_TAG: ModelConfig, CUSTOM_TAG: CustomModelConfig}
TAGGED_MODELS.update(MODEL_CONFIG_TAGS)


def build_model(
    cfg: ModelConfig | CustomModelConfig, specs: Sequence[ModalitySpec], num_classes: int, key: str = "model"
) -> nn.Module:
    """The model a config describes: the reference classifier, or the user's model (checked like it: modalities
    declared and known to the data); errors name ``key`` (e.g. ``student.model``) as the config key at fault.
    ``cfg`` may also be a dict of either config's keys."""
    cfg, specs = _model_arguments(cfg, specs, num_classes, key)
    if isinstance(cfg, CustomModelConfig):
        model = build_custom(cfg, specs, num_classes, key)
    else:
        model = MultimodalClassifier(specs, num_classes, cfg, key)
    # how to build it again: what distill() records for evaluate/analyze (engine.api); a plain attribute (the
    # checker types a module's unknown attributes as Tensor | Module)
    model.mmdistill_config = cfg  # type: ignore[assignment]
    return model


def _model_arguments(
    cfg: Any, specs: Any, num_classes: Any, key: str
) -> tuple[ModelConfig | CustomModelConfig, list[ModalitySpec]]:
    """build_model's arguments checked: a model config (or a dict of its keys), ModalitySpecs, a class count."""
    if isinstance(cfg, dict):
        kind = MODEL_CONFIG_TAGS[_model_kind(cfg)]
        cfg = parse(kind, cfg, f"{key}.")
    if not isinstance(cfg, (ModelConfig, CustomModelConfig)):
        raise ConfigError(
            f"{key}: expected a ModelConfig or CustomModelConfig (or a dict of its keys), got {type(cfg).__name__}"
        )
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise ConfigError(
            f"specs: expected a list of ModalitySpec (e.g. data.train.specs()), got {type(specs).__name__}"
        )
    bad = [s for s in specs if not isinstance(s, ModalitySpec)]
    if bad or not specs:
        got = f"a {type(bad[0]).__name__} among them" if bad else "an empty list"
        raise ConfigError(f"specs: expected a list of ModalitySpec (e.g. data.train.specs()), got {got}")
    checked_int(num_classes, "num_classes", ge=1, le=MAX_CLASSES)
    return cfg, list(specs)


def check_encoder_fits(spec: ModalitySpec, enc: EncoderConfig, key: str) -> None:
    """A built-in encoder type suits the modality: tokens for token ids only; cnn1d (C, T)/(T,); cnn2d (C, H, W)/(H, W).
    A user's registered encoder is not checked here (its own constructor may check the shape)."""
    if enc.type not in BUILTIN_ENCODERS:
        fits = getattr(ENCODERS.get(enc.type), "check_fits", None)  # an encoder's own check, e.g. hf's
        if fits is not None:
            fits(spec, enc.params, key)
        return
    dims = len(spec.shape)
    what = f"modality {spec.name!r} ({'token ids' if spec.tokens else 'floats'}, per-example shape {tuple(spec.shape)})"
    if spec.tokens != (enc.type == "tokens"):
        want = "'tokens'" if spec.tokens else "'mlp', 'cnn1d' or 'cnn2d'"
        raise ConfigError(f"{key}.type: {enc.type!r} does not fit {what}; use {want}")
    if enc.type == "cnn1d" and dims not in (1, 2):
        raise ConfigError(
            f"{key}.type: 'cnn1d' needs (channels, time) or (time,) examples, not {what}; use 'mlp' or 'cnn2d'"
        )
    if enc.type == "cnn2d" and dims not in (2, 3):
        raise ConfigError(
            f"{key}.type: 'cnn2d' needs (channels, height, width) or (height, width) examples, not {what}; "
            "use 'mlp' or 'cnn1d'"
        )
    if enc.type == "tokens" and dims != 1:
        raise ConfigError(f"{key}.type: 'tokens' needs (sequence,) token ids, not {what}")


def model_modalities(model: nn.Module) -> tuple[str, ...]:
    """The modalities a model declares it reads (its ``modalities`` attribute)."""
    mods = getattr(model, "modalities", None)
    if not mods or not all(isinstance(m, str) for m in mods):
        raise ConfigError(
            f"{type(model).__name__} must declare the modalities it reads as a `modalities` attribute (a tuple of "
            "names)"
        )
    return tuple(mods)


def declared_modalities(
    cfg: ModelConfig | CustomModelConfig, specs: Sequence[ModalitySpec], num_classes: int, key: str = "model"
) -> tuple[str, ...]:
    """The modalities a model config's model reads: the reference model's from its config, a user's model's from
    the ``modalities`` attribute of one built for the purpose (the global RNG left as it was)."""
    if isinstance(cfg, ModelConfig):
        return tuple(cfg.modalities)
    with torch.random.fork_rng(devices=[]):
        return model_modalities(build_model(cfg, specs, num_classes, key))


def check_model_size(
    key: str, model_cfg: ModelConfig | CustomModelConfig, specs: Sequence[ModalitySpec], num_classes: int
) -> None:
    """Refuse a model whose training state (weights, gradients, two Adam moments: 16 bytes a parameter) cannot fit in
    the memory available now; counted on the meta device, so nothing is allocated. A user's model is not counted
    (its factory may not run on the meta device)."""
    if isinstance(model_cfg, CustomModelConfig):
        return
    with torch.device("meta"):
        n = sum(p.numel() for p in build_model(model_cfg, specs, num_classes, key).parameters())
    avail = available_memory()
    if avail is not None and 16 * n > avail:
        raise ConfigError(
            f"{key}: {n:,} parameters need about {16 * n / 2**30:.1f} GiB to train, but {avail / 2**30:.1f} GiB "
            "of memory is available; use smaller widths (encoder.hidden, out_dim, channels, head_hidden)"
        )


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
