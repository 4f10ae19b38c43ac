"""The batch contract: ``dict[str, Tensor]`` of modality name -> tensor, plus ``"label"`` and ``"index"``.

Modality tensors have the example axis first. A token-sequence modality ``m`` may carry its
attention mask under ``f"{m}{MASK_SUFFIX}"`` (1 = real token, 0 = padding or removed).
Partly paired data carry, for a modality ``m`` that some rows lack, ``f"{m}{PRESENT_SUFFIX}"``: one value per
example, 1 where the row holds ``m``, 0 where it does not (its ``m`` then holds a filler: the masker's null value
where a model reads it). The distillation terms use only the rows where the teacher's modalities are all present
(:func:`present_rows`).
``"index"`` is a stable per-example id (its row in the dataset split), used by the teacher
cache to look up precomputed outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import BatchError

LABEL = "label"
INDEX = "index"
MASK_SUFFIX = "_mask"
PRESENT_SUFFIX = "_present"
RESERVED = (LABEL, INDEX)

Batch = dict[str, Tensor]

_finite_checked: ContextVar[bool] = ContextVar("finite_checked", default=False)


@contextmanager
def inputs_checked_finite():
    """Within this block, :func:`validate_inputs` skips its NaN/Inf scan.

    The trainer uses it for batches of a :class:`MultimodalDataset`, whose values were
    checked once when it was built; shapes and dtypes are still checked on every call.
    """
    token = _finite_checked.set(True)
    try:
        yield
    finally:
        _finite_checked.reset(token)


@dataclass(frozen=True)
class ModalitySpec:
    """What a model expects of one modality: per-example shape and whether it is a token sequence."""

    name: str
    shape: tuple[int, ...]
    tokens: bool = False  # integer token ids (with an optional attention mask) instead of floats


def is_modality_key(key: str) -> bool:
    """Whether a batch key holds a modality (not the label, the index, an attention mask or a presence column)."""
    return key not in RESERVED and not key.endswith(MASK_SUFFIX) and not key.endswith(PRESENT_SUFFIX)


def modality_names(batch: Mapping[str, Tensor]) -> list[str]:
    """The modalities present in a batch (everything but label, index, attention masks and presence columns)."""
    return [k for k in batch if is_modality_key(k)]


def presence_keys(batch: Mapping[str, Tensor]) -> dict[str, str]:
    """modality -> its presence column, for the modalities some rows of this batch may lack."""
    return {k.removesuffix(PRESENT_SUFFIX): k for k in batch if k.endswith(PRESENT_SUFFIX)}


def present_rows(batch: Mapping[str, Tensor], modalities: Sequence[str] | None = None) -> Tensor | None:
    """(B,) bool: the rows that hold every one of ``modalities`` (None: every modality with a presence column);
    None when the batch has no presence column for them (every row holds them: fully paired data)."""
    keys = presence_keys(batch)
    wanted = [keys[m] for m in (keys if modalities is None else modalities) if m in keys]
    if not wanted:
        return None
    return torch.stack([batch[k].reshape(-1) != 0 for k in wanted]).all(0)


def rows_where(rows: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    """``tensors`` restricted to ``rows`` on their first axis (all of them when ``rows`` is None)."""
    return tensors if rows is None else tuple(t[rows] for t in tensors)


def batch_size(batch: Mapping[str, Tensor]) -> int:
    if LABEL in batch:
        return int(batch[LABEL].shape[0])
    return int(next(iter(batch.values())).shape[0])


def validate_inputs(batch: Mapping[str, Tensor], specs: Sequence[ModalitySpec], who: str = "model") -> None:
    """Check that ``batch`` holds every modality in ``specs`` with the right shape, dtype and finite values.

    Raises :class:`BatchError` naming the modality and what was expected.
    """
    if not isinstance(batch, Mapping):
        raise BatchError(f"{who}: a batch must be a dict of modality name -> tensor, got {type(batch).__name__}")
    n = None
    for spec in specs:
        if spec.name not in batch:
            present = ", ".join(modality_names(batch)) or "none"
            raise BatchError(
                f"{who} reads modality {spec.name!r}, but the batch has no such key (modalities present: {present})"
            )
        x = batch[spec.name]
        if not isinstance(x, Tensor):
            raise BatchError(f"modality {spec.name!r}: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != tuple(spec.shape):
            raise BatchError(
                f"modality {spec.name!r}: expected shape (batch, {', '.join(map(str, spec.shape))}), got "
                f"{tuple(x.shape)}"
            )
        if spec.tokens:
            if x.dtype not in (torch.int32, torch.int64):
                raise BatchError(f"modality {spec.name!r}: expected integer token ids, got dtype {x.dtype}")
        else:
            if not x.is_floating_point():
                raise BatchError(f"modality {spec.name!r}: expected a floating-point tensor, got dtype {x.dtype}")
            if not _finite_checked.get() and not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).sum())
                raise BatchError(f"modality {spec.name!r}: {bad} non-finite value(s) (NaN or Inf) in the input")
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise BatchError(f"modality {spec.name!r}: {x.shape[0]} examples, but other modalities have {n}")
