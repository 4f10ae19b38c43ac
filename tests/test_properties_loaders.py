"""Property: a folder dataset of any shape, dtype or corruption loads, or raises DataError naming a file (Hypothesis).

Each example writes a random folder dataset (1-3 modalities, random per-example shapes and
dtypes, optional val split, optional meta.json) and applies up to two random corruptions
(truncated or garbled files, a deleted file, NaN/Inf, wrong row counts, bad labels, an object
array, invalid JSON). Loading must either give splits whose batches, fingerprint and mean
can be read, or raise :class:`DataError` whose message names a path inside the dataset.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdistill.data import build_splits
from mmdistill.data.contracts.dataset import DataSplits
from mmdistill.errors import ConfigError, DataError

DTYPES = ["float32", "float64", "float16", "int8", "int32", "uint8", "bool", "complex64", "<U3"]
CORRUPTIONS = [
    "truncate",
    "garble_header",
    "garble_data",
    "delete",
    "nan",
    "inf",
    "rows",
    "labels_float",
    "labels_negative",
    "labels_2d",
    "labels_big",
    "object",
    "text",
    "empty_file",
    "bad_json",
    "fortran",
]


@st.composite
def folder_specs(draw):
    k = draw(st.integers(1, 3))
    mods = {
        f"m{i}": (draw(st.lists(st.integers(1, 3), max_size=2).map(tuple)), draw(st.sampled_from(DTYPES[:7])))
        for i in range(k)
    }
    splits = ["train", "test"] + (["val"] if draw(st.booleans()) else [])
    sizes = {s: draw(st.integers(2, 24)) for s in splits}
    corruptions = draw(
        st.lists(
            st.tuples(
                st.sampled_from(CORRUPTIONS),
                st.sampled_from(splits),
                st.sampled_from([*mods, "labels"]),
                st.integers(0, 10**6),
            ),
            max_size=2,
        )
    )
    meta = draw(st.sampled_from([None, {}, {"num_classes": 3}, {"num_classes": 2}, {"tokens": ["m0"]}]))
    return mods, sizes, corruptions, meta, draw(st.floats(0.1, 0.6))


def _write(root: Path, mods, sizes, meta, rng: np.random.Generator) -> None:
    for split, n in sizes.items():
        (root / split).mkdir(parents=True)
        np.save(root / split / "labels.npy", np.arange(n) % 3)
        for name, (shape, dtype) in mods.items():
            x = rng.normal(size=(n, *shape)) * 3
            np.save(root / split / f"{name}.npy", x.astype(dtype))
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta))


def _corrupt(root: Path, kind: str, split: str, name: str, r: int) -> Path:
    """Apply one corruption; return the file it touched."""
    path = root / split / f"{name}.npy"
    if kind == "bad_json":
        path = root / "meta.json"
        path.write_text("{num_classes: 3")
        return path
    if not path.exists():
        return path
    data = path.read_bytes()
    if not data:
        return path
    if kind == "truncate":
        path.write_bytes(data[: r % max(len(data), 1)])
    elif kind == "garble_header":
        i = r % min(len(data), 128)
        path.write_bytes(data[:i] + bytes([(data[i] + 1 + r % 255) % 256]) + data[i + 1 :])
    elif kind == "garble_data":
        path.write_bytes(data[:-8] + bytes(255 - b for b in data[-8:]))
    elif kind == "delete":
        path.unlink()
    elif kind == "text":
        path.write_text("not a numpy file\n")
    elif kind == "empty_file":
        path.write_bytes(b"")
    else:
        try:
            x = np.load(path)
        except Exception:  # noqa: BLE001  already corrupted by an earlier one (a garbled header: SyntaxError, ...)
            return path
        if kind in ("nan", "inf") and x.size and x.dtype.kind == "f":
            x.flat[r % x.size] = np.nan if kind == "nan" else -np.inf
        elif kind == "rows":
            x = np.concatenate([x, x[:1]]) if r % 2 else x[1:]
        elif kind == "labels_float":
            x = x.astype(np.float64) + 0.5
        elif kind == "labels_negative":
            x = x.astype(np.int64) - 1
        elif kind == "labels_2d":
            x = x.reshape(len(x), -1)[:, :1].repeat(2, 1)
        elif kind == "labels_big":
            x = x.astype(np.int64) + 5
        elif kind == "object":
            x = np.array([object()] * max(len(x), 1), dtype=object)
        elif kind == "fortran":
            x = np.asfortranarray(x.reshape(len(x), -1).repeat(2, 1))
        np.save(path, x, allow_pickle=kind == "object")
    return path


def _use(splits: DataSplits) -> None:
    """Everything training reads from a dataset, so a bad value cannot hide until later."""
    for part in (splits.train, splits.val, splits.test):
        batch = part.__getitems__(list(range(len(part)))[::-1])
        assert batch["label"].max() < splits.num_classes and batch["label"].min() >= 0
        for spec in part.specs():
            x = batch[spec.name]
            assert x.shape == (len(part), *spec.shape)
            assert not x.is_floating_point() or bool(x.isfinite().all())
        part.fingerprint()
        part.feature_mean()
    splits.describe()


@settings(max_examples=int(__import__("os").environ.get("PROP_EXAMPLES", 120)), deadline=None)
@given(spec=folder_specs(), seed=st.integers(0, 3))
def test_folder_datasets_load_or_raise_data_error_naming_a_file(spec, seed):
    mods, sizes, corruptions, meta, val_fraction = spec
    root = Path(tempfile.mkdtemp(prefix="mmd-prop-"))
    try:
        _write(root, mods, sizes, meta, np.random.default_rng(seed))
        touched = [_corrupt(root, *c) for c in corruptions]
        try:
            splits = build_splits("folder", {"root": str(root), "val_fraction": val_fraction}, seed=seed)
        except DataError as err:
            msg = str(err)
            assert str(root) in msg, f"{corruptions} -> {msg!r} names no file of the dataset"
            clean_otherwise = meta in (None, {}) and len(touched) == 1 and touched[0].exists()
            if clean_otherwise and corruptions[0][0] in ("truncate", "text", "empty_file", "object", "bad_json"):
                assert str(touched[0]) in msg, f"{corruptions} -> {msg!r}"
        except ConfigError as err:  # e.g. meta's num_classes below the labels' range is a setting, not a file
            raise AssertionError(f"{corruptions} -> ConfigError {err}") from err
        else:
            _use(splits)
    finally:
        shutil.rmtree(root, ignore_errors=True)
