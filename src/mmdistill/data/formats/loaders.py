"""Loaders for users' own data on disk: MultiBench's AV-MNIST arrays and a generic folder format.

Every file is read with ``np.load(..., allow_pickle=False)`` (never unpickled) and checked;
an error names the file, the key and the shape at fault.

**avmnist** (``root``: the folder MultiBench's ``datasets/avmnist/get_data.py`` reads)::

    root/image/train_data.npy   (N, 784) or (N, 28, 28), 0..255
    root/image/test_data.npy
    root/audio/train_data.npy   (N, 112, 112) or (N, 12544), 0..255 (spectrograms)
    root/audio/test_data.npy
    root/train_labels.npy       (N,) integers
    root/test_labels.npy

As in MultiBench, values are divided by 255, images become (1, 28, 28) and spectrograms
(1, 112, 112), and validation is the *last* ``val_fraction`` of the training rows
(MultiBench: 5,000 of 60,000). C-ordered ``.npy`` files (any numeric dtype, float16 included)
stay on disk as :class:`~mmdistill.data.formats.ondisk.DiskArray` columns that reshape and scale each
batch's rows as they are read, so the full set (3 GB of float32 audio) trains in bounded memory.

**folder** (``root``: a folder, or one ``.npz`` file with keys ``"<split>/<name>"``)::

    root/train/<modality>.npy   one array per modality, example axis first
    root/train/labels.npy       (N,) integers in [0, num_classes)
    root/val/...                optional; if absent, a stratified seeded ``val_fraction`` of train
    root/test/...
    root/meta.json              optional: {"num_classes": 10, "paired": true, "tokens": ["text"]}

Integer modality arrays are read as floats unless named in ``tokens`` (token ids; an
attention mask may sit beside them as ``<modality>_mask.npy``). C-ordered ``.npy`` modality
files stay on disk: the split holds a :class:`~mmdistill.data.formats.ondisk.DiskArray` per modality
and reads only each batch's rows, so peak memory does not grow with the file size (checks,
fingerprint and mean go through the file in bounded chunks; a carved validation split or an
unpaired pairing is a row-index view). Labels, ``.npz`` contents and Fortran-ordered arrays
are held in memory.

*Unpaired data* (``paired: false``): modalities share the label set but not the examples, as
MNIST images and FSDD recordings do in AV-MNIST. Each modality then has its own labels file
``labels_<modality>.npy`` instead of ``labels.npy``, and examples are paired *within class*:
every example of the first modality (alphabetical, or ``anchor``) is matched with a random
example of the same class from each other modality, each used once before any is reused
(seeded by ``seed`` and the split).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch

from ...batch import RESERVED
from ...errors import DataError
from ...registry import DATASETS
from ...strict_yaml import short
from ..contracts.card import dataset_card
from ..contracts.dataset import DataSplits, Fraction, MultimodalDataset, NumClasses, stratified_split
from .av_digits import pair_within_class
from .ondisk import DiskArray

SPLITS = ("train", "val", "test")


def load_array(path: str | Path, key: str | None = None) -> tuple[np.ndarray, str]:
    """(array, source) of a ``.npy`` file (memory-mapped) or one key of a ``.npz``; never unpickles."""
    path = Path(path)
    source = f"{path}[{key!r}]" if key else str(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if key is None:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as f:
                if key not in f.files:
                    raise DataError(f"{path}: key {key!r} not found; keys present: {', '.join(sorted(f.files))}")
                arr = f[key]
    except ValueError as err:
        if "pickle" in str(err) or "Python objects" in str(err):  # object arrays need pickle, which we refuse
            raise DataError(f"{source}: cannot read without unpickling ({err}); save plain numeric arrays") from err
        raise DataError(f"{source}: not a readable numpy file, or truncated ({err})") from err
    except DataError:
        raise
    except (
        Exception
    ) as err:  # a garbled header fails inside numpy's parser (SyntaxError, TokenError, ...): still the file's fault
        raise DataError(f"{source}: not a readable numpy file ({type(err).__name__}: {err})") from err
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{source}: expected a numeric array, got dtype {arr.dtype} and shape {arr.shape}")
    return arr, source


def check_labels(y: np.ndarray, source: str, n: int | None = None) -> np.ndarray:
    """Labels as int64: 1-D, integer-valued, finite, non-empty, and of length ``n`` when given."""
    if y.ndim != 1:
        raise DataError(f"{source}: labels must be 1-D, got shape {y.shape}")
    if len(y) == 0:
        raise DataError(f"{source}: the split is empty (labels of shape {y.shape})")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{source}: labels must be integers, got {float(y[i]):g} at row {i} (shape {y.shape}, dtype {y.dtype})"
            )
    if n is not None and len(y) != n:
        raise DataError(f"{source}: {len(y)} labels (shape {y.shape}), but the modalities have {n} examples")
    if y.min() < 0:
        raise DataError(f"{source}: labels must be >= 0, got {int(y.min())}")
    return np.array(y, dtype=np.int64)


@overload
def check_modality(
    x: np.ndarray, source: str, name: str, n: int | None, token: bool = False, on_disk: Literal[False] = False
) -> np.ndarray: ...


@overload
def check_modality(
    x: np.ndarray, source: str, name: str, n: int | None, token: bool = False, on_disk: bool = False
) -> np.ndarray | DiskArray: ...


def check_modality(
    x: np.ndarray, source: str, name: str, n: int | None, token: bool = False, on_disk: bool = False
) -> np.ndarray | DiskArray:
    """A modality: non-empty, ``n`` examples, finite; floats as float32, tokens as int64.

    In memory (a copy) by default; with ``on_disk`` a C-ordered ``.npy`` array (memory-mapped by
    :func:`load_array`) stays on disk as a :class:`DiskArray`, scanned for NaN/Inf in bounded chunks.
    """
    if name in RESERVED:
        raise DataError(
            f"{source}: a modality may not be named {name!r}: {', '.join(map(repr, RESERVED))} are reserved "
            "batch keys (the labels file is labels.npy); rename the file"
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{source}: modality {name!r} is empty (shape {x.shape})")
    if n is not None and x.shape[0] != n:
        raise DataError(f"{source}: modality {name!r} has {x.shape[0]} examples (shape {x.shape}), but labels have {n}")
    if token and x.dtype.kind not in "iu":
        raise DataError(f"{source}: token modality {name!r} must hold integers, got dtype {x.dtype}")
    if on_disk and isinstance(x, np.memmap) and x.flags.c_contiguous:
        col = DiskArray.of(x, tokens=token)
        bad, row = col.first_nonfinite()
        if bad:
            raise DataError(
                f"{source}: modality {name!r} (shape {x.shape}) holds {bad} NaN/Inf value(s), first in row {row}"
            )
        col.checked_finite = True
        return col
    if token:
        return np.array(x, dtype=np.int64)
    x = np.array(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(
            f"{source}: modality {name!r} (shape {x.shape}) holds {int(bad.sum())} NaN/Inf value(s), first in row {row}"
        )
    return x


def take_rows(x: np.ndarray | DiskArray, rows: np.ndarray) -> np.ndarray | DiskArray:
    """Rows of an in-memory array (a copy) or of an on-disk one (a view, nothing read)."""
    return x.subset(rows) if isinstance(x, DiskArray) else x[rows]


def check_splits(parts: dict[str, dict], sources: dict[str, dict[str, str]]) -> None:
    """Same modalities and per-example shapes in every split; no class outside train's."""
    train = parts["train"]
    train_classes = set(np.unique(train["labels"]).tolist())
    for split in ("val", "test"):
        for name, x in parts[split].items():
            if name == "labels":
                continue
            if name not in train:
                raise DataError(f"{sources[split][name]}: modality {name!r} is in split {split!r} but not in train")
            if x.shape[1:] != train[name].shape[1:]:
                raise DataError(
                    f"{sources[split][name]}: per-example shape {x.shape[1:]} differs from train's "
                    f"{train[name].shape[1:]}"
                )
        for name in train:
            if name not in parts[split]:
                raise DataError(
                    f"split {split!r}: modality {name!r} missing (expected {name}.npy beside "
                    f"{sources[split]['labels']})"
                )
        extra = sorted(set(np.unique(parts[split]["labels"]).tolist()) - train_classes)
        if extra:
            raise DataError(f"{sources[split]['labels']}: class(es) {extra} appear in split {split!r} but not in train")


