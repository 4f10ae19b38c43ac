"""Base of the datasets read from files in published layouts (MM-IMDB, RGB-D folders, the MFH layouts), and readers.

The item contract: ``ds[i]`` is a ``dict[str, Tensor]`` with one float32 tensor per
modality and the target under ``"label"`` (classification: int64 scalar; multilabel: float32
multi-hot (C,); regression: float32 scalar or (D,); segmentation: int64 (H, W), ``ignore_index``
for unlabelled pixels). The dataset says ``modalities``, ``task``, ``num_classes`` (or
``num_outputs``), ``ignore_index`` and ``random`` (its transform draws random numbers, so a
teacher's outputs cannot be cached). A loader returns :class:`FileSplits` (train, val, test): plain
map-style datasets, which the engine takes as any user's dataset.

Every reader raises :class:`~mmdistill.errors.DataError` naming the file and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError, DataError
from ..contracts.transforms import transform_is_random

SPLITS = ("train", "val", "test")
Item = dict[str, Tensor]
Transform = Callable[[Item], Item]


class FileSplits(NamedTuple):
    """The three splits of a file-backed dataset."""

    train: FileDataset
    val: FileDataset
    test: FileDataset


class FileDataset(torch.utils.data.Dataset):
    """Base of the file-backed datasets: ``__getitem__`` = ``load(i)``, then the split's transform.

    Subclasses set ``modalities``, ``task``, ``num_classes`` (``ignore_index`` for segmentation)
    and implement ``__len__`` and ``load``.
    """

    modalities: tuple[str, ...] = ()
    task: str = "classification"
    num_classes: int = 0
    ignore_index: int | None = None

    def __init__(self, transform: Transform | None = None) -> None:
        if transform is not None and not callable(transform):
            raise ConfigError(
                f"transform: expected a callable (item dict -> item dict), got {type(transform).__name__}"
            )
        self.transform = transform

    @property
    def random(self) -> bool:
        """True when the transform draws random numbers (then an example differs from epoch to epoch)."""
        return transform_is_random(self.transform)

    def load(self, index: int) -> Item:  # pragma: no cover - abstract
        raise NotImplementedError

    if TYPE_CHECKING:  # each subclass defines it (declared here for the type checker only)

        def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Item:
        n = len(self)
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a split of {n} items")
        item = self.load(int(index) % n)
        return self.transform(item) if self.transform is not None else item


def split_transforms(transforms: Mapping[str, Transform | None] | None) -> dict[str, Transform | None]:
    """``{"train": t, ...}`` -> one entry per split (None where not given); an unknown split is a ConfigError."""
    transforms = dict(transforms or {})
    unknown = sorted(set(transforms) - set(SPLITS), key=str)
    if unknown:
        raise ConfigError(f"transforms: unknown split {unknown[0]!r}; valid: {', '.join(SPLITS)}")
    return {s: transforms.get(s) for s in SPLITS}


def member_path(folder: Path, name: str, source: str) -> Path:
    """``folder / name`` for a relative name from a list or CSV; an absolute name or one with ``..`` is refused."""
    parts = PurePosixPath(name.replace("\\", "/"))
    if not name or parts.is_absolute() or ".." in parts.parts:
        raise DataError(f"{source}: file name {name!r} must be a relative path inside {folder} (no '..', not absolute)")
    return folder / parts


def require_files(paths: list[Path], what: str) -> None:
    """Raise a DataError naming the first missing file (and how many are missing)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" ({len(missing)} of {len(paths)} {what} files missing)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0]}: {what} file not found{more}")


def read_image(path: Path, modes: tuple[str, ...], what: str) -> np.ndarray:
    """Decode an image file with Pillow; its mode must be one of ``modes``; returns the pixel array."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: not a readable {what} image, or truncated ({type(err).__name__}: {err})") from err
    if mode not in modes:
        raise DataError(f"{path}: {what} image has Pillow mode {mode!r}; expected {' or '.join(map(repr, modes))}")
    return arr


def read_npy(path: Path, what: str) -> np.ndarray:
    """A numeric ``.npy`` array (never unpickled); a missing, corrupt or non-numeric file is a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:  # a garbled header fails in numpy's parser with many exception types
        raise DataError(f"{path}: not a readable .npy file, or truncated ({type(err).__name__}: {err})") from err
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        dtype = getattr(arr, "dtype", type(arr).__name__)
        raise DataError(f"{path}: expected a numeric array, got {dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{path}: {what} holds NaN or Inf values")
    return arr


def imagenet_normalized(rgb: Tensor) -> Tensor:
    """(..., 3, H, W) in [0, 1] -> ``(x - mean) / std`` with ImageNet's channel statistics (as the MFH code does)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (rgb - mean) / std
