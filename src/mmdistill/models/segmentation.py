"""A U-Net-style dense segmentation network with one encoder per modality and a shared, fused decoder.

    encoders[m]: ResNet trunk (:mod:`.resnet`): stem, layer1 at H x W, layer_i at H / 2^(i-1) (widths w_1 .. w_L)
    fuse.i:      f_i = sum_m e_{m,i}                         (fusion "sum")
                 f_i = ReLU(BN(conv1x1(concat_m e_{m,i})))   (fusion "concat")
    decoder.upK: d = conv_bn_relu^2(concat(upsample(d, size of f_{L-K}), f_{L-K})), K = 1 .. L-1, from the deepest;
                 upsampling nearest (default: its backward is deterministic on CUDA, bilinear's is not) or bilinear
    decoder.out: conv1x1(d) -> (B, num_classes, H, W) logits at the input resolution (any H, W, odd included)

The skip connections and fused multi-scale features follow U-Net (Ronneberger et al., MICCAI 2015) and FuseNet's
RGB-D encoders (Hazirbas et al., ACCV 2016). One class serves teacher and student: ``modalities=("rgb", "depth")``
for an RGB-D teacher, ``("rgb",)`` for the RGB student (other batch entries are not read), so MFH's RGB-D -> RGB
segmentation (NYU Depth V2) is one config line apart. Hook paths: ``encoders.<m>.layer<i>``, ``fuse.<i>``,
``decoder.up<K>``, ``decoder.out``. From YAML::

    model: {factory: "mmdistill.models.segmentation:build_segmentation_net",
            params: {modalities: [rgb, depth], in_channels: {rgb: 3, depth: 1}, num_classes: 13}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from ..batch import MASK_SUFFIX, RESERVED, modality_names
from ..errors import BatchError, ConfigError
from .encoders import Width
from .resnet import conv_bn_relu, parse_params, resnet_trunk, stage_blocks

Fusion = Literal["sum", "concat"]
Upsample = Literal["nearest", "bilinear"]
Channels = Annotated[int, Field(strict=True, ge=1, le=4096)]


class SegmentationParams(BaseModel):
    """Settings of :func:`build_segmentation_net` (the ``params`` of a YAML factory)."""

    model_config = ConfigDict(extra="forbid")

    modalities: list[str] = Field(min_length=1, description="modalities the network reads, each once")
    in_channels: dict[str, Channels] = Field(description="channels of each modality's (C, H, W) input; may list more")
    num_classes: int = Field(strict=True, ge=2, le=65536)
    widths: list[Width] = Field(
        default_factory=lambda: [16, 32, 64],
        min_length=1,
        max_length=8,
        description="encoder stage widths; stage i > 1 halves H and W",
    )
    blocks: int | list[int] = Field(1, description="BasicBlocks per encoder stage")
    fusion: Fusion = "sum"
    upsample: Upsample = Field("nearest", description="nearest: deterministic backward on CUDA; bilinear: not")

    @field_validator("modalities")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for m in names:
            if not m or m in RESERVED or m.endswith(MASK_SUFFIX):
                raise ValueError(
                    f"{m!r} cannot name a modality ({', '.join(RESERVED)} and names ending in {MASK_SUFFIX!r} "
                    "are reserved batch keys)"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"a modality is listed twice: {names}")
        return names


class FeatureFusion(nn.Module):
    """Fuses one scale's per-modality maps (each (B, w, h, w')): their sum, or concat -> 1x1 conv -> BN -> ReLU."""

    def __init__(self, n_inputs: int, width: int, mode: Fusion) -> None:
        super().__init__()
        self.mode = mode
        self.mix = conv1x1_bn_relu(n_inputs * width, width) if mode == "concat" else nn.Identity()

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        if self.mode == "concat":
            return self.mix(torch.cat(list(maps), dim=1))
        return torch.stack(list(maps)).sum(0)


def conv1x1_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


class UpBlock(nn.Module):
    """Upsample (nearest or bilinear) to the skip map's exact size, concatenate the skip, two conv3x3-BN-ReLU."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, mode: Upsample = "nearest") -> None:
        super().__init__()
        self.mode = mode
        self.conv = nn.Sequential(conv_bn_relu(in_ch + skip_ch, out_ch), conv_bn_relu(out_ch, out_ch))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if self.mode == "bilinear":
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