def _to_splits(
    parts: dict[str, dict],
    num_classes: int | None,
    name: str,
    description: str,
    sources: dict[str, dict[str, str]] | None = None,
) -> DataSplits:
    declared = num_classes is not None
    k = num_classes if num_classes is not None else int(max(p["labels"].max() for p in parts.values())) + 1
    if not declared and k < 2:
        where = sources["train"]["labels"] if sources else f"{name}/train"
        raise DataError(
            f"{where}: every label is 0: a single class, nothing to learn; a classifier needs at least 2 classes"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise DataError(f"{name}: num_classes must be an integer >= 2, got {short(k)}")
    if not declared:  # K = max label + 1: every class 0..K-1 must then have examples, or one typo makes K huge
        present = np.unique(np.concatenate([p["labels"] for p in parts.values()]))
        if len(present) < k:
            split = max(parts, key=lambda s: int(parts[s]["labels"].max()))
            y = parts[split]["labels"]
            row = int(np.argmax(y))
            missing = sorted(set(range(k)) - set(present.tolist()))
            where = sources[split]["labels"] if sources else f"{name}/{split}"
            raise DataError(
                f"{where}: labels must be 0..K-1 with every class present; label {int(y[row])} (row {row}) makes "
                f"{k} classes, but only {len(present)} distinct labels appear (no example of class(es) "
                f"{short(missing, 60)}); fix the labels, or declare num_classes if some classes have no example"
            )
    for split, p in parts.items():
        if int(p["labels"].max()) >= k:
            where = sources[split]["labels"] if sources else f"{name}/{split}"
            raise DataError(f"{where}: labels must lie in [0, {k}) (num_classes {k}), got max {int(p['labels'].max())}")
    data = {
        s: MultimodalDataset(
            {m: x if isinstance(x, DiskArray) else torch.from_numpy(x) for m, x in p.items() if m != "labels"},
            torch.from_numpy(p["labels"]),
            k,
            f"{name}/{s}",
        )
        for s, p in parts.items()
    }
    splits = DataSplits(data["train"], data["val"], data["test"], description=description)
    splits.check()
    return splits


@DATASETS.register("avmnist")
@dataset_card(
    modalities="image (1, 28, 28), audio (1, 112, 112)",
    rows="60,000 train (last 5,000 validation) / 10,000 test",
    task="classification, 10 digits",
    source="MultiBench's AV-MNIST arrays under root (or mmdistill data build av-mnist)",
)
def avmnist(seed: int = 0, root: str = "", val_fraction: Fraction = 5000 / 60000, normalize: bool = True) -> DataSplits:
    """MultiBench's AV-MNIST arrays under ``root`` (see the module docstring for the layout)."""
    base = Path(root)
    if not root or not base.is_dir():
        raise DataError(f"avmnist: data.params.root {root!r} is not a folder")
    parts: dict[str, dict] = {}
    sources: dict[str, dict[str, str]] = {}
    for split in ("train", "test"):
        y, y_src = load_array(base / f"{split}_labels.npy")
        y = check_labels(np.asarray(y), y_src)
        parts[split], sources[split] = {"labels": y}, {"labels": y_src}
        for m, side in (("image", 28), ("audio", 112)):
            x, src = load_array(base / m / f"{split}_data.npy")
            if x.shape[1:] not in ((side * side,), (side, side)):
                raise DataError(
                    f"{src}: expected MultiBench's AV-MNIST {m} layout (N, {side * side}) or (N, {side}, {side}), "
                    f"got shape {x.shape}"
                )
            scale = 1 / 255.0 if normalize else None
            if isinstance(x, np.memmap) and x.flags.c_contiguous:  # stays on disk: AV-MNIST's audio is 3 GB as float32
                col = check_modality(x, src, m, len(y), on_disk=True)
                assert isinstance(col, DiskArray)  # a C-ordered memory-mapped .npy stays on disk
                parts[split][m] = DiskArray(
                    col.file, tokens=False, checked_finite=True, row_shape=(1, side, side), scale=scale
                )
            else:
                x = check_modality(x, src, m, len(y)).reshape(len(y), 1, side, side)
                parts[split][m] = x * np.float32(scale) if normalize else x
            sources[split][m] = src
    n_val = int(round(val_fraction * len(parts["train"]["labels"])))
    if not 0 < n_val < len(parts["train"]["labels"]):
        raise DataError(f"avmnist: val_fraction {val_fraction} leaves no validation or no training rows")
    full = parts["train"]
    n = len(full["labels"])
    parts["train"] = {k: take_rows(v, np.arange(n - n_val)) for k, v in full.items()}
    parts["val"] = {k: take_rows(v, np.arange(n - n_val, n)) for k, v in full.items()}
    sources["val"] = sources["train"]
    check_splits(parts, sources)
    return _to_splits({s: parts[s] for s in SPLITS}, 10, "avmnist", f"avmnist ({root}):")


def _split_files(root: Path, split: str) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
    """The arrays of one split of the folder format (``None`` when the split is absent)."""
    if root.suffix == ".npz":
        with np.load(root, allow_pickle=False) as f:
            keys = [k for k in f.files if k.startswith(split + "/")]
        items = [(k.split("/", 1)[1], root, k) for k in keys]
    else:
        folder = root / split
        if not folder.is_dir():
            return None
        items = [(p.stem, p, None) for p in sorted(folder.glob("*.npy"))]
    if not items:
        return None
    arrays, sources = {}, {}
    for name, path, key in items:
        arrays[name], sources[name] = load_array(path, key)
    return arrays, sources


def _read_meta(root: Path) -> dict:
    meta_path = (root.parent / (root.stem + ".json")) if root.suffix == ".npz" else root / "meta.json"
    if not meta_path.is_file():
        return {}
    try:
        return json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{meta_path}: not valid JSON ({err})") from err


@DATASETS.register("folder")
@dataset_card(
    modalities="one .npy file per modality",
    rows="rows as in the files",
    task="classification (labels.npy)",
    source="your folder or .npz file (root)",
)
def folder(
    seed: int = 0,
    root: str = "",
    val_fraction: Fraction = 0.2,
    paired: bool | None = None,
    num_classes: NumClasses | None = None,
    tokens: Sequence[str] | None = None,
    anchor: str | None = None,
) -> DataSplits:
    """The generic folder (or ``.npz``) format under ``root``; see the module docstring."""
    base = Path(root)
    if not root or not base.exists():
        raise DataError(f"folder: data.params.root {root!r} does not exist")
    meta = _read_meta(base)
    paired = meta.get("paired", True) if paired is None else paired
    num_classes = num_classes or meta.get("num_classes")
    token_names = set(tokens if tokens is not None else meta.get("tokens", []))
    anchor = anchor or meta.get("anchor")
    parts: dict[str, dict] = {}
    sources: dict[str, dict[str, str]] = {}
    for i, split in enumerate(SPLITS):
        found = _split_files(base, split)
        if found is None:
            if split == "val":
                continue
            raise DataError(f"{base}: split {split!r} missing (expected {base / split}/<modality>.npy and labels.npy)")
        arrays, srcs = found
        if paired:
            parts[split], sources[split] = _paired(arrays, srcs, token_names, base, split)
        else:
            rng = np.random.default_rng([seed, i])
            parts[split], sources[split] = _unpaired(arrays, srcs, token_names, anchor, rng)
    if "val" not in parts:
        if not 0 < val_fraction < 1:
            raise DataError(
                f"{sources['train']['labels']}: no val split on disk, and val_fraction {val_fraction} is not in (0, 1)"
            )
        tr, va = stratified_split(parts["train"]["labels"], [1 - val_fraction, val_fraction], seed)
        if not len(tr) or not len(va):
            raise DataError(
                f"{sources['train']['labels']}: carving val_fraction {val_fraction} of {len(parts['train']['labels'])} "
                f"training rows leaves {len(tr)} for train and {len(va)} for val; add a val split or change "
                "val_fraction"
            )
        full = parts["train"]
        parts["train"], parts["val"] = ({k: take_rows(v, r) for k, v in full.items()} for r in (tr, va))
        sources["val"] = sources["train"]
    check_splits(parts, sources)
    return _to_splits(
        {s: parts[s] for s in SPLITS},
        num_classes,
        "folder",
        f"folder ({root}{'' if paired else ', unpaired'}):",
        sources,
    )


def _paired(arrays: dict, srcs: dict, tokens: set, base: Path, split: str) -> tuple[dict, dict]:
    if "labels" not in arrays:
        where = f"{base}['{split}/labels']" if base.suffix == ".npz" else f"{base / split / 'labels.npy'}"
        raise DataError(f"{where}: labels file missing for split {split!r}")
    y = check_labels(np.asarray(arrays["labels"]), srcs["labels"])
    out: dict[str, np.ndarray | DiskArray] = {"labels": y}
    for name, x in arrays.items():
        if name != "labels":
            token = name in tokens or name.removesuffix("_mask") in tokens
            out[name] = check_modality(x, srcs[name], name, len(y), token, on_disk=True)
    if len(out) == 1:
        raise DataError(f"{srcs['labels']}: split {split!r} has labels but no modality file")
    return out, srcs


def _unpaired(arrays: dict, srcs: dict, tokens: set, anchor: str | None, rng: np.random.Generator) -> tuple[dict, dict]:
    names = sorted(k for k in arrays if not k.startswith("labels"))
    if not names:
        raise DataError(f"no modality file beside {', '.join(srcs.values())}")
    out_src, mods, labels = {}, {}, {}
    for m in names:
        key = f"labels_{m}"
        if key not in arrays:
            raise DataError(f"{srcs[m]}: unpaired data needs a labels file {key}.npy for modality {m!r}")
        labels[m] = check_labels(np.asarray(arrays[key]), srcs[key])
        mods[m] = check_modality(arrays[m], srcs[m], m, len(labels[m]), m in tokens, on_disk=True)
    anchor = anchor or names[0]
    if anchor not in mods:
        raise DataError(f"unpaired data: anchor modality {anchor!r} not among {names}")
    y = labels[anchor]
    out = {"labels": y, anchor: mods[anchor]}
    out_src = {"labels": srcs[f"labels_{anchor}"], **{m: srcs[m] for m in names}}
    for m in names:
        if m != anchor:
            missing = sorted(set(np.unique(y).tolist()) - set(np.unique(labels[m]).tolist()))
            if missing:
                raise DataError(
                    f"{srcs[f'labels_{m}']}: class(es) {missing} of {anchor!r} have no {m!r} example to pair with"
                )
            out[m] = take_rows(mods[m], pair_within_class(y, labels[m], np.arange(len(labels[m])), rng))
    return out, out_src
