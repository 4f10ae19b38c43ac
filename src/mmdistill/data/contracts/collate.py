"""Items of any map-style dataset -> one batch: stack dict items, pad token sequences, check everything.

An item is ``dict[str, Tensor]``: one entry per modality (float tensors; token ids int64, with an optional
``<m>_mask``) and the target under ``"label"``. :func:`collate_items` stacks the items of a batch and adds
``"index"`` (each example's position in its split). Token sequences of different lengths are right-padded
with 0 to the longest in the batch and their mask (1 = real token) padded with 0, or built when the item has
none. Every error names the item's index and the key at fault. Float inputs are checked finite here, in the
worker that loads the batch, so the training step need not scan them again. The targets are checked by the task
(:meth:`mmdistill.tasks.Task.check_target`, the check column data pass too): once on the stacked batch, or item by
item when the items' targets differ in shape or dtype (to name the item at fault).

Cost: a batch of dict items that agree (the same keys, one dtype and shape per key, tensors or Python int targets)
is stacked directly, at about the cost of torch's ``default_collate``; the item-by-item checks run, and their
messages are built, only when it does not (:func:`_checked_batch`). The NaN/Inf scan is one sum per modality
(the sum of values holding a NaN or an infinity is not finite); only a batch that fails it is scanned item by item.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ...batch import INDEX, LABEL, MASK_SUFFIX, Batch
from ...errors import DataError, TargetError
from ...tasks import Task, get_task


def _as_tensor(value, index: int, key: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float, np.generic)) or (isinstance(value, np.ndarray) and value.dtype != object):
        return torch.as_tensor(value)
    raise DataError(f"item {index}, key {key!r}: expected a tensor, got {type(value).__name__}")


def _pad_tokens(values: list[Tensor], masks: Sequence[Tensor | None]) -> tuple[Tensor, Tensor]:
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
    task: Task | str | Mapping | None = None,
    num_classes: int | None = None,
    check_values: bool = True,
) -> Batch:
    """Stack ``items`` (dicts) into a batch with ``"index"`` = ``indices``.

    ``keys``: the modalities every item must hold (default: the first item's). Item shapes must agree
    for stacking, except 1-D integer token sequences, which are padded with their masks. ``task``: whose targets
    the items hold (:func:`mmdistill.tasks.get_task`; None: classification), checked against ``num_classes``.
    ``check_values=False`` leaves out what only the values can fail (the NaN/Inf scan of float inputs, the task's
    checks of the targets) for items whose values were checked before: items that draw no random numbers, read
    again (:class:`mmdistill.engine.batches.ItemBatches` says which). The structure is checked either way.
    """
    if keys is None and isinstance(items[0], Mapping):
        keys = [k for k in items[0] if k not in (LABEL, INDEX) and not k.endswith(MASK_SUFFIX)]
    batch = _stacked_batch(items, keys) if keys is not None else None
    if batch is None:
        batch, check_values = _checked_batch(items, indices, keys), True
    index = torch.as_tensor(list(indices), dtype=torch.long)
    if check_values:
        _scan_finite(batch, keys or (), indices)
    labels = batch.pop(LABEL, None)
    if labels is None:  # the items disagree: targets checked (and stacked) item by item
        item_labels = [_as_label(_as_tensor(item[LABEL], i, LABEL)) for item, i in zip(items, indices)]
        labels = _checked_targets(get_task(task), item_labels, indices, batch, num_classes)
    elif check_values:
        checks = get_task(task)
        checks.check_target(labels, num_classes, index)
        checks.check_target_fits(labels, batch, index)
    batch[LABEL], batch[INDEX] = labels, index
    return batch


def _scan_finite(batch: Batch, keys: Sequence[str], indices: Sequence[int]) -> None:
    """A DataError naming the first item whose float input holds NaN or Inf. One sum per modality (a sum over values
    holding a NaN or an infinity is not finite); only a batch whose sum is not finite is scanned item by item."""
    for k in keys:
        x = batch[k]
        if x.is_floating_point() and not math.isfinite(x.sum().item()):
            finite = torch.isfinite(x.reshape(len(x), -1)).all(1)
            if not bool(finite.all()):
                raise DataError(f"item {indices[int((~finite).nonzero()[0, 0])]}, key {k!r}: NaN/Inf values")


def _stacked_batch(items: Sequence, keys: Sequence[str]) -> Batch | None:
    """The inputs and stacked targets of items that agree (dicts with every key, one dtype and shape per key, tensor
    or Python int targets), without a check per item; None when they do not (:func:`_checked_batch` says why)."""
    if not all(type(item) is dict for item in items):
        return None
    batch: Batch = {}
    try:
        for k in keys:
            values = [item[k] for item in items]
            masked = (k + MASK_SUFFIX) in items[0]
            masks = [item[k + MASK_SUFFIX] for item in items] if masked else None
            if len({v.dtype for v in values}) != 1 or (masks and len({m.dtype for m in masks}) != 1):
                return None
            first = values[0]
            if not first.is_floating_point() and first.dim() == 1 and any(len(v) != len(first) for v in values):
                batch[k], batch[k + MASK_SUFFIX] = _pad_tokens(values, masks or [None] * len(values))
                continue
            x = torch.stack(values)
            batch[k] = x.float() if x.is_floating_point() else x.long()
            if masks:
                batch[k + MASK_SUFFIX] = torch.stack(masks).long()
        targets = [item[LABEL] for item in items]
        if all(type(y) is int for y in targets):
            batch[LABEL] = torch.tensor(targets, dtype=torch.long)
        elif len({y.dtype for y in targets}) == 1:  # and one shape, or stack raises
            batch[LABEL] = _as_label(torch.stack(targets))
        else:
            return None
    except (KeyError, AttributeError, TypeError, RuntimeError):  # a missing key, a value that is no tensor, shapes
        return None
    return batch


def _checked_batch(items: Sequence, indices: Sequence[int], keys: Sequence[str] | None) -> Batch:
    """The inputs of ``items`` checked item by item: each problem raised as a DataError naming the item and key."""
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
        masks = [_as_tensor(item[k + MASK_SUFFIX], i, k + MASK_SUFFIX) for item, i in zip(items, indices) if has_mask]
        tokens = not values[0].is_floating_point()
        if tokens and values[0].dim() == 1 and any(len(v) != len(values[0]) for v in values):
            batch[k], batch[k + MASK_SUFFIX] = _pad_tokens(values, masks or [None] * len(values))
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
        batch[k] = x.float() if x.is_floating_point() else x.long()
        if has_mask:
            batch[k + MASK_SUFFIX] = torch.stack(masks).long()
    return batch


def _as_label(y: Tensor) -> Tensor:
    """Integer targets as int64, floating ones as float32 (the forms the tasks' checks and losses read)."""
    if y.is_floating_point():
        return y.float()
    return y if y.dtype == torch.bool else y.long()


def _checked_targets(task: Task, labels: list[Tensor], indices: Sequence[int], inputs: Batch, num_classes) -> Tensor:
    """The stacked targets, checked by ``task``: on the whole batch when the items agree in shape and dtype (errors
    name the example), else item by item, so the item at fault is named."""
    first = labels[0]
    if all(y.shape == first.shape and y.dtype == first.dtype for y in labels):
        y, index = torch.stack(labels), torch.as_tensor(list(indices), dtype=torch.long)
        task.check_target(y, num_classes, index)
        task.check_target_fits(y, inputs, index)
        return y
    for row, (y, i) in enumerate(zip(labels, indices)):
        try:
            task.check_item_target(y, num_classes, i)
            task.check_target_fits(y[None], {k: v[row : row + 1] for k, v in inputs.items()}, torch.tensor([i]))
        except TargetError as err:
            why = str(err).removeprefix(f"{LABEL!r}: ")
            raise TargetError(f"item {i}, key {LABEL!r} (the item's target as a batch of one): {why}") from None
    row = next(r for r, y in enumerate(labels) if y.shape != first.shape or y.dtype != first.dtype)
    y, kind = labels[row], lambda t: f"{str(t.dtype).removeprefix('torch.')} of shape {tuple(t.shape)}"
    raise DataError(f"item {indices[row]}, key {LABEL!r}: {kind(y)} differs from item {indices[0]}'s {kind(first)}")
