"""Per-modality encoders: one example tensor in, one feature vector out.

* ``mlp``    flattens the example and applies Linear-ReLU blocks.
* ``cnn1d``  for (C, T) or (T,) inputs such as spectrograms or sensor streams: Conv1d-ReLU-pool blocks, global
  average pool.
* ``cnn2d``  for (C, H, W) or (H, W) images: Conv2d-ReLU-pool blocks, global average pool.
* ``tokens`` for integer token ids with an attention mask: embedding, then the mean over unmasked tokens.
* ``lenet``  MultiBench's AV-MNIST LeNet (``unimodals/common_models.py``) for (C, H, W) or (H, W)
  inputs: a 5x5 conv, then 3x3 convs, each bias-free -> BatchNorm -> ReLU -> 2x2 max pool, widths
  ``channels`` (MultiBench: image [6, 12, 24, 48], audio [6, 12, 24, 48, 96, 192]); the last map
  flattened is the feature (``out_dim`` = last width x remaining H x W; ``out_dim`` in the config is
  not used). Kaiming-uniform conv weights, as MultiBench.

Your own encoder: register a class with ``@ENCODERS.register("name")``, constructed as ``Enc(shape, cfg)``
(``shape``: the per-example input shape; ``cfg``: this :class:`EncoderConfig`), an ``nn.Module`` with an
``out_dim`` attribute whose ``forward(x, mask=None)`` returns ``(batch, out_dim)`` features. Settings of its own
go in a pydantic ``Params`` class attribute: then ``encoder.params`` in YAML is validated by it (unknown keys,
types and ranges refused by key) and the encoder is constructed as ``Enc(shape, cfg, params)``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

import torch
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import ENCODERS
from ..schema import ConfigModel
from ..usercode import call

BUILTIN_ENCODERS = ("mlp", "cnn1d", "cnn2d", "tokens", "lenet")  # pretrained ones: ``hf`` (models/hf.py)
MAX_WIDTH = 65536
Width = Annotated[int, Field(strict=True, ge=1, le=MAX_WIDTH)]  # a layer width: a positive integer, never a bool


class EncoderConfig(ConfigModel):
    """An encoder: ``type`` names a class registered in ``ENCODERS``; the common settings below are read by the
    built-ins (each uses the ones it needs); ``params`` goes to the registered encoder's own ``Params`` model."""

    config_key: ClassVar[str] = "model.encoder"

    type: str = Field("mlp", description="a registered encoder: mlp, cnn1d, cnn2d, tokens, lenet or your own")
    hidden: list[Width] = Field(default_factory=lambda: [64], max_length=64, description="mlp: hidden widths")
    channels: list[Width] = Field(
        default_factory=lambda: [16, 32], max_length=64, description="cnn: channels per block"
    )
    kernel_size: int = Field(3, strict=True, ge=1, le=101)
    out_dim: Width = 64
    dropout: float = Field(0.0, strict=True, ge=0, lt=1, allow_inf_nan=False, description="probability, in [0, 1)")
    vocab_size: int = Field(1000, strict=True, ge=1, le=10_000_000)
    params: dict[str, Any] = Field(default_factory=dict, description="settings of a registered encoder's Params")

    @model_validator(mode="before")
    @classmethod
    def _own_keys_beside_type(cls, raw: Any) -> Any:
        """A registered encoder's own settings may be written beside ``type`` (``{type: hf, path: ...}``): the keys
        its ``Params`` declares and this model does not move into ``params``."""
        if not isinstance(raw, dict) or raw.get("type") not in ENCODERS:
            return raw
        schema = getattr(ENCODERS.get(raw["type"]), "Params", None)
        own = getattr(schema, "model_fields", {})
        moved = {k: v for k, v in raw.items() if k in own and k not in cls.model_fields}
        if not moved:
            return raw
        params = raw.get("params")
        params = params if isinstance(params, dict) else {}
        rest = {k: v for k, v in raw.items() if k not in moved}
        return {**rest, "params": {**params, **moved}}

    @field_validator("type")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in ENCODERS:
            raise ValueError(ENCODERS.unknown(name))
        return name

    @field_validator("params")
    @classmethod
    def _own_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("type")
        if name is None:  # the type was refused already
            return params
        schema = encoder_params_model(name)
        if schema is None:
            if params:
                raise ValueError(
                    f"encoder {name!r} takes no params (its settings are the keys hidden, channels, "
                    f"kernel_size, out_dim, dropout, vocab_size); got {', '.join(map(str, params))}"
                )
            return params
        try:
            return schema.model_validate(params).model_dump(mode="json")
        except ValidationError as err:
            valid = ", ".join(schema.model_fields)
            problems = [
                f"{'.'.join(str(p) for p in e['loc'])}: "
                f"{f'unknown key; valid keys: {valid}' if e['type'] == 'extra_forbidden' else e['msg']}"
                for e in err.errors()[:5]
            ]
            raise ValueError(f"{'; '.join(problems)} (encoder {name!r})") from None

    @model_serializer(mode="wrap")
    def _no_empty_params(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if not out.get("params"):
            out.pop("params", None)  # built-in encoders: the same YAML as before params existed
        return out


def encoder_params_model(name: str) -> type[BaseModel] | None:
    """The ``Params`` model of the registered encoder ``name`` (None: it takes no params)."""
    schema = getattr(ENCODERS.get(name), "Params", None)
    if schema is not None and not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigError(f"encoder {name!r}: its Params attribute must be a pydantic BaseModel, got {schema!r:.80}")
    return schema


def _mlp(in_dim: int, widths: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(in_dim, w), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_dim = w
    return nn.Sequential(*layers)


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    def __init__(self, shape: tuple[int, ...], cfg: EncoderConfig) -> None:
        super().__init__()
        self.body = _mlp(math.prod(shape), [*cfg.hidden, cfg.out_dim], cfg.dropout)
        self.out_dim = cfg.out_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.body(x.flatten(1))


class _ConvEncoder(nn.Module):
    dims = 1

    def __init__(self, shape: tuple[int, ...], cfg: EncoderConfig) -> None:
        super().__init__()
        self.add_channel = len(shape) == self.dims
        in_ch = 1 if self.add_channel else shape[0]
        conv = nn.Conv1d if self.dims == 1 else nn.Conv2d
        pool = nn.MaxPool1d if self.dims == 1 else nn.MaxPool2d
        layers: list[nn.Module] = []
        for ch in cfg.channels:
            layers += [
                conv(in_ch, ch, cfg.kernel_size, padding=cfg.kernel_size // 2),
                nn.ReLU(),
                pool(2, ceil_mode=True),
            ]
            in_ch = ch
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(in_ch, cfg.out_dim)
        self.out_dim = cfg.out_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.add_channel:
            x = x.unsqueeze(1)
        h = self.body(x)
        return torch.relu(self.proj(h.flatten(2).mean(-1)))


@ENCODERS.register("cnn1d")
class CNN1dEncoder(_ConvEncoder):
    dims = 1


@ENCODERS.register("cnn2d")
class CNN2dEncoder(_ConvEncoder):
    dims = 2


@ENCODERS.register("tokens")
class TokenEncoder(nn.Module):
    """Embedding + mean over the tokens the attention mask keeps (all masked -> zero vector)."""

    def __init__(self, shape: tuple[int, ...], cfg: EncoderConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.out_dim)
        self.out_dim = cfg.out_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        e = self.embed(x)
        m = torch.ones(x.shape, device=x.device) if mask is None else mask.to(e.dtype)
        return (e * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)


@ENCODERS.register("lenet")
class LeNetEncoder(nn.Module):
    """MultiBench's LeNet: conv(5x5, then 3x3, no bias) -> BN -> ReLU -> maxpool(2) per width in ``channels``."""

    def __init__(self, shape: tuple[int, ...], cfg: EncoderConfig) -> None:
        super().__init__()
        self.add_channel = len(shape) == 2
        in_ch, (h, w) = (1 if self.add_channel else shape[0]), shape[-2:]
        layers: list[nn.Module] = []
        for i, ch in enumerate(cfg.channels):
            k = 5 if i == 0 else 3
            layers += [
                nn.Conv2d(in_ch, ch, k, padding=k // 2, bias=False),
                nn.BatchNorm2d(ch),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_ch, h, w = ch, h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(
                f"student/teacher encoder lenet: {len(cfg.channels)} blocks halve the input {tuple(shape[-2:])} "
                "below 1x1; use fewer channels"
            )
        self.body = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
        self.out_dim = in_ch * h * w

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.add_channel:
            x = x.unsqueeze(1)
        return self.body(x).flatten(1)


def build_encoder(shape: tuple[int, ...], cfg: EncoderConfig, key: str = "encoder") -> nn.Module:
    """The registered encoder ``cfg.type`` for inputs of per-example ``shape``; errors name ``key``."""
    cls = ENCODERS.get(cfg.type, f"{key}.type")
    schema = encoder_params_model(cfg.type)
    args = (tuple(shape), cfg) if schema is None else (tuple(shape), cfg, schema.model_validate(cfg.params))
    try:
        enc = call(cls, f"{key}.type", f"encoder {cfg.type!r}", *args)  # a user's encoder that raises is named
    except ConfigError as err:  # an encoder's own setting at fault (``params.path: ...``): named under its key
        if not str(err).startswith("params."):
            raise
        raise ConfigError(f"{key}.{str(err).removeprefix('params.')}") from None
    if not isinstance(enc, nn.Module):
        raise ConfigError(f"{key}.type: encoder {cfg.type!r} built a {type(enc).__name__}, not a torch.nn.Module")
    out_dim = getattr(enc, "out_dim", None)
    if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim < 1:
        raise ConfigError(
            f"{key}.type: encoder {cfg.type!r} must set `out_dim` (a positive int, the width of its "
            f"features), got {out_dim!r:.80}"
        )
    return enc
