"""Paired (teacher modality, student modality) arrays of a registered dataset, for the crossmodal tools.

Algorithm 1 (:mod:`.salience`), feature removal (:mod:`.removal`) and the advisor (:mod:`.advisor`)
work on plain tensors: ``x_a`` (N, d_a) for the teacher, ``x_b`` (N, d_b) for the student, labels
``y``. :func:`load_pairs` flattens each modality and standardises it with the training split's
mean and std, so that tiny MLPs trained by full-batch SGD behave on every dataset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import ConfigError

# PCA width of the features the MFH removal study and the advisor measure on
DEFAULT_PCA = {"av-digits": 64, "avmnist": 64}
DEFAULT_MODALITIES = {"venn": ("a", "b"), "mfeat": ("pix", "zer"), "av-digits": ("image", "audio")}


@dataclass
class Pair:
    """One split: teacher inputs ``xa``, student inputs ``xb``, labels ``y``."""

    xa: Tensor
    xb: Tensor
    y: Tensor


@dataclass
class PairedSplits:
    dataset: str
    teacher: str
    student: str
    num_classes: int
    train: Pair
    val: Pair
    test: Pair
    shared: Tensor | None = None  # ground-truth shared channels of x_a where known (unmixed Venn data)
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> Pair:
        return getattr(self, name)


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).float()


_BASES: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}  # (digest of x, k) -> (mean, basis), this process
_BASES_KEPT = 8


def _digest(x: Tensor) -> str:
    """sha256 over the dtype, shape and values of ``x``: equal data, equal digest (the key of :data:`_BASES`)."""
    h = hashlib.sha256(f"{x.dtype}|{tuple(x.shape)}|".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _pca_basis(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Mean and the top-k principal directions (d, k) of ``x``, signs fixed (deterministic SVD).

    Computed once per process for the same values of ``x`` (the studies load a dataset again and again: one
    SVD of AV-Digits' 1,056 audio values costs about 0.5 s); later calls get copies of the kept result."""
    key = (_digest(x), k)
    if key not in _BASES:
        mu = x.mean(0)
        _, _, vh = torch.linalg.svd((x - mu).double(), full_matrices=False)
        v = vh[:k].t()
        v = v * torch.sign(v[v.abs().argmax(0), torch.arange(v.shape[1])])
        if len(_BASES) >= _BASES_KEPT:
            _BASES.pop(next(iter(_BASES)))
        _BASES[key] = (mu, v.float())
    mu, basis = _BASES[key]
    return mu.clone(), basis.clone()


def load_pairs(
    dataset: str,
    params: dict | None = None,
    teacher: str | None = None,
    student: str | None = None,
    seed: int = 0,
    standardize: bool = True,
    pca: int | None = None,
) -> PairedSplits:
    """The splits of ``dataset`` as flattened (and standardised) teacher / student arrays.

    ``teacher`` / ``student`` name modalities (mfeat views; default: :data:`DEFAULT_MODALITIES`).
    For mfeat only the two views are loaded. A modality the dataset lacks is a ConfigError that
    lists the available ones. With ``pca``, a modality wider than ``pca`` is first projected on the
    top ``pca`` principal components of its training split (AV-Digits audio has 1,056 values).
    """
    from ..data import build_splits
    from ..data.contracts.split import Split

    default = DEFAULT_MODALITIES.get(dataset, (None, None))
    teacher, student = teacher or default[0], student or default[1]
    if teacher is None or student is None:
        raise ConfigError(f"{dataset}: name the teacher and student modalities (no defaults for this dataset)")
    if teacher == student:
        raise ConfigError(f"teacher and student read the same modality {teacher!r}; crossmodal KD needs two")
    params = dict(params or {})
    if dataset == "mfeat" and "views" not in params:
        params["views"] = [teacher, student]
    splits = build_splits(dataset, params, seed=seed)
    raw: dict[str, Split] = {}
    for part in ("train", "val", "test"):
        split = splits.split(part)
        if not split.holds_columns:
            raise ConfigError(
                f"{dataset}: its examples are read one at a time from files (item data); the paired teacher/student "
                "arrays of the MFH analyses need a dataset held as columns (e.g. mfeat, av-digits, venn, avmnist)"
            )
        raw[part] = split
    names = splits.train.modality_names
    for role, m in (("teacher", teacher), ("student", student)):
        if m not in names:
            raise ConfigError(f"{role} modality {m!r} not in {dataset}; available: {', '.join(names)}")
    if pca is not None and pca < 1:
        raise ConfigError(f"pca: must be a positive integer, got {pca}")
    bases = {}
    for m in (teacher, student):
        x = _flat(raw["train"].tensors[m])
        if pca is not None and x.shape[1] > pca:
            bases[m] = _pca_basis(x, pca)

    def features(ds, m) -> Tensor:
        x = _flat(ds.tensors[m])
        return (x - bases[m][0]) @ bases[m][1] if m in bases else x

    stats = {}
    for m in (teacher, student):
        x = features(raw["train"], m)
        stats[m] = (x.mean(0), x.std(0).clamp_min(1e-6)) if standardize else (0.0, 1.0)

    def pair(ds) -> Pair:
        xa, xb = (features(ds, m).sub(stats[m][0]).div(stats[m][1]) for m in (teacher, student))
        return Pair(xa, xb, ds.labels.clone())

    shared = None
    spec = splits.info.get("spec")
    if dataset == "venn" and spec is not None and not spec.mix and (teacher, student) == ("a", "b"):
        shared = torch.arange(spec.a_offset, spec.a_offset + spec.s0)
    return PairedSplits(
        dataset,
        teacher,
        student,
        splits.num_classes,
        pair(raw["train"]),
        pair(raw["val"]),
        pair(raw["test"]),
        shared,
        {"description": splits.description, **{k: v for k, v in splits.info.items() if k != "spec"}},
    )
