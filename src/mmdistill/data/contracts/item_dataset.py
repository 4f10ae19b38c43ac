"""Any map-style ``torch.utils.data.Dataset`` as a split mmdistill can train on.

:class:`ItemDataset` wraps a user's dataset whose ``ds[i]`` is ``dict[str, Tensor]`` (one entry per modality
and the target under ``"label"``) and gives the engine what it asks of a split: ``specs()``, ``num_classes``,
``task``, a batch of given rows (``__getitems__``, read in this process), the labels, a training mean for the
``mean`` masking strategy (computed on first use only) and ``random`` (True when items draw random numbers: the
dataset says so, or a transform is set), which decides between the teacher cache and the online teacher (or, with
``cache.augmentations: K``, a cache of K seeded views per example: :meth:`ItemDataset.read_views`).

Random numbers are reproducible: the RNGs (torch, numpy, random) are seeded before each batch's items are read, with
:func:`batch_seed` ``(seed, epoch, the batch's first index)``, so augmentation depends on neither the worker that
reads a batch nor on a resume (once per batch, not per item: seeding costs about 35 us, as much as decoding a small
PNG takes a tenth of). Reads in the training process keep its global RNG streams as they were (dropout etc.). Under
``cache.augmentations`` each item is seeded on its own, by :func:`view_seed` ``(seed, view, index)``, so that view k of
example i is the same input in the cache's build and in every epoch that reads it.
"""

from __future__ import annotations

import copy
import random as _random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, Subset

from ...batch import LABEL, PRESENT_SUFFIX, Batch, ModalitySpec, is_modality_key
from ...errors import ConfigError, DataError
from ...schema import checked_int
from ...tasks import DEFAULT_TASK, TASKS
from ...usercode import USER_ERRORS, call, failed, import_path, kept
from .collate import collate_items
from .dataset import MultimodalDataset
from .partly_paired import declared_optional, with_presence, zero_fillers
from .split import Split, Splits
from .transforms import transform_settings

Transform = Callable[[dict], dict]
OUTSIDE_TRAINING = 0  # the "epoch" of batch seeds for reads outside the training epochs (checks, prepare, evaluation)
_MASK64 = (1 << 64) - 1


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the reads of one batch: splitmix64 over (seed, epoch, its first index)."""
    z = 0
    for part in (seed, epoch, index):
        z = (z + part + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z ^= z >> 31
    return z >> 1


VIEW = "view"  # batch key: which cached augmentation (cache.augmentations) of each example a training batch holds
_VIEW_STREAM, _CHOICE_STREAM = 1 << 62, 1 << 61  # "epochs" of view seeds and view choices: never a training epoch


def view_seed(seed: int, view: int, index: int) -> int:
    """The seed of the reads of view ``view`` of example ``index`` (``cache.augmentations``): one item seeded on its
    own, so the teacher cache's build and every epoch that picks the view draw the same augmentation."""
    return batch_seed(seed, _VIEW_STREAM + view, index)


def chosen_view(seed: int, epoch: int, index: int, views: int) -> int:
    """Which of the ``views`` cached augmentations of example ``index`` training epoch ``epoch`` reads."""
    return batch_seed(seed, _CHOICE_STREAM + epoch, index) % views


def seed_rngs(s: int) -> None:
    """Seed torch's (CPU), numpy's and Python's global RNGs for one batch's reads.

    ``torch.default_generator`` only: ``torch.manual_seed`` would also queue a lazy CUDA seeding that records a
    stack trace each call (about 0.8 ms, more than decoding a small PNG).
    """
    torch.default_generator.manual_seed(s)
    np.random.seed(s % (1 << 32))
    _random.seed(s)


@contextmanager
def preserved_rngs():
    """Restore torch's CPU, numpy's and Python's RNG states on exit (item reads in the training process)."""
    state = torch.get_rng_state(), np.random.get_state(), _random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        _random.setstate(state[2])


