"""MM-IMDB as MultiBench distributes it: one HDF5 file, read lazily with h5py (multi-label, 23 genres).

``multimodal_imdb.hdf5`` (Arevalo et al., 2017, "Gated Multimodal Units"; MultiBench's
``datasets/imdb/get_data.py`` reads the same file) holds, for N = 25,959 movies:

    features      (N, 300)            text: mean word2vec embedding of the plot   -> float32 (300,)
    vgg_features  (N, 4096)           poster: VGG-16 features                     -> float32 (4096,)
    images        (N, 3, 256, 160)    poster pixels, uint8                        -> float32 (3, 256, 160) / 255
    genres        (N, 23)             multi-hot genre labels                      -> float32 (23,)

Splits are index ranges: train [0, 15552), val [15552, 18160), test [18160, 25959) (MultiBench's).
They are a parameter (``boundaries``, the three end indices); the published ones apply only to a
file of exactly 25,959 rows, and any other file must pass its own.

Lazy: building the splits reads only the shapes and the ``genres`` column (checked to be 0/1);
an item reads its own row. Each process opens its own read-only h5py handle on first use (the
handle is never pickled, and a DataLoader worker started by fork does not reuse its parent's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ...batch import MASK_SUFFIX, RESERVED
from ...errors import DataError
from .file_dataset import SPLITS, FileDataset, FileSplits, Item, Transform, split_transforms

FILE_NAME = "multimodal_imdb.hdf5"
PUBLISHED_ROWS = 25959
PUBLISHED_BOUNDARIES = (15552, 18160, 25959)
NUM_GENRES = 23
LABEL_KEY = "genres"
ROW_SHAPES = {"features": (300,), "vgg_features": (4096,), "images": (3, 256, 160), LABEL_KEY: (NUM_GENRES,)}
DEFAULT_MODALITIES = {"text": "features", "image": "vgg_features"}


def _h5py():
    try:
        import h5py
    except ImportError as err:  # an optional extra
        raise DataError("reading MM-IMDB needs h5py: pip install 'mmdistill[datasets]'") from err
    return h5py


def _open(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: MM-IMDB file not found (MultiBench's {FILE_NAME})")
    try:
        return _h5py().File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file, or truncated ({err})") from err


class MMIMDBDataset(FileDataset):
    """Rows ``[start, stop)`` of the MM-IMDB file; ``modalities`` maps modality name -> HDF5 key."""

    task = "multilabel"
    num_classes = NUM_GENRES

    def __init__(
        self,
        path: Path,
        start: int,
        stop: int,
        keys: Mapping[str, str],
        genres: np.ndarray,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform)
        self.path, self.start, self.stop = Path(path), start, stop
        self.keys = dict(keys)
        self.modalities = tuple(self.keys)
        self.genres = genres  # (stop - start, 23) float32, checked 0/1 when the splits were built
        self._file = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def _handle(self):
        if self._file is None or self._pid != os.getpid():  # a forked worker opens its own handle
            self._file, self._pid = _open(self.path), os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None  # an h5py handle must not cross processes
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, None

    def load(self, index: int) -> Item:
        f, row = self._handle(), self.start + index
        item = {}
        for name, key in self.keys.items():
            try:
                x = np.asarray(f[key][row])
            except (OSError, KeyError, ValueError) as err:
                raise DataError(f"{self.path}: cannot read row {row} of {key!r} ({type(err).__name__}: {err})") from err
            t = torch.from_numpy(x.astype(np.float32))
            item[name] = t / 255.0 if key == "images" else t
            if key != "images" and not torch.isfinite(t).all():
                raise DataError(f"{self.path}: {key!r} row {row} holds NaN or Inf values")
        item["label"] = torch.from_numpy(self.genres[index].copy())
        return item


def mmimdb_splits(
    root: str | Path,
    modalities: Mapping[str, str] | None = None,
    boundaries: tuple[int, int, int] = PUBLISHED_BOUNDARIES,
    transforms: Mapping[str, Transform | None] | None = None,
) -> FileSplits:
    """Train/val/test :class:`MMIMDBDataset` of ``root`` (the ``.hdf5`` file, or a folder holding it).

    ``modalities``: name -> HDF5 key among ``features``, ``vgg_features``, ``images``
    (default ``{"text": "features", "image": "vgg_features"}``); ``boundaries``: end index of
    train, val and test (MultiBench's by default, valid only for the full 25,959-row file).
    """
    path = Path(root)
    if path.is_dir():
        path = path / FILE_NAME
    keys = dict(DEFAULT_MODALITIES if modalities is None else modalities)
    allowed = sorted(set(ROW_SHAPES) - {LABEL_KEY})
    if not keys:
        raise DataError(f"modalities: choose at least one of {', '.join(allowed)}")
    for name, key in keys.items():
        if key not in allowed:
            raise DataError(f"modalities.{name}: unknown MM-IMDB key {key!r}; valid: {', '.join(allowed)}")
        if name in RESERVED or name.endswith(MASK_SUFFIX):
            raise DataError(
                f"modalities.{name}: {', '.join(map(repr, RESERVED))} and names ending in "
                f"{MASK_SUFFIX!r} are reserved batch keys; name the modality otherwise"
            )
    transform = split_transforms(transforms)
    with _open(path) as f:
        n = _check_layout(f, path, set(keys.values()) | {LABEL_KEY})
        bounds = _check_boundaries(boundaries, n, path)
        try:
            genres = np.asarray(f[LABEL_KEY][: bounds[-1]])
        except OSError as err:
            raise DataError(f"{path}: cannot read {LABEL_KEY!r} ({err})") from err
    bad = ~np.isin(genres, (0, 1))
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {LABEL_KEY!r} must be multi-hot (0 or 1); row {row}, genre {col} is {genres[row, col].item()!r}"
        )
    genres = genres.astype(np.float32)
    starts = (0, *bounds[:-1])
    return FileSplits(
        *(MMIMDBDataset(path, a, b, keys, genres[a:b], transform[s]) for s, a, b in zip(SPLITS, starts, bounds))
    )


def _check_layout(f, path: Path, needed: set[str]) -> int:
    """Every needed key present with its published row shape and a common row count; returns N."""
    rows = {}
    for key in sorted(needed):
        if key not in f:
            raise DataError(f"{path}: key {key!r} not found; keys present: {', '.join(sorted(f.keys())) or 'none'}")
        ds = f[key]
        if not hasattr(ds, "shape"):
            raise DataError(f"{path}: {key!r} is a group, expected a dataset of shape (N, {ROW_SHAPES[key]})")
        if tuple(ds.shape[1:]) != ROW_SHAPES[key] or ds.ndim != 1 + len(ROW_SHAPES[key]):
            expected = "(N, " + ", ".join(map(str, ROW_SHAPES[key])) + ")"
            raise DataError(f"{path}: {key!r} has shape {tuple(ds.shape)}; expected {expected}")
        if ds.dtype.kind not in "biuf":
            raise DataError(f"{path}: {key!r} has dtype {ds.dtype}; expected numbers")
        rows[key] = ds.shape[0]
    if len(set(rows.values())) > 1:
        raise DataError(f"{path}: keys have different row counts: {', '.join(f'{k} {v}' for k, v in rows.items())}")
    return next(iter(rows.values()))


def _check_boundaries(boundaries, n: int, path: Path) -> tuple[int, int, int]:
    b = tuple(boundaries)
    if len(b) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in b):
        raise DataError(f"boundaries: expected three integers (end of train, val, test), got {boundaries!r}")
    if b == PUBLISHED_BOUNDARIES and n != PUBLISHED_ROWS:
        raise DataError(
            f"{path}: {n} rows, but MultiBench's splits {PUBLISHED_BOUNDARIES} need the full file of "
            f"{PUBLISHED_ROWS}; pass boundaries for this file"
        )
    if not 0 < b[0] < b[1] < b[2] <= n:
        raise DataError(f"boundaries: expected 0 < train end < val end < test end <= {n} (rows in {path}), got {b}")
    return b
