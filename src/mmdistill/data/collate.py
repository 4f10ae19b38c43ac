"""Items of any map-style dataset -> one batch: stack dict items, pad token sequences, check everything.

An item is ``dict[str, Tensor]``: one entry per modality (float tensors; token ids int64, with an optional
``<m>_mask``) and the target under ``"label"``. :func:`collate_items` stacks the items of a batch and adds
``"index"`` (each example's position in its split). Token sequences of different lengths are right-padded
with 0 to the longest in the batch and their mask (1 = real token) padded with 0, or built when the item has
none. Every error names the item's index and the key at fault. Float inputs are checked finite here, in the
worker that loads the batch, so the training step need not scan them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..batch import INDEX, LABEL, MASK_SUFFIX, Batch
from ..errors import DataError

TASKS = ("classification", "multilabel", "regression", "segmentation")


def _as_tensor(value, index: int, key: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float, np.generic)) or (isinstance(value, np.ndarray) and value.dtype != object):
        return torch.as_tensor(value)
    raise DataError(f"item {index}, key {key!r}: expected a tensor, got {type(value).__name__}")


def check_ignore_index(ignore_index: int | None, num_classes: int | None, where: str) -> None:
    """Segmentation's ``ignore_index`` must not be a real class (it would silently drop that class's pixels)."""
    if ignore_index is not None and num_classes is not None and 0 <= ignore_index < num_classes:
        raise DataError(
            f"{where}: ignore_index {ignore_index} collides with real class {ignore_index} (classes are "
            f"0..{num_classes - 1}); use a value outside them, e.g. 255 or -100"
        )


def check_target(
    y: Tensor, task: str, index: int, num_classes: int | None = None, ignore_index: int | None = None
) -> None:
    """The target's form for ``task`` (see the item contract); a DataError names the item and ``"label"``."""
    where = f"item {index}, key {LABEL!r}"
    got = f"dtype {str(y.dtype).removeprefix('torch.')}, shape {tuple(y.shape)}"
    integer = not y.is_floating_point() and y.dtype != torch.bool
    if task == "classification":
        if y.dim() != 0 or not integer:
            hint = "; a multi-hot vector is a multilabel target (task: multilabel)" if y.dim() == 1 else ""
            raise DataError(f"{where}: task 'classification' expects a class index (an int64 scalar), got {got}{hint}")
        if num_classes is not None and not 0 <= int(y) < num_classes:
            raise DataError(f"{where}: class {int(y)} outside [0, {num_classes})")
    elif task == "multilabel":
        if y.dim() != 1 or not y.is_floating_point():
            raise DataError(
                f"{where}: task 'multilabel' expects a float multi-hot vector (C,), got {got}"
                + ("; a class index is a classification target" if y.dim() == 0 else "")
            )
        if num_classes is not None and len(y) != num_classes:
            raise DataError(f"{where}: multi-hot vector of {len(y)} labels, expected {num_classes}")
    elif task == "regression":
        if not y.is_floating_point() or y.dim() > 1:
            raise DataError(f"{where}: task 'regression' expects a float scalar (or a float vector), got {got}")
    elif task == "segmentation":
        if y.dim() != 2 or not integer:
            raise DataError(f"{where}: task 'segmentation' expects an int64 label map (H, W), got {got}")
        if num_classes is not None:
            bad = ((y < 0) | (y >= num_classes)) & (y != (ignore_index if ignore_index is not None else -1))
            if bool(bad.any()):
                raise DataError(
                    f"{where}: label value {int(y[bad][0])} is neither a class in [0, {num_classes}) "
                    f"nor ignore_index {ignore_index}"
                )
    else:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def _pad_tokens(values: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D token sequences with 0 to the longest; masks padded with 0 (built as ones where absent)."""
    longest = max(len(v) for v in values)
    ids = torch.zeros(len(values), longest, dtype=torch.long)
    mask = torch.zeros(len(values), longest, dtype=torch.long)
    for row, (v, m) in enumerate(zip(values, masks)):
        ids[row, : len(v)] = v
        mask[row, : len(v)] = 1 if m is None else m
    return ids, mask


def collate_items(
    items: Sequence,
    indices: Sequence[int],
    keys: Sequence[str] | None = None,
    task: str = "classification",
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> Batch:
    """Stack ``items`` (dicts) into a batch with ``"index"`` = ``indices``.

    ``keys``: the modalities every item must hold (default: the first item's). Item shapes must agree
    for stacking, except 1-D integer token sequences, which are padded with their masks.
    """
    for item, i in zip(items, indices):
        if not isinstance(item, Mapping):
            raise DataError(
                f"item {i}: expected a dict of modality name -> tensor plus {LABEL!r}, got {type(item).__name__}"
            )
    first, first_i = items[0], indices[0]
    if keys is None:
        keys = [k for k in first if k not in (LABEL, INDEX) and not k.endswith(MASK_SUFFIX)]
    for item, i in zip(items, indices):
        for k in (*keys, LABEL):
            if k not in item:
                what = "the target" if k == LABEL else "modality"
                present = ", ".join(map(repr, item)) or "none"
                raise DataError(f"item {i}: missing {what} key {k!r} (keys present: {present})")
    batch: Batch = {}
    for k in keys:
        values = [_as_tensor(item[k], i, k) for item, i in zip(items, indices)]
        has_mask = (k + MASK_SUFFIX) in first
        masks = [
            _as_tensor(item[k + MASK_SUFFIX], i, k + MASK_SUFFIX) if has_mask else None
            for item, i in zip(items, indices)
        ]
        tokens = not values[0].is_floating_point()
        if tokens and values[0].dim() == 1 and any(len(v) != len(values[0]) for v in values):
            batch[k], batch[k + MASK_SUFFIX] = _pad_tokens(values, masks)
            continue
        for v, i in zip(values, indices):
            if v.shape != values[0].shape:
                raise DataError(
                    f"item {i}, key {k!r}: shape {tuple(v.shape)} differs from item {first_i}'s "
                    f"{tuple(values[0].shape)}; stacking needs equal shapes (resize or crop them)"
                )
            if v.is_floating_point() != values[0].is_floating_point():
                raise DataError(f"item {i}, key {k!r}: dtype {v.dtype} differs from item {first_i}'s {values[0].dtype}")
        x = torch.stack(values)
        if x.is_floating_point():
            x = x.float()
            finite = torch.isfinite(x.reshape(len(x), -1)).all(1)
            if not bool(finite.all()):
                raise DataError(f"item {indices[int((~finite).nonzero()[0, 0])]}, key {k!r}: NaN/Inf values")
        else:
            x = x.long()
        batch[k] = x
        if has_mask:
            batch[k + MASK_SUFFIX] = torch.stack(masks).long()
    labels = [_as_tensor(item[LABEL], i, LABEL) for item, i in zip(items, indices)]
    for item_no, (y, i) in enumerate(zip(labels, indices)):
        check_target(y, task, i, num_classes, ignore_index)
        if task == "segmentation":  # a label map is per pixel of the item's images (C, H, W)
            for k in keys:
                x = batch[k][item_no]
                if x.is_floating_point() and x.dim() == 3 and tuple(x.shape[-2:]) != tuple(y.shape):
                    raise DataError(
                        f"item {i}, key {LABEL!r}: label map {tuple(y.shape)} differs from image {k!r}'s "
                        f"size {tuple(x.shape[-2:])}; a segmentation label needs one class per pixel"
                    )
        if y.shape != labels[0].shape:
            raise DataError(
                f"item {i}, key {LABEL!r}: shape {tuple(y.shape)} differs from item {first_i}'s "
                f"{tuple(labels[0].shape)}"
            )
    y = torch.stack(labels)
    batch[LABEL] = y.float() if y.is_floating_point() else y.long()
    batch[INDEX] = torch.as_tensor(list(indices), dtype=torch.long)
    return batch
