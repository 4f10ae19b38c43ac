"""Intermediate features by dotted module path, with forward hooks (torchdistill's way).

    with FeatureHooks(model, ["encoders.a.body.1"]) as feats:
        logits = model(batch)
    h = feats["encoders.a.body.1"]

The model's ``forward`` is never rewritten. A layer that returns a tuple or a Hugging Face ``ModelOutput`` (a
transformer block: ``encoders.text.model.encoder.layer.5``) is read as its first tensor, the hidden states.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..strict_yaml import short

LISTED_IN_FULL = 40  # a model with at most this many layers has them all listed in the error; else the nearest


def find_module(model: nn.Module, path: str) -> nn.Module:
    modules = dict(model.named_modules())
    if path not in modules:
        names = [n for n in modules if n]
        if len(names) <= LISTED_IN_FULL:
            listed = f"layers: {', '.join(names)}"
        else:
            listed = f"nearest: {', '.join(nearest_paths(path, names))} (of {len(names)} layers)"
        raise ConfigError(f"layer {short(path)} not found in {type(model).__name__}; {listed}")
    return modules[path]


def nearest_paths(path: str, names: Sequence[str], count: int = 5) -> list[str]:
    """The valid paths nearest to ``path``: the children of its longest valid prefix, then the closest spellings."""
    parts = path.split(".")
    prefix = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in names), "")
    depth = prefix.count(".") + 2 if prefix else 1
    children = [n for n in names if n.startswith(f"{prefix}.") and n.count(".") + 1 == depth] if prefix else []
    close = difflib.get_close_matches(path, names, n=count, cutoff=0.5)
    ranked = list(dict.fromkeys([*children[-count:], *close]))
    return ranked[:count]


def layer_output(output: Any) -> Any:
    """A layer's output as the tensor a method reads: a tuple's or a ``ModelOutput``'s first tensor (the hidden
    states of a transformer block); anything else as it is."""
    if hasattr(output, "to_tuple"):  # a Hugging Face ModelOutput
        output = output.to_tuple()
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return output


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
            output = layer_output(output)
            if not isinstance(output, Tensor):
                raise ConfigError(f"layer {short(path)} returns {type(output).__name__}, expected a tensor")
            self.features[path] = output

        return store

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
