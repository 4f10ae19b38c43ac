"""Item transforms (item dict -> item dict) for file-backed datasets: crops, flips, spectrogram noise.

Torch only. Random draws come from torch's global generator, which a DataLoader seeds in each
worker (``base_seed + worker_id``), so a seeded loader gives the same augmentation every run.
A spatial transform applies the *same* crop or flip to every image modality named in ``keys``
(``(C, H, W)`` or ``(T, C, H, W)``: the last two axes are height and width) and, when ``label``
is set, to a segmentation label map ``"label"`` of shape (H, W); sizes must agree.

Each transform has ``random`` (True when it draws random numbers): a dataset whose transform is
random tells the engine that its teacher outputs cannot be cached.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ...errors import ConfigError, DataError

LABEL = "label"


def transform_is_random(transform: Callable | None) -> bool:
    """Whether ``transform`` draws random numbers; a callable that does not say is assumed random."""
    return transform is not None and bool(getattr(transform, "random", True))


_UNKNOWN = object()


def transform_settings(transform: Callable) -> str | None:
    """A string that changes with a transform's settings (part of the teacher cache's key under
    ``cache.augmentations``): its class and attributes, when each is a number, string, None, a sequence of them or
    such a transform (:class:`Compose` of the transforms here); None for anything else (a function, a tensor)."""
    settings = _settings(transform)
    return None if settings is _UNKNOWN else json.dumps(settings, sort_keys=True)


def _settings(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        parts = [_settings(v) for v in value]
        return _UNKNOWN if any(p is _UNKNOWN for p in parts) else parts
    if inspect.isroutine(value) or not hasattr(value, "__dict__") or isinstance(value, type):
        return _UNKNOWN
    fields = {k: _settings(v) for k, v in sorted(vars(value).items())}
    if any(v is _UNKNOWN for v in fields.values()):
        return _UNKNOWN
    return {"class": f"{type(value).__module__}.{type(value).__qualname__}", **fields}


def _keys(keys: Sequence[str] | str, what: str) -> tuple[str, ...]:
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise ConfigError(f"{what}.keys: expected a non-empty list of modality names, got {keys!r}")
    return keys


def _spatial(item: dict[str, Tensor], keys: tuple[str, ...], label: bool, what: str) -> tuple[list[str], int, int]:
    """The entries to transform and their common (H, W); a missing key or a size mismatch is a DataError."""
    names = []
    for k in keys:
        if k not in item:
            raise DataError(f"{what}: item has no modality {k!r}; it has {', '.join(map(repr, item))}")
        if item[k].ndim < 2:
            raise DataError(f"{what}: modality {k!r} has shape {tuple(item[k].shape)}; expected (..., H, W)")
        names.append(k)
    if label and LABEL in item and item[LABEL].ndim == 2:
        names.append(LABEL)
    sizes = {n: tuple(item[n].shape[-2:]) for n in names}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{n} {h}x{w}" for n, (h, w) in sizes.items())
        raise DataError(
            f"{what}: image sizes differ across the item ({shown}); they must be equal to crop or flip together"
        )
    h, w = sizes[names[0]]
    return names, h, w


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    @property
    def random(self) -> bool:
        return any(transform_is_random(t) for t in self.transforms)

    def __call__(self, item: dict[str, Tensor]) -> dict[str, Tensor]:
        for t in self.transforms:
            item = t(item)
        return item


class RandomCrop:
    """Crop a random ``size`` (h, w) window, the same for every key (and the label map)."""

    random = True

    def __init__(self, size: int | tuple[int, int], keys: Sequence[str] | str, label: bool = True) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) != 2 or not all(isinstance(s, int) and s > 0 for s in self.size):
            raise ConfigError(f"RandomCrop.size: expected a positive int or (h, w), got {size!r}")
        self.keys, self.label = _keys(keys, "RandomCrop"), label

    def window(self, h: int, w: int) -> tuple[int, int]:
        ch, cw = self.size
        if ch > h or cw > w:
            raise DataError(f"RandomCrop: crop {ch}x{cw} is larger than the image {h}x{w}")
        top = int(torch.randint(h - ch + 1, ()).item())
        left = int(torch.randint(w - cw + 1, ()).item())
        return top, left

    def __call__(self, item: dict[str, Tensor]) -> dict[str, Tensor]:
        names, h, w = _spatial(item, self.keys, self.label, "RandomCrop")
        top, left = self.window(h, w)
        ch, cw = self.size
        out = dict(item)
        for n in names:
            out[n] = item[n][..., top : top + ch, left : left + cw]
        return out


class CenterCrop(RandomCrop):
    """Crop the central ``size`` window (deterministic: for validation and test beside a train RandomCrop)."""

    random = False

    def window(self, h: int, w: int) -> tuple[int, int]:
        ch, cw = self.size
        if ch > h or cw > w:
            raise DataError(f"CenterCrop: crop {ch}x{cw} is larger than the image {h}x{w}")
        return (h - ch) // 2, (w - cw) // 2


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``, the same for every key (and the label map)."""

    random = True

    def __init__(self, keys: Sequence[str] | str, p: float = 0.5, label: bool = True) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"RandomHorizontalFlip.p: expected a probability in [0, 1], got {p!r}")
        self.keys, self.p, self.label = _keys(keys, "RandomHorizontalFlip"), p, label

    def __call__(self, item: dict[str, Tensor]) -> dict[str, Tensor]:
        names, _, _ = _spatial(item, self.keys, self.label, "RandomHorizontalFlip")
        if not bool(torch.rand(()) < self.p):
            return item
        out = dict(item)
        for n in names:
            out[n] = item[n].flip(-1)
        return out


class AdditiveNoise:
    """``x + std * eps``, eps ~ N(0, 1) drawn per element, for each key (e.g. a spectrogram)."""

    random = True

    def __init__(self, keys: Sequence[str] | str, std: float) -> None:
        if not std >= 0.0:
            raise ConfigError(f"AdditiveNoise.std: expected a number >= 0, got {std!r}")
        self.keys, self.std = _keys(keys, "AdditiveNoise"), float(std)

    def __call__(self, item: dict[str, Tensor]) -> dict[str, Tensor]:
        out = dict(item)
        for k in self.keys:
            if k not in item:
                raise DataError(f"AdditiveNoise: item has no modality {k!r}; it has {', '.join(map(repr, item))}")
            if not item[k].is_floating_point():
                raise DataError(f"AdditiveNoise: modality {k!r} has dtype {item[k].dtype}; expected floats")
            out[k] = item[k] + self.std * torch.randn(item[k].shape, dtype=item[k].dtype)
        return out
