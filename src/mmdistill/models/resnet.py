"""A small ResNet-style image encoder (He et al., CVPR 2016, "Deep Residual Learning", Sec. 3-4) for raw images.

    stem:    conv3x3(C -> w_1) -> BN -> ReLU                                     (H x W)
    layer_i: ``blocks[i]`` BasicBlocks of width w_i; the first of layer_i (i > 1) has stride 2 (H / 2^(i-1))
    block:   y = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x)), shortcut = 1x1 conv + BN where the shape changes
    feature: ReLU(proj(dropout(mean over H x W of the last layer)))              (out_dim)

Input (C, H, W) or (H, W) per example (one channel added). Defaults fit a CPU: widths [16, 32, 64], one block per
stage (81,552 parameters for RGB with out_dim 64). Layers are named ``body.stem``, ``body.layer1`` ... ``body.layerN``,
``proj`` for feature hooks. Registered as encoder ``resnet``; :func:`resnet_encoder` builds one without a config.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import ENCODERS
from ..strict_yaml import short
from .encoders import Width


class ResNetParams(BaseModel):
    """The ``resnet`` encoder's own settings."""

    model_config = ConfigDict(extra="forbid")

    channels: list[Width] = Field(
        default_factory=lambda: [16, 32, 64],
        min_length=1,
        max_length=16,
        description="width of each stage; every stage after the first halves H and W",
    )
    blocks: int | list[int] = Field(1, description="BasicBlocks per stage: one number for all, or one per stage")
    out_dim: Width = 64
    dropout: float = Field(0.0, strict=True, ge=0, lt=1, allow_inf_nan=False, description="before the projection")


def parse_params(model: type[BaseModel], raw: Any, key: str) -> Any:
    """``model.model_validate(raw)``, a validation error becoming one ConfigError naming ``key.field``."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        parts = []
        for e in err.errors()[:5]:
            where = ".".join([key, *map(str, e["loc"])])
            if e["type"] == "extra_forbidden":
                parts.append(f"{where}: unknown key; valid keys: {', '.join(model.model_fields)}")
            else:
                parts.append(f"{where}: {e['msg'].removeprefix('Value error, ')} (got {short(e.get('input'))})")
        raise ConfigError("; ".join(parts)) from None


def stage_blocks(blocks: int | Sequence[int], stages: int, key: str = "blocks") -> list[int]:
    """Blocks per stage from one number or a list with one entry per stage (each >= 1)."""
    per = [blocks] * stages if isinstance(blocks, int) else list(blocks)
    if len(per) != stages or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 64 for b in per):
        raise ConfigError(
            f"{key}: expected one integer in 1..64 or a list of {stages} of them (one per stage), got {blocks!r}"
        )
    return per


def image_channels(shape: Sequence[int], who: str) -> tuple[int, bool]:
    """(input channels, whether a channel axis must be added) for a (C, H, W) or (H, W) per-example shape."""
    if len(shape) not in (2, 3) or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ConfigError(
            f"{who}: needs (channels, height, width) or (height, width) examples, got shape {tuple(shape)}"
        )
    return (1, True) if len(shape) == 2 else (shape[0], False)


def conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1-conv) shortcut: ReLU(F(x) + shortcut(x))."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(h)) + self.shortcut(x)).relu()


def resnet_trunk(in_ch: int, widths: Sequence[int], blocks: Sequence[int]) -> nn.Sequential:
    """``stem`` then ``layer1`` ... ``layerN``; layer i > 1 starts with a stride-2 block; Kaiming-normal convs."""
    parts: OrderedDict[str, nn.Module] = OrderedDict(stem=conv_bn_relu(in_ch, widths[0]))
    prev = widths[0]
    for i, (w, n) in enumerate(zip(widths, blocks)):
        layer = [BasicBlock(prev if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
        parts[f"layer{i + 1}"] = nn.Sequential(*layer)
        prev = w
    trunk = nn.Sequential(parts)
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return trunk


class ResNetStageParams(BaseModel):
    """``encoder.params`` of the ``resnet`` encoder in a config (the widths come from ``encoder.channels``)."""

    model_config = ConfigDict(extra="forbid")

    blocks: int | list[int] = Field(1, description="BasicBlocks per stage: one number for all, or one per stage")


@ENCODERS.register("resnet")
class ResNetEncoder(nn.Module):
    """Residual stages -> global average pool -> dropout -> Linear -> ReLU.

    ``cfg`` has ``channels``, ``out_dim``, ``dropout`` and optionally ``blocks`` (default 1 per stage): a
    :class:`ResNetParams` or the shared encoder config (then ``blocks`` comes from ``params``)."""

    Params = ResNetStageParams

    def __init__(self, shape: tuple[int, ...], cfg: Any, params: ResNetStageParams | None = None) -> None:
        super().__init__()
        if params is not None:
            cfg = ResNetParams(
                channels=list(cfg.channels), blocks=params.blocks, out_dim=cfg.out_dim, dropout=cfg.dropout
            )
        in_ch, self.add_channel = image_channels(shape, "encoder resnet")
        widths = list(cfg.channels)
        if not widths:
            raise ConfigError("encoder resnet: channels must list at least one stage width")
        self.body = resnet_trunk(
            in_ch, widths, stage_blocks(getattr(cfg, "blocks", 1), len(widths), "encoder resnet blocks")
        )
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.proj = nn.Linear(widths[-1], cfg.out_dim)
        self.out_dim = int(cfg.out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.add_channel:
            x = x.unsqueeze(1)
        return self.proj(self.dropout(self.body(x).mean((2, 3)))).relu()


def resnet_encoder(
    shape: Sequence[int],
    widths: Sequence[int] = (16, 32, 64),
    blocks: int | Sequence[int] = 1,
    out_dim: int = 64,
    dropout: float = 0.0,
) -> ResNetEncoder:
    """A :class:`ResNetEncoder` for per-example ``shape`` (C, H, W) or (H, W), without a config object."""
    params = parse_params(
        ResNetParams, {"channels": widths, "blocks": blocks, "out_dim": out_dim, "dropout": dropout}, "resnet"
    )
    return ResNetEncoder(tuple(shape), params)