class _LazyMeans(Mapping):
    """``feature_mean()`` of an :class:`ItemDataset`: computed (one pass over the split) when first read."""

    def __init__(self, dataset: ItemDataset) -> None:
        self._dataset = dataset
        self._means: dict[str, Tensor] | None = None
        self._keys = [s.name for s in dataset.specs() if not s.tokens]

    def __contains__(self, key) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._keys:
            raise KeyError(key)
        if self._means is None:
            ds, sums, rows = self._dataset, dict[str, Tensor](), dict[str, float]()
            for start in range(0, len(ds), 256):
                batch = ds.__getitems__(range(start, min(start + 256, len(ds))))
                for k in self._keys:
                    sums[k] = sums.get(k, 0) + batch[k].double().sum(0)  # partly paired: the fillers are zeros
                    held = batch.get(k + PRESENT_SUFFIX)  # ... and the mean is over the items that hold k
                    rows[k] = rows.get(k, 0.0) + (len(batch[k]) if held is None else float(held.sum()))
            self._means = {k: (v / max(rows[k], 1.0)).float() for k, v in sums.items()}
        return self._means[key]


def _declared(dataset, attribute: str, name: str):
    """What the user's dataset declares as ``attribute`` (None when it does not); a property that raises is named."""
    return call(getattr, name, f"dataset.{attribute}", dataset, attribute, None)


