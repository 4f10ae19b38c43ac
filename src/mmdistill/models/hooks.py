"""Intermediate features by dotted module path, with forward hooks (torchdistill's way).

    with FeatureHooks(model, ["encoders.a.body.1"]) as feats:
        logits = model(batch)
    h = feats["encoders.a.body.1"]

The model's ``forward`` is never rewritten.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..errors import ConfigError
from ..strict_yaml import short


def find_module(model: nn.Module, path: str) -> nn.Module:
    modules = dict(model.named_modules())
    if path not in modules:
        names = [n for n in modules if n]
        raise ConfigError(f"layer {short(path)} not found in {type(model).__name__}; layers: {', '.join(names)}")
    return modules[path]


class FeatureHooks:
    """Collects the outputs of the modules at ``paths`` during forward passes (the last pass wins)."""

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        self.model = model
        self.paths = list(paths)
        self.features: dict[str, Tensor] = {}
        self._handles: list = []
        for p in self.paths:
            find_module(model, p)  # validate before registering anything

    def __enter__(self) -> dict[str, Tensor]:
        for p in self.paths:
            self._handles.append(find_module(self.model, p).register_forward_hook(self._hook(p)))
        return self.features

    def _hook(self, path: str):
        def store(module: nn.Module, inputs, output) -> None:
            if not isinstance(output, Tensor):
                raise ConfigError(f"layer {short(path)} returns {type(output).__name__}, expected a tensor")
            self.features[path] = output

        return store

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
