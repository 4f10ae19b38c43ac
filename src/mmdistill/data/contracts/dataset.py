"""Multimodal datasets (in memory or left on disk), their splits and fingerprints.

A :class:`MultimodalDataset` holds one column per modality (example axis first) and a label
vector. A column is a tensor, or a :class:`~mmdistill.data.formats.ondisk.DiskArray` (rows of a
``.npy`` file read on demand, as the ``folder`` loader gives) so that data larger than
memory can be trained on. Indexing with a list of row numbers returns a whole batch dict at
once (``__getitems__``), so a DataLoader does not collate example by example; for an on-disk
column only the batch's rows are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, cast

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from ...batch import INDEX, LABEL, MASK_SUFFIX, PRESENT_SUFFIX, RESERVED, Batch, ModalitySpec, is_modality_key
from ...errors import ConfigError, DataError
from ...schema import SEED_MAX, checked_int
from ...tasks import DEFAULT_TASK, Task, get_task, validate_labels
from ..formats.ondisk import DiskArray
from .split import Split, Splits

Column = Tensor | DiskArray

# Types of dataset-builder parameters (``data.params``), checked by ``build_splits`` before the builder runs
Fraction = Annotated[float, Field(strict=True, gt=0, lt=1, allow_inf_nan=False)]  # a share of the examples, in (0, 1)
SplitFractions = tuple[Fraction, Fraction, Fraction]  # train, val, test shares (they must sum to 1)
Seed = Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]
NumClasses = Annotated[int, Field(strict=True, ge=2, le=1_000_000)]


class MaterializedColumns(Mapping):
    """``dataset.tensors`` of a dataset with on-disk columns: each access reads the whole column.

    Keeps ``dataset.tensors[m]`` working (analysis code, tests) while training never calls it;
    it costs the column's full size in memory, once per access.
    """

    def __init__(self, columns: Mapping[str, Column]) -> None:
        self._columns = columns

    def __getitem__(self, key: str) -> Tensor:
        col = self._columns[key]
        return col.materialize() if isinstance(col, DiskArray) else col

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


class MultimodalDataset(Split):
    """Aligned modality columns and labels of one split (column data: a
    :class:`~mmdistill.data.contracts.split.Split` whose
    batch is one gather by an index tensor, with whole columns at hand).

    ``modalities``: name -> tensor of shape (N, ...), or a :class:`DiskArray` of N rows;
    ``labels``: (N,) integers in [0, num_classes) for ``task`` classification (the default); for the other tasks
    (:mod:`mmdistill.tasks`, a name or a Task) the task's target form: float multi-hot (N, C) for multilabel, float
    (N,) or (N, D) for regression (``num_classes`` = D), an int64 label map (N, H, W) for segmentation (classes
    or the task's ``ignore_index``), checked by ``task.check_target``. Attention masks of token modalities travel
    as extra columns named ``f"{m}_mask"``; partly paired data mark the rows that hold a modality in a column
    ``f"{m}_present"`` (N,) of 0/1 (:mod:`mmdistill.batch`). Floating columns are checked for NaN/Inf once,
    here (on-disk ones in chunks, unless the loader already did), so the trainer need not.
    """

    gathers = True
    holds_columns = True
    num_classes: int  # always known for column data

    def __init__(
        self,
        modalities: Mapping[str, Column],
        labels: Tensor,
        num_classes: int,
        name: str = "dataset",
        task: Task | str | None = None,
    ) -> None:
        self.name = name
        self._task = get_task(task)
        self.task = self._task.name
        self.ignore_index = getattr(self._task, "ignore_index", None)  # segmentation's unlabelled pixels
        self.labels = torch.as_tensor(labels)
        if self.task != DEFAULT_TASK:
            self._init_columns(modalities, len(self.labels))
            self.labels = self.labels.float() if self.labels.is_floating_point() else self.labels.long()
            try:
                self._task.check_target(self.labels, num_classes)
            except DataError as err:
                raise DataError(f"{name}: {err}") from None
            self.num_classes = int(num_classes)
            return
        if self.labels.dim() != 1:
            raise DataError(f"{name}: labels must be 1-D, got shape {tuple(self.labels.shape)}")
        if self.labels.is_floating_point() and not torch.equal(self.labels, self.labels.round()):
            raise DataError(f"{name}: labels must be integers, got non-integer values")
        self.labels = self.labels.long()
        self._init_columns(modalities, len(self.labels))
        if int(self.labels.min()) < 0 or int(self.labels.max()) >= num_classes:
            raise DataError(
                f"{name}: labels must lie in [0, {num_classes}), got min {int(self.labels.min())}, "
                f"max {int(self.labels.max())}"
            )
        self.num_classes = int(num_classes)

    def _init_columns(self, modalities: Mapping[str, Column], n: int) -> None:
        """Check and keep the modality columns (N rows each, float ones finite)."""
        name = self.name
        if n == 0:
            raise DataError(f"{name}: the split is empty (0 examples)")
        if not modalities:
            raise DataError(f"{name}: no modality given")
        self._columns: dict[str, Column] = {}
        for key, x in modalities.items():
            if key in RESERVED:
                raise DataError(
                    f"{name}: a modality may not be named {key!r}: {', '.join(map(repr, RESERVED))} are reserved "
                    "batch keys (the labels and the row index); rename it"
                )
            if not isinstance(x, DiskArray):
                x = torch.as_tensor(x)
            if x.shape[0] != n:
                raise DataError(f"{name}: modality {key!r} has {x.shape[0]} examples but labels have {n}")
            if isinstance(x, DiskArray):
                if not x.checked_finite:
                    bad, row = x.first_nonfinite()
                    if bad:
                        raise DataError(f"{name}: modality {key!r} holds {bad} NaN/Inf value(s), first in row {row}")
                    x.checked_finite = True
            elif x.is_floating_point():
                x = x.float()
                if not torch.isfinite(x).all():
                    raise DataError(
                        f"{name}: modality {key!r} holds {int((~torch.isfinite(x)).sum())} NaN/Inf value(s)"
                    )
            self._columns[key] = x

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def tensors(self) -> Mapping[str, Tensor]:
        """name -> tensor of every column; the dict itself when all are in memory (assignable)."""
        if any(isinstance(c, DiskArray) for c in self._columns.values()):
            return MaterializedColumns(self._columns)
        return cast(dict[str, Tensor], self._columns)  # all in memory (checked above)

    @property
    def on_disk(self) -> bool:
        """Whether any column is read from a file on demand."""
        return any(isinstance(c, DiskArray) for c in self._columns.values())

    @property
    def modality_names(self) -> list[str]:
        return [k for k in self._columns if is_modality_key(k)]

    def specs(self) -> list[ModalitySpec]:
        """One :class:`ModalitySpec` per modality, read off the stored columns."""
        return [
            ModalitySpec(k, tuple(self._columns[k].shape[1:]), tokens=not self._columns[k].is_floating_point())
            for k in self.modality_names
        ]

    def __getitems__(self, indices: Sequence[int] | Tensor | np.ndarray) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {k: v.take(idx.numpy()) if isinstance(v, DiskArray) else v[idx] for k, v in self._columns.items()}
        batch[LABEL] = self.labels[idx]
        batch[INDEX] = idx
        return batch

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray, name: str | None = None) -> MultimodalDataset:
        """Rows ``indices`` as a new dataset (in-memory columns copied, on-disk ones as row views)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        cols = {k: v.subset(idx.numpy()) if isinstance(v, DiskArray) else v[idx] for k, v in self._columns.items()}
        return MultimodalDataset(cols, self.labels[idx], self.num_classes, name or self.name, self._task)

    def select(self, modalities: Sequence[str]) -> MultimodalDataset:
        """The same examples with only ``modalities`` (and their attention masks)."""
        missing = [m for m in modalities if m not in self._columns]
        if missing:
            raise DataError(f"{self.name}: no modality {missing[0]!r}; available: {', '.join(self.modality_names)}")
        keep = {  # every presence column stays: which rows the teacher sees is read off the student's batches too
            k: v
            for k, v in self._columns.items()
            if k in modalities or k.removesuffix(MASK_SUFFIX) in modalities or k.endswith(PRESENT_SUFFIX)
        }
        return MultimodalDataset(keep, self.labels, self.num_classes, self.name, self._task)

    def narrowed(self, modalities: Sequence[str]) -> MultimodalDataset:
        """Only ``modalities`` (:meth:`select`), or itself when they are all it holds: a batch then gathers no
        column that is not read."""
        return self if list(modalities) == self.modality_names else self.select(modalities)

    def check_targets(self, task: Task | None = None) -> None:
        """Every label at once, in ``task``'s form (None: the dataset's own task)."""
        validate_labels({LABEL: self.labels}, self.num_classes, task if task is not None else self._task)

    def fingerprint(self) -> str:
        """sha256 over modality names, dtypes, shapes and bytes, and the labels: equal data, equal fingerprint.

        An on-disk column is hashed chunk by chunk; its digest equals that of the same values in memory.
        """
        h = hashlib.sha256()
        for key in sorted(self._columns):
            col = self._columns[key]
            h.update(f"{key}|{col.dtype}|{tuple(col.shape)}|".encode())
            if isinstance(col, DiskArray):
                for _, x in col.chunks():
                    h.update(x.numpy())  # type: ignore[arg-type]  # the buffer itself (numpy's stubs: PEP 688 from 3.12)
            else:
                h.update(col.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()

    def feature_mean(self) -> dict[str, Tensor]:
        """Per-modality mean example (for the ``mean`` masking strategy), over the rows that hold the modality; on-disk
        columns summed in float64 chunks."""
        means = {}
        for k in self.modality_names:
            col = self._columns[k]
            if not col.is_floating_point():
                continue
            if isinstance(col, DiskArray):
                total = sum(x.numpy().sum(0, dtype=np.float64) for _, x in col.chunks())
                means[k] = torch.from_numpy(np.asarray(total / len(col))).float()
            else:
                present = self._columns.get(k + PRESENT_SUFFIX)  # partly paired: the rows that hold k, not fillers
                rows = col if not isinstance(present, Tensor) or not bool(present.any()) else col[present != 0]
                means[k] = rows.float().mean(0)
        return means


DataSplits = Splits  # the name this container had when it held column data only (public API)


def stratified_split(labels: np.ndarray | Tensor, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split row indices into parts of the given fractions, class by class, with a seeded shuffle.

    Deterministic for a given (labels, fractions, seed). Every part gets at least one example
    of each class that has enough examples.
    """
    labels = np.asarray(labels)
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must sum to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rng.shuffle(rows)
        bounds = np.round(np.cumsum(fractions) * len(rows)).astype(int)
        start = 0
        for p, end in enumerate(bounds):
            parts[p].extend(rows[start:end].tolist())
            start = end
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def require_nonempty(parts: Sequence[np.ndarray], key: str, what: str) -> None:
    """A ConfigError naming the parameter ``key`` when a train/val/test part of a split came out empty."""
    empty = [name for name, rows in zip(("train", "val", "test"), parts) if len(rows) == 0]
    if empty:
        raise ConfigError(
            f"{key}: {what} leaves the {empty[0]} split empty (sizes "
            f"{', '.join(str(len(r)) for r in parts)}); use more examples or larger shares"
        )


def splits_from_arrays(
    modalities: Mapping[str, Tensor | np.ndarray],
    labels: Tensor | np.ndarray,
    num_classes: int,
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    name: str = "dataset",
    description: str = "",
    split: Sequence[str] | np.ndarray | None = None,
    task: Task | str | None = None,
) -> DataSplits:
    """Train/val/test splits of one aligned pool of examples held in memory.

    Without ``split``: stratified, seeded splits of the given ``fractions``. With ``split`` (one of
    ``"train"``, ``"val"``, ``"test"`` per example) the user's own split is kept as is; if it has
    no ``"val"`` examples, a validation part is carved (stratified, seeded) from ``"train"`` with
    ``fractions[1] / (fractions[0] + fractions[1])`` of it, and ``"test"`` is never touched. ``task``: see
    :class:`MultimodalDataset`; outside classification the splits are seeded but not stratified.
    """
    columns, labels = _checked_arrays(modalities, labels, num_classes, seed, fractions)
    full = MultimodalDataset(columns, labels, num_classes, name, task)
    strata = full.labels.numpy() if full.task == DEFAULT_TASK else np.zeros(len(full), dtype=np.int64)
    if split is None:
        tr, va, te = stratified_split(strata, fractions, seed)
    else:
        tr, va, te = _own_split(np.asarray(split), strata, fractions, seed)
    parts = [full.subset(rows, f"{name}/{part}") for rows, part in zip((tr, va, te), ("train", "val", "test"))]
    train, val, test = parts
    splits = DataSplits(train, val, test, description)
    splits.check()
    return splits


def _as_tensor(value, key: str) -> Tensor:
    """A numeric array as a tensor; an object, string or ragged array is a DataError naming ``key``."""
    try:
        out = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{key}: expected a numeric array, got {type(value).__name__} ({str(err)[:200]})") from None
    if out.dtype == torch.bool or out.is_complex():
        raise DataError(f"{key}: expected a numeric array, got dtype {out.dtype}")
    return out


def _checked_arrays(modalities, labels, num_classes, seed, fractions) -> tuple[dict[str, Tensor], Tensor]:
    """splits_from_arrays' arguments checked, each error naming the argument: numeric arrays, an integer class count
    and seed, three finite non-negative fractions summing to 1."""
    if not isinstance(modalities, Mapping) or not modalities:
        raise ConfigError(
            f"modalities: expected a dict of modality name -> array, got {type(modalities).__name__}"
            + (" (empty)" if isinstance(modalities, Mapping) else "")
        )
    for k in modalities:
        if not isinstance(k, str) or not k:
            raise ConfigError(f"modalities: a modality name must be a non-empty string, got {k!r:.80}")
    columns = {k: _as_tensor(v, f"modalities[{k!r}]") for k, v in modalities.items()}
    labels = _as_tensor(labels, "labels")
    checked_int(num_classes, "num_classes", ge=1, le=1 << 24)
    checked_int(seed, "seed", ge=0, le=SEED_MAX)
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) or len(fractions) != 3:
        raise ConfigError(f"fractions: expected three shares (train, val, test), got {fractions!r:.80}")
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise ConfigError(f"fractions: each share must be a number in [0, 1], got {fractions!r:.80}")
    return columns, labels


def _own_split(split: np.ndarray, labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Row indices of the user's train/val/test parts (val carved from train when absent)."""
    if split.shape != (len(labels),):
        raise DataError(
            f"splits_from_arrays: split has shape {split.shape}; expected one entry per example ({len(labels)},)"
        )
    unknown = sorted(set(split.astype(str).tolist()) - {"train", "val", "test"})
    if unknown:
        raise DataError(f"splits_from_arrays: split has values {unknown[:5]}; expected only 'train', 'val', 'test'")
    split = split.astype(str)
    tr, va, te = (np.flatnonzero(split == part) for part in ("train", "val", "test"))
    if len(tr) == 0 or len(te) == 0:
        raise DataError(
            f"splits_from_arrays: split has {len(tr)} 'train' and {len(te)} 'test' examples; both are needed"
        )
    if len(va) == 0:
        val_share = fractions[1] / (fractions[0] + fractions[1])
        keep, carved = stratified_split(labels[tr], (1 - val_share, val_share), seed)
        tr, va = tr[keep], tr[carved]
    return [tr, va, te]