class ItemDataset(Split):
    """A user's map-style dataset of dict items, seen as one split (optionally with a per-item ``transform``).

    The run's task settles what the dataset leaves open (``num_classes``, ``ignore_index``) on this wrapper, never
    on the user's dataset."""

    def __init__(
        self,
        dataset: Dataset,
        name: str = "dataset",
        transform: Transform | None = None,
        num_classes: int | None = None,
        task: str | None = None,
    ) -> None:
        if isinstance(dataset, IterableDataset):
            raise DataError(
                f"{name}: an IterableDataset has no per-example index, so it cannot give a seeded order, "
                "a rank split or teacher outputs per example; wrap it as a map-style Dataset "
                "(__len__ and __getitem__)"
            )
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise DataError(
                f"{name}: expected a map-style torch Dataset (__len__ and __getitem__), got {type(dataset).__name__}"
            )
        size = call(len, name, "len(dataset)", dataset)
        if size == 0:
            raise DataError(f"{name}: the split is empty (0 examples)")
        self.dataset, self.name, self.transform = dataset, name, transform
        self._checked: dict[str, bool] = {}  # what was read through once; shared by the copies of one run each
        self.task = task or _declared(dataset, "task", name) or DEFAULT_TASK
        if self.task not in TASKS:
            raise DataError(f"{name}: task {self.task!r:.80} unknown; expected one of {', '.join(TASKS.names())}")
        self.num_classes = num_classes if num_classes is not None else _declared(dataset, "num_classes", name)
        if self.num_classes is not None:
            checked_int(self.num_classes, f"{name}: dataset.num_classes", ge=1, le=1 << 24)
        self.ignore_index = _declared(dataset, "ignore_index", name)
        self._task_type = TASKS.get(self.task)  # the class, so a worker process unpickling it imports its module
        self._task_type.check_declared(self, name)
        self.random = bool(_declared(dataset, "random", name)) or (
            transform is not None and call(getattr, name, "transform.random", transform, "random", True)
        )
        self._specs: list[ModalitySpec] | None = None
        self._labels: Tensor | None = None
        self.views, self.view_seed_base = 1, 0  # read_views
        declared = _declared(dataset, "modalities", name)
        if declared is not None and (
            isinstance(declared, str)
            or not isinstance(declared, Sequence)
            or not all(isinstance(m, str) for m in declared)
        ):
            raise DataError(f"{name}: dataset.modalities must be a tuple of modality names, got {declared!r:.80}")
        self._keys = list(declared) if declared else None
        self.partly_paired = declared_optional(_declared(dataset, "partly_paired", name), name)  # items may lack
        self._fillers: dict | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def item(self, index: int) -> dict:
        """``dataset[index]``, then the transform (the caller seeds the RNGs: :func:`seed_rngs`); for a dataset that
        declares ``partly_paired``, with the presence columns (:mod:`.partly_paired`)."""
        item = self._read(index)
        if not self.partly_paired or not isinstance(item, Mapping):
            return item
        if self._fillers is None:
            with preserved_rngs():
                self._fillers = zero_fillers(self._read, len(self), self.partly_paired, self.name)
        return with_presence(item, self._fillers)

    def _read(self, index: int) -> dict:
        item = self.dataset[index]
        if self.transform is None or not isinstance(item, Mapping):
            return item
        # The item contract is a dict (Transform's argument); any other Mapping a dataset returns reaches the
        # transform as it is, unconverted.
        out = self.transform(cast(dict, item))
        if not isinstance(out, Mapping):
            raise DataError(
                f"item {index}: the {self.name} transform returned a {type(out).__name__}, expected the item's dict "
                "(modality name -> tensor, plus 'label')"
            )
        return out

    def collate(self, items: Sequence, indices: Sequence[int], check_values: bool = True) -> Batch:
        """:func:`~.collate.collate_items` of the items; ``check_values=False`` for items whose values were checked
        before and cannot have changed (they draw no random numbers)."""
        return collate_items(
            items, indices, self._batch_keys(), self._task_type.of_split(self), self.num_classes, check_values
        )

    def _batch_keys(self) -> list[str] | None:
        """The keys a batch stacks: the modalities and, on partly paired data, their presence columns."""
        if self._keys is None:
            return None  # the first item's (collate_items)
        return [*self._keys, *(m + PRESENT_SUFFIX for m in self.partly_paired)]

    def __getitems__(self, rows: Sequence[int] | Tensor) -> Batch:
        """The batch of ``rows``, read here; seeded as outside training, the global RNG streams kept."""
        rows = [int(r) for r in rows]
        items = []
        with preserved_rngs():
            seed_rngs(batch_seed(0, OUTSIDE_TRAINING, rows[0]))
            for r in rows:
                try:
                    items.append(self.item(r))
                except DataError as err:  # mmdistill's own check of what the user's code returned
                    raise DataError(f"{self.name}: {err}") from None
                except USER_ERRORS as err:  # any user error, named with its item
                    raise failed(err, f"{self.name}: reading item {r} raised", DataError) from kept(err)
        return self.collate(items, rows)

    def specs(self) -> list[ModalitySpec]:
        """Per-example shape and kind of each modality, read off the first item."""
        if self._specs is None:
            first = self.__getitems__([0])
            keys = self._keys or [k for k in first if is_modality_key(k)]
            self._keys = keys
            self._specs = [
                ModalitySpec(k, tuple(first[k].shape[1:]), tokens=not first[k].is_floating_point()) for k in keys
            ]
        return self._specs

    @property
    def labels(self) -> Tensor:
        """Every target of the split (``dataset.labels`` / ``.targets`` when it has them, else read item by item)."""
        if self._labels is None:
            own = _declared(self.dataset, "labels", self.name)
            if own is None:
                own = _declared(self.dataset, "targets", self.name)
            if own is not None and call(len, self.name, "len(dataset.labels)", own) == len(self):
                self._labels = call(torch.as_tensor, self.name, "dataset.labels as a tensor", own)
            else:
                self._labels = torch.cat(
                    [self.__getitems__(range(s, min(s + 256, len(self))))[LABEL] for s in range(0, len(self), 256)]
                )
        return self._labels

    @labels.setter
    def labels(self, value: Tensor) -> None:
        self._labels = value

    def feature_mean(self) -> Mapping[str, Tensor]:
        return _LazyMeans(self)

    def fingerprint(self) -> str:
        """The dataset's own ``fingerprint()`` (a string that changes when the data change); needed by the cache."""
        own = getattr(self.dataset, "fingerprint", None)
        if own is None or self.transform is not None:
            raise DataError(
                f"{self.name}: the teacher cache needs dataset.fingerprint() (a string that changes when "
                "the data change) and no transform; without it the teacher runs online"
            )
        return f"{type(self.dataset).__qualname__}:{call(own, self.name, 'dataset.fingerprint()')}"

    @property
    def cacheable(self) -> bool:
        return not self.random and self.transform is None and hasattr(self.dataset, "fingerprint")

    def augmented_fingerprint(self) -> str:
        """The key of the teacher's outputs on seeded augmentations (``cache.augmentations``): the dataset's own
        ``fingerprint()`` and the transform's (its ``fingerprint()``, else its settings:
        :func:`~.transforms.transform_settings`); a DataError saying which is missing."""
        own = getattr(self.dataset, "fingerprint", None)
        if own is None:
            raise DataError(f"{self.name}: the dataset has no fingerprint() (a string that changes with the data)")
        data = f"{type(self.dataset).__qualname__}:{call(own, self.name, 'dataset.fingerprint()')}"
        if self.transform is None:
            return data
        given = getattr(self.transform, "fingerprint", None)
        settings = call(given, self.name, "transform.fingerprint()") if callable(given) else None
        settings = settings or transform_settings(self.transform)
        if not isinstance(settings, str) or not settings:
            raise DataError(
                f"{self.name}: the transform {type(self.transform).__qualname__} has no fingerprint() and settings "
                "that say what it does (numbers and strings); give it a fingerprint() method returning a string "
                "that changes with its settings"
            )
        return f"{data}|transform:{settings}"

    def read_views(self, views: int, seed: int) -> None:
        """Training batches read one of ``views`` seeded augmentations of each example (``cache.augmentations``):
        in epoch e, view k = :func:`chosen_view` (seed, e, i) of example i, drawn with the RNGs seeded by
        :func:`view_seed` (seed, k, i); each batch says which (``batch["view"]``)."""
        self.views, self.view_seed_base = views, seed

    @property
    def values_checked(self) -> bool:
        """Every item was read and its values checked (:meth:`check_rows`), and reading one again gives the same
        values (no random draws): a batch of them need not be scanned again."""
        return bool(self._checked.get("rows")) and not self.random

    def check_rows(self) -> None:
        """Read every item once (this object: once), so an item that cannot be read or holds NaN/Inf (the collate
        names it) is refused before a model trains; the global random streams are kept (:meth:`__getitems__`)."""
        if self._checked.get("rows"):
            return
        for start in range(0, len(self), 256):
            self.__getitems__(range(start, min(start + 256, len(self))))
        self._checked["rows"] = True

    def for_run(self) -> ItemDataset:
        """A shallow copy for one run: what the run's task settles (``num_classes``, ``ignore_index``) is set on
        it, not on this object, which another run may read with other task params."""
        return copy.copy(self)

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray, name: str | None = None) -> ItemDataset:
        idx = [int(i) for i in indices]
        sub = ItemDataset(Subset(self.dataset, idx), name or self.name, self.transform, self.num_classes, self.task)
        sub._keys, sub.random, sub.ignore_index = self._keys, self.random, self.ignore_index
        sub.partly_paired, sub._fillers = self.partly_paired, self._fillers
        if self._labels is not None:
            sub._labels = self._labels[idx]
        return sub


