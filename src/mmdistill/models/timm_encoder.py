"""A ``timm`` image model as an encoder (``type: timm``), where ``timm`` is importable.

    encoders:
      image: {type: timm, name: resnet18, path: resnet18-folder/model.safetensors, trainable: none}

``timm.create_model(name, num_classes=0, in_chans=C)`` gives the model's pooled features (``out_dim`` =
``num_features``); ``path`` loads its weights from a safetensors file (never a pickle); ``pretrained: true`` lets timm
download them where the machine has a network. timm needs a torchvision built for the installed torch; without
timm (or with a mismatched torchvision) the encoder is one line saying what to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import ENCODERS


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="a timm model name, e.g. resnet18 or vit_tiny_patch16_224")
    path: str | None = Field(None, description="a safetensors file of the model's weights")
    pretrained: bool = Field(False, strict=True, description="let timm download its pretrained weights")
    trainable: Literal["all", "none"] = "all"


def timm_module() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "params.name: encoder type timm needs the timm package (and a torchvision built for this torch): "
            "pip install timm"
        ) from None
    except RuntimeError as err:
        if "torchvision" not in str(err):
            raise
        raise ConfigError(
            f"params.name: the installed torchvision does not match torch {torch.__version__}; install the "
            "torchvision built for this torch (or uninstall timm and torchvision)"
        ) from None
    return timm


@ENCODERS.register("timm")
class TimmEncoder(nn.Module):
    """A timm model's pooled features for (C, H, W) images."""

    Params = TimmParams

    def __init__(self, shape: tuple[int, ...], cfg: Any, params: TimmParams) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ConfigError(f"params.name: a timm image model reads (C, H, W) images, not examples of shape {shape}")
        timm = timm_module()
        try:
            self.model = timm.create_model(params.name, pretrained=params.pretrained, num_classes=0, in_chans=shape[0])
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            raise ConfigError(f"params.name: timm cannot create {params.name!r}: {str(err).splitlines()[0]}") from None
        if params.path is not None:
            self._load(Path(params.path))
        self.frozen = params.trainable == "none"
        if self.frozen:
            self.model.requires_grad_(False)
        self.out_dim = int(self.model.num_features)

    def _load(self, path: Path) -> None:
        from safetensors.torch import load_file

        if path.suffix != ".safetensors" or not path.is_file():
            raise ConfigError(f"params.path: {path} is no safetensors file (mmdistill never unpickles weights)")
        missing, unexpected = self.model.load_state_dict(load_file(str(path)), strict=False)
        if missing:
            raise ConfigError(f"params.path: {path} lacks {len(missing)} of the model's weights, e.g. {missing[0]}")

    def train(self, mode: bool = True) -> TimmEncoder:
        super().train(mode)
        if getattr(self, "frozen", False):
            self.model.eval()
        return self

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.model(x)
