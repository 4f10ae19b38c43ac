"""A spectrogram CNN encoder: 2-D convolutions over frequency x time, then pooling that accepts any length T.

    block_i: conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> 2x2 max pool (ceil mode)    (PANNs' CNN blocks)
    pool:    mean over frequency, then max + mean over time                                (Kong et al., 2020, Sec. 3.2)
    feature: ReLU(proj(dropout(pool(block_N(...block_1(x))))))                              (out_dim)

Input: a log-spectrogram (F, T) or (C, F, T) per example (e.g. MFH's RAVDESS (40, 256) features, or a VGGSound STFT).
The pooling has no fixed size, so the same encoder takes any T (and F). Defaults fit a CPU: widths [16, 32, 64]
(76,176 parameters for one input channel, out_dim 64). Layers: ``blocks.0`` ... ``blocks.N-1`` (feature maps
(B, w_i, F/2^(i+1), T/2^(i+1)), rounded up), ``pool`` ((B, w_N)), ``proj``. Registered as encoder ``spec_cnn``;
:func:`spectrogram_encoder` builds one without a config. An attention mask, if given, is ignored (inputs of one batch
share T).

Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern Recognition", IEEE/ACM TASLP 2020.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import ENCODERS
from .encoders import Width
from .resnet import conv_bn_relu, parse_params


class SpectrogramCNNParams(BaseModel):
    """The ``spec_cnn`` encoder's own settings."""

    model_config = ConfigDict(extra="forbid")

    channels: list[Width] = Field(
        default_factory=lambda: [16, 32, 64],
        min_length=1,
        max_length=16,
        description="width of each conv block; each block halves F and T",
    )
    out_dim: Width = 64
    dropout: float = Field(0.0, strict=True, ge=0, lt=1, allow_inf_nan=False, description="before the projection")


class TimeFrequencyPool(nn.Module):
    """(B, C, F, T) -> (B, C): mean over frequency, then max + mean over time (PANNs' global pooling)."""

    def forward(self, x: Tensor) -> Tensor:
        h = x.mean(2)
        return h.amax(2) + h.mean(2)


@ENCODERS.register("spec_cnn")
class SpectrogramCNNEncoder(nn.Module):
    """Conv blocks over (frequency, time) -> time-frequency pool -> dropout -> Linear -> ReLU; ``cfg`` has
    ``channels``, ``out_dim`` and ``dropout`` (:class:`SpectrogramCNNParams` or the shared encoder config)."""

    def __init__(self, shape: tuple[int, ...], cfg: Any) -> None:
        super().__init__()
        if len(shape) not in (2, 3) or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ConfigError(
                f"encoder spec_cnn: needs (frequency, time) or (channels, frequency, time) examples, "
                f"got shape {tuple(shape)}"
            )
        widths = list(cfg.channels)
        if not widths:
            raise ConfigError("encoder spec_cnn: channels must list at least one block width")
        self.add_channel = len(shape) == 2
        in_ch = 1 if self.add_channel else shape[0]
        blocks = []
        for w in widths:
            blocks.append(nn.Sequential(conv_bn_relu(in_ch, w), conv_bn_relu(w, w), nn.MaxPool2d(2, ceil_mode=True)))
            in_ch = w
        self.blocks = nn.Sequential(*blocks)
        for m in self.blocks.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.pool = TimeFrequencyPool()
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.proj = nn.Linear(in_ch, cfg.out_dim)
        self.out_dim = int(cfg.out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.add_channel:
            x = x.unsqueeze(1)
        return self.proj(self.dropout(self.pool(self.blocks(x)))).relu()


def spectrogram_encoder(
    shape: Sequence[int], widths: Sequence[int] = (16, 32, 64), out_dim: int = 64, dropout: float = 0.0
) -> SpectrogramCNNEncoder:
    """A :class:`SpectrogramCNNEncoder` for per-example ``shape`` (F, T) or (C, F, T), without a config object."""
    params = parse_params(
        SpectrogramCNNParams, {"channels": widths, "out_dim": out_dim, "dropout": dropout}, "spec_cnn"
    )
    return SpectrogramCNNEncoder(tuple(shape), params)