AnyDataset = Split  # a split of either kind (the name kept for code that imports it)
ItemSplits = Splits  # the name this container had for splits holding item data (public API)


def as_split(dataset, name: str, transform: Transform | None = None, task: str | None = None) -> Split:
    """A split the engine can train on: a :class:`Split` as is (column data keep their fast path), anything else
    (or a split given a transform) wrapped as an :class:`ItemDataset`.

    ``task``: the task of a wrapped dataset that declares none (no ``dataset.task``)."""
    if isinstance(dataset, Split) and transform is None:
        return dataset.for_run()
    if isinstance(dataset, ItemDataset):
        dataset = dataset.dataset
    return ItemDataset(dataset, name, transform, task=None if getattr(dataset, "task", None) else task)


def as_splits(
    data=None,
    train=None,
    val=None,
    test=None,
    transforms: Mapping[str, Transform] | None = None,
    where: str = "distill",
    task: str | None = None,
) -> Splits:
    """``data`` (Splits, an object or dict with train/val/test, or a 3-tuple) or ``train=, val=, test=``;
    ``task``: the task of wrapped datasets that declare none."""
    given = {"train": train, "val": val, "test": test}
    if data is not None:
        if any(v is not None for v in given.values()):
            raise ConfigError(f"{where}: give data= (a splits object) or train=, val=, test=, not both")
        if isinstance(data, Splits) and not transforms:
            return Splits(data.train.for_run(), data.val.for_run(), data.test.for_run(), data.description, data.info)
        if isinstance(data, Mapping):
            given = {k: data.get(k) for k in given}
        elif isinstance(data, (tuple, list)) and len(data) == 3:
            given = dict(zip(given, data))
        else:
            given = {k: getattr(data, k, None) for k in given}
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(
            f"{where}: no {missing[0]!r} split; give train=, val= and test= datasets (or data= with all three)"
        )
    transforms = dict(transforms or {})
    unknown = sorted(set(transforms) - set(given))
    if unknown:
        raise ConfigError(f"{where}: transforms for unknown split {unknown[0]!r}; expected train, val or test")
    splits = {
        k: as_split(v, f"{getattr(v, 'name', k) if isinstance(v, MultimodalDataset) else k}", transforms.get(k), task)
        for k, v in given.items()
    }
    return Splits(splits["train"], splits["val"], splits["test"], getattr(data, "description", ""))


