"""An image + spectrogram classifier from the raw-input encoders (MultiBench's encoders -> fusion -> head shape).

    concat: head(concat(resnet(image), spec_cnn(audio)))
    late:   mean(head_image(resnet(image)), head_audio(spec_cnn(audio)))

Either input may be left out (an audio-only or image-only student is the same class), as in MFH's RAVDESS
(face image + (40, 256) audio features) and VGGSound (frame + spectrogram) set-ups. Returns (B, num_classes) logits;
for multi-label or regression the same model with ``num_classes`` = labels or output dimensions. Hook paths:
``encoders.<key>.body.layer<i>`` (image), ``encoders.<key>.blocks.<i>`` (audio), ``encoders.<key>.proj``, ``head``.
From YAML::

    model: {factory: "mmdistill.models.av_classifier:build_av_classifier",
            params: {num_classes: 8, image_shape: [3, 64, 64], audio_shape: [40, 256]}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, SupportsInt, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from ..batch import MASK_SUFFIX, RESERVED, modality_names
from ..errors import BatchError
from .encoders import Width
from .resnet import ResNetEncoder, ResNetParams, parse_params
from .spectrogram_cnn import SpectrogramCNNEncoder, SpectrogramCNNParams

Shape = list[Width]


class AVClassifierParams(BaseModel):
    """Settings of :func:`build_av_classifier` (the ``params`` of a YAML factory)."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(strict=True, ge=1, le=1_000_000)
    image_shape: Shape | None = Field(
        None, min_length=2, max_length=3, description="(C, H, W) or (H, W); None: no image"
    )
    audio_shape: Shape | None = Field(
        None, min_length=2, max_length=3, description="(F, T) or (C, F, T); None: no audio"
    )
    image_key: str = "image"
    audio_key: str = "audio"
    image_widths: list[Width] = Field(default_factory=lambda: [16, 32, 64], min_length=1, max_length=16)
    audio_widths: list[Width] = Field(default_factory=lambda: [16, 32, 64], min_length=1, max_length=16)
    blocks: int | list[int] = Field(1, description="BasicBlocks per image stage")
    out_dim: Width = 64
    fusion: Literal["concat", "late"] = "concat"
    dropout: float = Field(0.0, strict=True, ge=0, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some_input(self) -> AVClassifierParams:
        if self.image_shape is None and self.audio_shape is None:
            raise ValueError("give image_shape, audio_shape or both")
        for key in (self.image_key, self.audio_key):
            if not key or key in RESERVED or key.endswith(MASK_SUFFIX):
                raise ValueError(
                    f"{key!r} cannot name a modality ({', '.join(RESERVED)} and names ending in "
                    f"{MASK_SUFFIX!r} are reserved batch keys)"
                )
        if self.image_shape is not None and self.audio_shape is not None and self.image_key == self.audio_key:
            raise ValueError(f"image_key and audio_key are both {self.image_key!r}; they must differ")
        return self


class EncoderFusionClassifier(nn.Module):
    """``encoders[m]`` (anything with ``out_dim`` and ``forward(x, mask)``) per modality -> concat or late fusion."""

    def __init__(self, encoders: Mapping[str, nn.Module], num_classes: int, fusion: str = "concat") -> None:
        super().__init__()
        self.modalities = tuple(encoders)
        self.num_classes = int(num_classes)
        self.fusion = fusion
        self.encoders = nn.ModuleDict(dict(encoders))
        dims = [int(cast(SupportsInt, e.out_dim)) for e in self.encoders.values()]  # the encoder contract
        if fusion == "late":
            self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in zip(self.modalities, dims)})
        else:
            self.head = nn.Linear(sum(dims), num_classes)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        for m in self.modalities:
            if m not in batch:
                present = ", ".join(modality_names(batch)) or "none"
                raise BatchError(
                    f"{type(self).__name__} reads modality {m!r}, but the batch has no such key "
                    f"(modalities present: {present})"
                )
        feats = {m: enc(batch[m], batch.get(m + MASK_SUFFIX)) for m, enc in self.encoders.items()}
        if self.fusion == "late":
            return torch.stack([self.heads[m](f) for m, f in feats.items()]).mean(0)
        return self.head(torch.cat(list(feats.values()), dim=1))


def build_av_classifier(
    num_classes: int,
    image_shape: Sequence[int] | None = None,
    audio_shape: Sequence[int] | None = None,
    image_key: str = "image",
    audio_key: str = "audio",
    image_widths: Sequence[int] = (16, 32, 64),
    audio_widths: Sequence[int] = (16, 32, 64),
    blocks: int | Sequence[int] = 1,
    out_dim: int = 64,
    fusion: str = "concat",
    dropout: float = 0.0,
    **unknown: Any,
) -> EncoderFusionClassifier:
    """A ResNet image encoder and/or a spectrogram CNN, fused; arguments checked with errors naming the key."""
    p = parse_params(
        AVClassifierParams,
        {
            "num_classes": num_classes,
            "image_shape": image_shape,
            "audio_shape": audio_shape,
            "image_key": image_key,
            "audio_key": audio_key,
            "image_widths": image_widths,
            "audio_widths": audio_widths,
            "blocks": blocks,
            "out_dim": out_dim,
            "fusion": fusion,
            "dropout": dropout,
            **unknown,
        },
        "params",
    )
    encoders: dict[str, nn.Module] = {}
    if p.image_shape is not None:
        img = ResNetParams(channels=p.image_widths, blocks=p.blocks, out_dim=p.out_dim, dropout=p.dropout)
        encoders[p.image_key] = ResNetEncoder(tuple(p.image_shape), img)
    if p.audio_shape is not None:
        aud = SpectrogramCNNParams(channels=p.audio_widths, out_dim=p.out_dim, dropout=p.dropout)
        encoders[p.audio_key] = SpectrogramCNNEncoder(tuple(p.audio_shape), aud)
    return EncoderFusionClassifier(encoders, p.num_classes, p.fusion)
