"""Per-modality encoders: one example tensor in, one feature vector out.

* ``mlp``    flattens the example and applies Linear-ReLU blocks.
* ``cnn1d``  for (C, T) or (T,) inputs such as spectrograms or sensor streams: Conv1d-ReLU-pool blocks, global average pool.
* ``cnn2d``  for (C, H, W) or (H, W) images: Conv2d-ReLU-pool blocks, global average pool.
* ``tokens`` for integer token ids with an attention mask: embedding, then the mean over unmasked tokens.
* ``lenet``  MultiBench's AV-MNIST LeNet (``unimodals/common_models.py``) for (C, H, W) or (H, W)
  inputs: a 5x5 conv, then 3x3 convs, each bias-free -> BatchNorm -> ReLU -> 2x2 max pool, widths
  ``channels`` (MultiBench: image [6, 12, 24, 48], audio [6, 12, 24, 48, 96, 192]); the last map
  flattened is the feature (``out_dim`` = last width x remaining H x W; ``out_dim`` in the config is
  not used). Kaiming-uniform conv weights, as MultiBench.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import ENCODERS

MAX_WIDTH = 65536
Width = Annotated[int, Field(strict=True, ge=1, le=MAX_WIDTH)]  # a layer width: a positive integer, never a bool


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["mlp", "cnn1d", "cnn2d", "tokens", "lenet"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [64], max_length=64, description="mlp: hidden widths")
    channels: list[Width] = Field(default_factory=lambda: [16, 32], max_length=64, description="cnn: channels per block")
    kernel_size: int = Field(3, strict=True, ge=1, le=101)
    out_dim: Width = 64
    dropout: float = Field(0.0, strict=True, ge=0, lt=1, allow_inf_nan=False, description="probability, in [0, 1)")
    vocab_size: int = Field(1000, strict=True, ge=1, le=10_000_000)

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
            layers += [conv(in_ch, ch, cfg.kernel_size, padding=cfg.kernel_size // 2), nn.ReLU(), pool(2, ceil_mode=True)]
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
            layers += [nn.Conv2d(in_ch, ch, k, padding=k // 2, bias=False), nn.BatchNorm2d(ch), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch, h, w = ch, h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(f"student/teacher encoder lenet: {len(cfg.channels)} blocks halve the input {tuple(shape[-2:])} below 1x1; use fewer channels")
        self.body = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight)
        self.out_dim = in_ch * h * w

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.add_channel:
            x = x.unsqueeze(1)
        return self.body(x).flatten(1)


def build_encoder(shape: tuple[int, ...], cfg: EncoderConfig) -> nn.Module:
    return ENCODERS.get(cfg.type)(tuple(shape), cfg)