def load_data(cfg) -> Splits:
    """The splits a :class:`~mmdistill.config.DataConfig` describes: ``dataset: "pkg.mod:factory"`` called with
    ``params`` (returning train/val/test) or the registered dataset ``name``; then the per-split ``transforms``.
    Whatever a user's factory raises or returns instead of datasets is a ConfigError naming its key
    (:mod:`mmdistill.usercode`)."""
    if not all(hasattr(cfg, k) for k in ("name", "params", "split_seed", "dataset", "transforms", "model_dump")):
        raise ConfigError(
            f"data: expected a mmdistill.config.DataConfig (e.g. DataConfig(name='mfeat')), got {type(cfg).__name__}"
        )
    transforms = {}
    for split, spec in (cfg.transforms or {}).items():
        key = f"data.transforms.{split}.factory"
        factory = import_path(spec.factory, key, "a function or class that makes the transform")
        try:
            transforms[split] = call(factory, key, f"transform factory {spec.factory!r}", **spec.params)
        except ConfigError as err:  # "path: ..." from the transform: named by its config key
            head = str(err).split(":", 1)[0]
            if head in spec.params:
                raise ConfigError(f"data.transforms.{split}.params.{err}") from None
            raise
        if not callable(transforms[split]):
            raise ConfigError(
                f"{key}: {spec.factory!r} returned a {type(transforms[split]).__name__}, expected a callable "
                "transform (item dict -> item dict)"
            )
    if cfg.dataset is not None:
        splits = _made_splits(cfg.dataset, cfg.params, transforms)
    else:
        from .. import build_splits

        splits = build_splits(cfg.name, cfg.params, seed=cfg.split_seed)
        splits = as_splits(splits, transforms=transforms, where=f"data {cfg.name}") if transforms else splits
    from .. import _record_origin

    _record_origin(splits, cfg.model_dump(mode="json"))
    return splits


def _made_splits(path: str, params: dict, transforms: Mapping[str, Transform]) -> Splits:
    """The splits the user's dataset factory ``path`` makes; whatever goes wrong is an error naming data.dataset."""
    factory = import_path(path, "data.dataset", "a function or class that makes the datasets")
    made = call(factory, "data.dataset", f"dataset factory {path!r}", **params)
    if (
        made is None
        or isinstance(made, (str, bytes, int, float))
        or (isinstance(made, (tuple, list)) and len(made) != 3)
    ):
        raise ConfigError(
            f"data.dataset: dataset factory {path!r} returned a {type(made).__name__}; expected train, val and "
            "test datasets (a dict with those keys, a 3-tuple, or an object with those attributes)"
        )
    try:
        return as_splits(made, transforms=transforms, where=f"data.dataset {path}")
    except (ConfigError, DataError) as err:
        if str(err).startswith("data."):
            raise
        raise type(err)(f"data.dataset: {path!r}: {err}") from None
