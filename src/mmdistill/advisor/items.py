"""The advisor's feature rows from a torch Dataset of dict items: one pass over a bounded, seeded subset in batches.

A ``data.dataset`` factory's training split, a run folder's data, or a Dataset given in Python. What stands for
each modality (printed with the advice as ``probes read: ...``):

* rows of one float shape of at most :data:`PROJECTED` (64) values: the values, flattened;
* of at most :data:`FLAT_MAX` (4,096) values: flattened, projected on their top 64 principal components (fitted on
  :data:`PCA_FIT_ROWS` rows);
* wider rows (images, spectrograms): a seeded random Gaussian projection to 64 values, ``x R / sqrt(d)`` with R
  (d, 64) standard normal (it keeps distances between rows up to a few percent, Johnson-Lindenstrauss), made batch
  by batch, so a wide modality never sits in memory whole; a run folder's advice uses the run's no-KD student's
  logits instead when it has one (what a student trained on those inputs alone reads from them);
* token ids and rows of different lengths: only a trained model's logits can stand for them (a run's no-KD
  student); without one they are refused, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import ConfigError, DataError

ITEM_ROWS = 1000  # item data: training rows read for the advice (its probes read at most 600, its pilot 200)
FLAT_MAX = 4096  # the widest item modality (values a row) the probes read flattened
PROJECTED = 64  # the width of a projection (principal components, or random) of wider rows
PCA_FIT_ROWS = 500  # the rows the principal components are fitted on


@dataclass
class ItemRows:
    """What one pass over the items read: labels, each modality's float rows, each model's logits."""

    labels: Tensor
    rows: dict[str, Tensor | None]  # (n, values); None: token ids or rows of different lengths
    projected: set[str] = field(default_factory=set)  # wider than FLAT_MAX: held as a random projection
    logits: dict[str, Tensor] = field(default_factory=dict)


def bounded_rows(split, max_rows: int | None, seed: int):
    """A seeded random subset of at most ``max_rows`` rows of ``split`` (all of them when it has fewer)."""
    if max_rows is None or len(split) <= max_rows:
        return split
    rows = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:max_rows]
    return split.subset(rows.sort().values)


def read_items(split, names: list[str], seed: int = 0, models: dict[str, Callable] | None = None) -> ItemRows:
    """One pass over ``split`` in batches of 256: the labels, modality ``m``'s rows for each m in ``names`` (a
    random projection when wider than :data:`FLAT_MAX`), and each model's logits (``models``: name -> callable on a
    batch)."""
    from ..engine.batches import eval_batches

    models = models or {}
    labels: list[Tensor] = []
    logits: dict[str, list[Tensor]] = {key: [] for key in models}
    rows: dict[str, list[Tensor | None]] = {m: [] for m in names}
    widths: dict[str, set[int]] = {m: set() for m in names}
    projections: dict[str, Tensor] = {}
    with torch.no_grad():
        for batch in eval_batches(split, 256):
            labels.append(batch["label"])
            for key, model in models.items():
                logits[key].append(model(batch).float())
            for m in names:
                row = _flat_rows(batch, m)
                widths[m].add(-1 if row is None else row.shape[1])  # -1: token ids or padded rows
                if row is not None and row.shape[1] > FLAT_MAX:  # wide: only its random projection is kept
                    if m not in projections:
                        projections[m] = torch.randn(row.shape[1], PROJECTED, generator=_generator(seed, m))
                    row = row @ projections[m] / row.shape[1] ** 0.5
                rows[m].append(row)
    fixed = {m for m in names if len(widths[m]) == 1 and -1 not in widths[m]}
    return ItemRows(
        torch.cat(labels),
        {m: torch.cat([r for r in rows[m] if r is not None]) if m in fixed else None for m in names},
        set(projections),
        {key: torch.cat(v) for key, v in logits.items()},
    )


def modality_features(items: ItemRows, m: str, seed: int = 0, where: str = "advise") -> tuple[Tensor, str]:
    """Modality ``m``'s standardised feature rows and what they are (see the module docstring)."""
    x = items.rows[m]
    if x is None:
        raise ConfigError(
            f"{where}: modality {m!r} holds token ids or rows of different lengths; the advisor reads fixed-length "
            "features: train the teacher and the student with their no-KD baseline and use advise --run DIR (the "
            "no-KD student's logits stand for them), or give fixed-length features from Python "
            "(mmdistill.advisor.predict.advise)"
        )
    if m in items.projected:
        return standardised(x), f"{m} as a random projection to {PROJECTED} values"
    if x.shape[1] <= PROJECTED:
        return standardised(x), f"{m} flattened"
    from ..mfh.pairs import _pca_basis

    fit = torch.randperm(len(x), generator=_generator(seed, m))[:PCA_FIT_ROWS]
    mu, basis = _pca_basis(x[fit], PROJECTED)
    return standardised((x - mu) @ basis), f"{m} flattened, projected on {PROJECTED} principal components"


def check_item_modalities(split, names: list[str], where: str) -> None:
    """Refuse a modality the items do not hold, naming the ones they hold."""
    held = [s.name for s in split.specs()]
    for m in names:
        if m not in held:
            raise DataError(f"{where}: the items hold no modality {m!r}; they hold {', '.join(held)}")


def _flat_rows(batch: dict, m: str) -> Tensor | None:
    """Modality ``m`` of a batch as (rows, values) floats; None for token ids or padded rows (they carry a mask)."""
    from ..batch import MASK_SUFFIX

    x = batch[m]
    if not x.is_floating_point() or f"{m}{MASK_SUFFIX}" in batch:
        return None
    return x.reshape(len(x), -1).float()


def _generator(seed: int, m: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + sum(m.encode()))


def standardised(x: Tensor) -> Tensor:
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
