"""Item datasets whose items may omit a modality: partly paired data read item by item.

A dataset declares the modalities its items may lack, ``partly_paired = ("a",)``. Each item then carries the
presence column of each (``a_present``: 1 when the item holds ``a``, 0 when it does not, :mod:`mmdistill.batch`),
and an item without ``a`` gets a zero filler shaped as the other items' ``a`` (its attention mask too, all 0), so
that batches stack. The masker puts its null value in those rows before a model reads them, and the distillation
terms leave them out (:func:`mmdistill.masking.check_pairing`). Column data give the presence column themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ...batch import MASK_SUFFIX, PRESENT_SUFFIX
from ...errors import DataError

Fillers = dict[str, dict[str, Tensor]]  # modality -> {key: zero filler} (the modality, and its attention mask)


def declared_optional(value, name: str) -> tuple[str, ...]:
    """``dataset.partly_paired``: a tuple of modality names (empty when the dataset declares none)."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(m, str) for m in value):
        raise DataError(f"{name}: dataset.partly_paired must be a tuple of modality names, got {value!r:.80}")
    return tuple(value)


def zero_fillers(read: Callable[[int], Mapping], size: int, optional: Sequence[str], name: str) -> Fillers:
    """Per modality in ``optional``, zeros shaped as the first item (``read(i)``, i < ``size``) that holds it."""
    fillers: Fillers = {}
    for i in range(size):
        item = read(i)
        for m in optional:
            if m not in fillers and m in item:
                keys = [k for k in (m, m + MASK_SUFFIX) if k in item]
                fillers[m] = {k: torch.zeros_like(torch.as_tensor(item[k])) for k in keys}
        if len(fillers) == len(optional):
            return fillers
    lacking = next(m for m in optional if m not in fillers)
    raise DataError(
        f"{name}: dataset.partly_paired: no item holds modality {lacking!r}; give items that hold it, or leave it "
        "out of the models"
    )


def with_presence(item: Mapping, fillers: Fillers) -> dict:
    """``item`` with the presence column of each partly paired modality, and a zero filler where it is absent."""
    out = dict(item)
    for m, filler in fillers.items():
        held = m in item
        if not held:
            out.update({k: v.clone() for k, v in filler.items()})
        out[m + PRESENT_SUFFIX] = torch.tensor(1.0 if held else 0.0)
    return out