class SegmentationDecoder(nn.Module):
    """``up1`` .. ``up{L-1}`` from the deepest fused map to the full-resolution one, then ``out`` (1x1 conv)."""

    def __init__(self, widths: Sequence[int], num_classes: int, upsample: Upsample = "nearest") -> None:
        super().__init__()
        self.depth = len(widths)
        for k in range(1, self.depth):
            deep, skip = widths[self.depth - k], widths[self.depth - 1 - k]
            self.add_module(f"up{k}", UpBlock(deep, skip, skip, upsample))
        self.out = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, fused: Sequence[Tensor]) -> Tensor:
        d = fused[-1]
        for k in range(1, self.depth):
            d = getattr(self, f"up{k}")(d, fused[self.depth - 1 - k])
        return self.out(d)


class SegmentationNet(nn.Module):
    """Per-modality ResNet encoders -> per-scale fusion -> U-Net decoder; ``forward(batch)`` -> (B, C, H, W) logits."""

    def __init__(
        self,
        modalities: Sequence[str],
        in_channels: Mapping[str, int],
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int | Sequence[int] = 1,
        fusion: Fusion = "sum",
        upsample: Upsample = "nearest",
    ) -> None:
        super().__init__()
        missing = [m for m in modalities if m not in in_channels]
        if missing:
            raise ConfigError(
                f"in_channels: no entry for modality {missing[0]!r}; give the channels of every modality "
                f"read ({', '.join(modalities)})"
            )
        if not widths:
            raise ConfigError("widths: list at least one encoder stage width")
        per_stage = stage_blocks(blocks, len(widths))
        self.modalities = tuple(modalities)
        self.in_channels = {m: int(in_channels[m]) for m in self.modalities}
        self.num_classes = int(num_classes)
        self.widths = tuple(int(w) for w in widths)
        self.fusion = fusion
        self.encoders = nn.ModuleDict(
            {m: resnet_trunk(self.in_channels[m], self.widths, per_stage) for m in self.modalities}
        )
        self.fuse = nn.ModuleList([FeatureFusion(len(self.modalities), w, fusion) for w in self.widths])
        self.decoder = SegmentationDecoder(self.widths, self.num_classes, upsample)

    def _input(self, batch: Mapping[str, Tensor], m: str) -> Tensor:
        if not isinstance(batch, Mapping):
            raise BatchError(
                f"SegmentationNet: a batch must be a dict of modality name -> tensor, got {type(batch).__name__}"
            )
        if m not in batch:
            present = ", ".join(modality_names(batch)) or "none"
            raise BatchError(
                f"SegmentationNet reads modality {m!r}, but the batch has no such key (modalities present: {present})"
            )
        x, c = batch[m], self.in_channels[m]
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise BatchError(
                f"modality {m!r}: expected a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}"
            )
        if x.dim() == 3 and c == 1:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != c:
            raise BatchError(
                f"modality {m!r}: expected shape (batch, {c}, height, width)"
                f"{' or (batch, height, width)' if c == 1 else ''}, got {tuple(x.shape)}"
            )
        return x

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        inputs = [self._input(batch, m) for m in self.modalities]
        first = inputs[0]
        for m, x in zip(self.modalities, inputs):
            if x.shape[0] != first.shape[0] or x.shape[-2:] != first.shape[-2:]:
                raise BatchError(
                    f"modality {m!r}: {x.shape[0]} examples of {tuple(x.shape[-2:])} pixels, but "
                    f"{self.modalities[0]!r} has {first.shape[0]} of {tuple(first.shape[-2:])}"
                )
        per_modality = [self._encode(m, x) for m, x in zip(self.modalities, inputs)]
        fused = [fuse([maps[i] for maps in per_modality]) for i, fuse in enumerate(self.fuse)]
        return self.decoder(fused)

    def _encode(self, m: str, x: Tensor) -> list[Tensor]:
        """The outputs of ``layer1`` .. ``layerL`` of modality ``m``'s trunk (full resolution first)."""
        trunk = self.encoders[m]
        h = trunk.get_submodule("stem")(x)
        maps = []
        for i in range(1, len(self.widths) + 1):
            h = trunk.get_submodule(f"layer{i}")(h)
            maps.append(h)
        return maps


def build_segmentation_net(
    modalities: Sequence[str],
    in_channels: Mapping[str, int],
    num_classes: int,
    widths: Sequence[int] = (16, 32, 64),
    blocks: int | Sequence[int] = 1,
    fusion: Fusion = "sum",
    upsample: Upsample = "nearest",
    **unknown: Any,
) -> SegmentationNet:
    """A :class:`SegmentationNet`, its arguments checked with errors naming the key (a YAML factory's ``params``)."""
    p = parse_params(
        SegmentationParams,
        {
            "modalities": modalities,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "widths": widths,
            "blocks": blocks,
            "fusion": fusion,
            "upsample": upsample,
            **unknown,
        },
        "params",
    )
    return SegmentationNet(p.modalities, p.in_channels, p.num_classes, p.widths, p.blocks, p.fusion, p.upsample)
