"""AV-Digits: an audio-visual analogue of AV-MNIST (Vielzeuf et al., 2018) built from real parts.

* ``image``: scikit-learn's 1,797 8x8 handwritten digits (UCI Optical Recognition of
  Handwritten Digits), degraded as AV-MNIST degrades MNIST: the top principal components
  that carry a fraction ``image_energy_removed`` of the training images' variance are
  projected out,

      x' = x - (x - mu) V_k V_k^T,   k = min{ k : sum_{i<=k} s_i^2 / sum_i s_i^2 >= image_energy_removed },

  with ``mu`` and ``V`` (right singular vectors, singular values ``s``) from the *training*
  split, so the image alone is not enough.
* ``audio``: log-mel spectrograms (n_mels, frames) of the digit words spoken by espeak-ng
  speakers, with noise, from the bundled features file (see
  :mod:`mmdistill.data.builders.av_digits_build`). Images and utterances are paired by label, within
  class and seeded, as AV-MNIST pairs MNIST with FSDD. Test images are paired only with
  utterances of *held-out* speakers; train and validation images with the others.

Both modalities are standardised with training statistics (image: per-pixel mean and one
scalar std; audio: per-mel-band mean and std over examples and frames).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from ...errors import DataError
from ...registry import DATASETS
from ..contracts.card import dataset_card
from ..contracts.dataset import DataSplits, MultimodalDataset, SplitFractions, require_nonempty, stratified_split

BUNDLED = Path(__file__).parents[1] / "bundled" / "av_digits.npz"


def load_features(path: str | Path = BUNDLED) -> dict[str, np.ndarray]:
    """The arrays of an AV-Digits features file (never unpickles), with ``meta`` parsed from JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"AV-Digits features file {path} not found; rebuild it with `mmdistill data build av-digits`")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for key in ("audio", "audio_label", "audio_heldout", "image", "image_label", "meta"):
        if key not in arrays:
            raise DataError(f"{path}: key {key!r} missing; keys present: {', '.join(sorted(arrays))}")
    arrays["meta"] = json.loads(str(arrays["meta"]))
    return arrays


_PROJECTIONS: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # digest of the inputs -> (mu, V_k, k), this process
_PROJECTIONS_KEPT = 8


def _digest(images: np.ndarray, train_rows: np.ndarray, fraction: float) -> str:
    """sha256 over the images (dtype, shape, values), the training rows and the fraction: the key of the SVD kept."""
    h = hashlib.sha256(f"{images.dtype}|{images.shape}|{fraction!r}|".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(train_rows, dtype=np.int64).tobytes())
    return h.hexdigest()


def remove_top_energy(images: np.ndarray, train_rows: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """Project out the leading principal components holding ``fraction`` of the training variance -> (images, k).

    The SVD is computed once per process for the same images, rows and fraction (the dataset is built again for
    every seed and study of a run); later calls reuse its mean and components."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"image_energy_removed must lie in [0, 1), got {fraction}")
    x = images.astype(np.float64)
    if fraction == 0.0:
        return x, 0
    key = _digest(images, train_rows, fraction)
    if key not in _PROJECTIONS:
        mu = x[train_rows].mean(0)
        _, s, vt = np.linalg.svd(x[train_rows] - mu, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), fraction) + 1)
        if len(_PROJECTIONS) >= _PROJECTIONS_KEPT:
            _PROJECTIONS.pop(next(iter(_PROJECTIONS)))
        v = vt[:k].copy()
        mu.setflags(write=False)
        v.setflags(write=False)
        _PROJECTIONS[key] = (mu, v, k)
    mu, v, k = _PROJECTIONS[key]
    return x - (x - mu) @ v.T @ v, k


def pair_within_class(
    labels: np.ndarray, pool_labels: np.ndarray, pool_rows: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each label, a row of ``pool_rows`` with the same label: each pool row used once before any repeats."""
    out = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        want = np.flatnonzero(labels == c)
        cand = pool_rows[pool_labels[pool_rows] == c]
        if len(cand) == 0:
            raise DataError(f"pairing: no example of class {int(c)} in the pool to pair with")
        reps = -(-len(want) // len(cand))
        order = np.concatenate([rng.permutation(cand) for _ in range(reps)])
        out[want] = order[: len(want)]
    return out


@DATASETS.register("av-digits")
@dataset_card(
    modalities="image (1, 8, 8), audio (32 mel bands, 33 frames)",
    rows="1,797 images, split 60/20/20",
    task="classification, 10 digits",
    source="the bundled file: scikit-learn digits + espeak-ng spoken digits (mmdistill data build av-digits)",
)
def av_digits(
    seed: int = 0,
    image_energy_removed: Annotated[float, Field(strict=True, ge=0, lt=1, allow_inf_nan=False)] = 0.75,
    flat_image: bool = False,
    fractions: SplitFractions = (0.6, 0.2, 0.2),
    path: str | None = None,
) -> DataSplits:
    """AV-Digits splits: ``image`` (1, 8, 8) (or (64,) with ``flat_image``) and ``audio`` (n_mels, frames).

    The image split (stratified) and the image-utterance pairing are fixed by ``seed``.
    """
    f = load_features(path or BUNDLED)
    meta = f["meta"]
    y = f["image_label"].astype(np.int64)
    tr, va, te = stratified_split(y, list(fractions), seed)
    require_nonempty([tr, va, te], "data.params.fractions", f"fractions {list(fractions)} of {len(y)} images")
    images, k = remove_top_energy(f["image"], tr, image_energy_removed)

    rng = np.random.default_rng(seed)
    heldout = f["audio_heldout"].astype(bool)
    seen_rows, unseen_rows = np.flatnonzero(~heldout), np.flatnonzero(heldout)
    audio_label = f["audio_label"].astype(np.int64)
    a_tr = pair_within_class(y[tr], audio_label, seen_rows, rng)
    a_va = pair_within_class(y[va], audio_label, np.setdiff1d(seen_rows, a_tr), rng)
    a_te = pair_within_class(y[te], audio_label, unseen_rows, rng)

    img_mean, img_std = images[tr].mean(0), images[tr].std() + 1e-8
    audio = f["audio"].astype(np.float32)
    a_mean = audio[a_tr].mean((0, 2), keepdims=True)
    a_std = audio[a_tr].std((0, 2), keepdims=True) + 1e-6
    shape = (64,) if flat_image else (1, 8, 8)

    def split(rows: np.ndarray, arows: np.ndarray, name: str) -> MultimodalDataset:
        img = ((images[rows] - img_mean) / img_std).astype(np.float32).reshape(len(rows), *shape)
        aud = ((audio[arows] - a_mean[0]) / a_std[0]).astype(np.float32)
        return MultimodalDataset(
            {"image": torch.from_numpy(img), "audio": torch.from_numpy(aud)},
            torch.from_numpy(y[rows]),
            10,
            f"av-digits/{name}",
        )

    splits = DataSplits(
        split(tr, a_tr, "train"),
        split(va, a_va, "val"),
        split(te, a_te, "test"),
        description=f"av-digits (sklearn 8x8 digits, top {k} PCs removed [{image_energy_removed:.0%} energy]; "
        f"espeak-ng digit words, {len(meta['speakers'])} speakers, test speakers unseen):",
        info={"image_pcs_removed": k, "audio_rows": {"train": a_tr, "val": a_va, "test": a_te}, "meta": meta},
    )
    splits.check()
    return splits
