"""What the engine reads of a split, and the train / validation / test container.

:class:`Split` is the one interface the engine, the evaluation and the analyses read a split through, whichever way
its examples are stored: column data (:class:`~mmdistill.data.contracts.dataset.MultimodalDataset`, one tensor per
modality) and item data (:class:`~mmdistill.data.contracts.item_dataset.ItemDataset`, a user's map-style dataset of
dict items) are both a ``Split``. What differs between them is a capability the split declares, not a type to switch on:

* ``gathers``: a batch is one gather by an index tensor, read in this process (no DataLoader, no workers); its
  targets are checked once (:meth:`Split.check_targets`) instead of batch by batch;
* ``holds_columns``: whole columns are at hand as ``tensors`` (the analyses read a modality at once);
* :meth:`Split.narrowed`: the split reading only some modalities, where that saves work (column data drop the
  columns a crossmodal student never reads);
* ``random`` and ``cacheable``: whether the teacher's outputs can be cached for it;
* :meth:`Split.check_rows`: read every example once before training (an unreadable item is refused up front).

:class:`Splits` holds the three splits of one run (``DataSplits`` and ``ItemSplits`` are other names for it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ...batch import Batch, ModalitySpec
from ...errors import DataError
from ...tasks import DEFAULT_TASK


class Split(torch.utils.data.Dataset):
    """One split as the engine reads it: ``len``, a batch of rows (``__getitems__``: modality tensors, ``"label"``
    and ``"index"``), ``specs()``, ``labels``, ``fingerprint()``, ``feature_mean()``, ``subset()``, and ``name``,
    ``task`` (a task name), ``num_classes`` and ``ignore_index``; the capabilities below say how it is best read."""

    name: str
    task: str
    num_classes: int | None
    ignore_index: int | None = None
    labels: Tensor  # every target of the split
    random: bool = False  # items draw random numbers (augmentation): an example's input changes between reads
    gathers: bool = False  # a batch is one gather by an index tensor in this process; targets checked once
    holds_columns: bool = False  # whole columns at hand as ``tensors`` (name -> tensor of every row)

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitems__(self, rows: Sequence[int] | Tensor) -> Batch:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Batch:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def specs(self) -> list[ModalitySpec]:
        raise NotImplementedError

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.specs()]

    @property
    def tensors(self) -> Mapping[str, Tensor]:
        """name -> the whole column of every row, for a split that ``holds_columns``; others hold none."""
        raise DataError(f"{self.name}: its examples are read one at a time (item data); it holds no columns")

    def fingerprint(self) -> str:
        raise NotImplementedError

    def feature_mean(self) -> Mapping[str, Tensor]:
        raise NotImplementedError

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray, name: str | None = None) -> Split:
        raise NotImplementedError

    @property
    def cacheable(self) -> bool:
        """Whether the teacher's outputs on this split can be cached (keyed by ``fingerprint()``)."""
        return not self.random

    def for_run(self) -> Split:
        """The split a run reads, on which the run's task settles what the split leaves open
        (``Task.complete_split``); here: itself (it leaves nothing open)."""
        return self

    def narrowed(self, modalities: Sequence[str]) -> Split:
        """The split reading only ``modalities`` where that saves work; here: itself."""
        return self

    def check_targets(self, task=None) -> None:
        """Check every target at once, in ``task``'s form; here: nothing (the targets are checked as read)."""

    def check_rows(self) -> None:
        """Read every example once, so an unreadable one is refused before training; here: nothing (checked when
        the split was built)."""


@dataclass
class Splits:
    """Train / validation / test splits of one dataset, with a one-line description."""

    train: Split
    val: Split
    test: Split
    description: str = ""
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes  # type: ignore[return-value]  # settled by the run's task before training

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)

    def describe(self) -> str:
        mods = ", ".join(f"{s.name}{list(s.shape)}" for s in self.train.specs())
        sizes = f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}"
        head = f"{self.description} " if self.description else ""
        return f"{head}{sizes}; {self.num_classes} classes; modalities: {mods}"

    def check(self) -> None:
        """Splits that all hold columns: the same task, modalities and per-example shapes, and no class in val/test
        only (classification). Otherwise the modality names of each split's first item (an item's shape may vary
        from item to item, and the labels are not read)."""
        if not all(self.split(s).holds_columns for s in ("train", "val", "test")):
            names = [s.name for s in self.train.specs()]
            for part in ("val", "test"):
                other = [s.name for s in self.split(part).specs()]
                if other != names:
                    raise DataError(f"split {part!r}: modalities {other} differ from train's {names}")
            return
        train_specs = self.train.specs()
        if any(self.split(s).task != self.train.task for s in ("val", "test")):
            raise DataError(
                f"splits: train holds task {self.train.task!r} targets, val {self.val.task!r}, test "
                f"{self.test.task!r}; every split must hold the same task's"
            )
        train_classes = set(self.train.labels.unique().tolist())
        for name in ("val", "test"):
            split = self.split(name)
            if split.specs() != train_specs:
                raise DataError(f"split {name!r}: modalities/shapes {split.specs()} differ from train's {train_specs}")
            if self.train.task != DEFAULT_TASK:
                continue
            extra = set(split.labels.unique().tolist()) - train_classes
            if extra:
                raise DataError(f"split {name!r}: class(es) {sorted(extra)} appear in {name} but not in train")

    def check_classes(self) -> None:
        """Degenerate labels, found before training: fewer than 2 training examples or classes, or a class count
        (``num_classes``) far above the labels that occur (one mistyped label 100000 makes 100001 classes)."""
        if self.train.task != DEFAULT_TASK:
            return
        y, name, k = self.train.labels, self.train.name, self.num_classes
        if len(y) < 2:
            raise DataError(f"{name}: {len(y)} training example; training needs at least 2 (and 2 classes)")
        present = torch.unique(y)
        if len(present) < 2:
            raise DataError(
                f"{name}: every training example has label {int(present[0])}: a single class, nothing to learn; "
                "a classifier needs examples of at least 2 classes"
            )
        if k > 2 * len(present):
            row = int(torch.argmax(y))
            raise DataError(
                f"{name}: {k} classes (num_classes), but only {len(present)} distinct labels occur in train "
                f"(largest label {int(y[row])}, row {row}); labels must be 0..K-1: is a label mistyped?"
            )
