"""The one place batches are produced, for training and evaluation.

* A split that ``gathers`` (:class:`~mmdistill.data.contracts.split.Split`; column data) takes the fast path: a batch is
  one gather by an index tensor, no per-item Python and no DataLoader.
* Any other split (item data: :class:`~mmdistill.data.contracts.item_dataset.ItemDataset`) goes through a
  ``DataLoader`` (``trainer.num_workers``, ``pin_memory``, ``persistent_workers``, ``prefetch_factor``) whose
  batch sampler yields the same index batches, each with its batch seed.

Either way epoch e's order is ``randperm(n, seed + e)`` split DistributedSampler-style across processes, and a
batch's random augmentation is seeded by (seed, epoch, its first index): a function of neither the worker that
reads it nor of a resume, so a run and its interrupted-and-resumed twin see the same batches, bit for bit. Items that
draw no random numbers are read in the training process without saving, seeding and restoring its RNGs, and their
values (NaN/Inf inputs, targets) are checked in the first pass only: a later pass reads the same values
(:class:`_Collate`). On CUDA,
batches are pinned (by default) and copied with ``non_blocking=True``. An item or batch that fails in a worker reaches
the user as a :class:`DataError` naming the split, the item index and the original exception; a worker that exits,
is killed (a segfault) or yields no batch for ``trainer.worker_timeout_s`` seconds, as a DataError naming the split
and the items the workers were reading.
"""

from __future__ import annotations

import math
import signal
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..batch import Batch
from ..config import TrainerConfig
from ..data.contracts.item_dataset import (
    OUTSIDE_TRAINING,
    VIEW,
    ItemDataset,
    batch_seed,
    chosen_view,
    preserved_rngs,
    seed_rngs,
    view_seed,
)
from ..data.contracts.split import Split
from ..errors import DataError
from ..usercode import USER_ERRORS, describe, kept


class EpochBatches:
    """Index batches for one process: a seeded shuffle per epoch, split across processes.

    Epoch e's order is ``randperm(n, seed + e)``, padded by wrapping to a multiple of the
    number of processes; process r takes positions r, r + world, ... (DistributedSampler's
    scheme), so a 1-process run sees the same examples per step as a DDP run with the same
    global batch. Yields index tensors, so batches are gathered without Python lists.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> Tensor:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        total = -(-self.n // self.world) * self.world
        if total > self.n:
            order = torch.cat([order, order[: total - self.n]])
        return order[self.rank :: self.world]

    def __iter__(self):
        return iter(self._indices().split(self.batch_size))

    def __len__(self) -> int:
        per_process = math.ceil(self.n / self.world)
        return math.ceil(per_process / self.batch_size)


class _SeededBatches:
    """A batch sampler: each index batch of ``order`` as [(index, batch seed), ...] for the epoch it is set to; with
    ``views`` > 1 (``cache.augmentations``) as [(index, view seed, view), ...], each example's view chosen for the
    epoch and seeded on its own (:func:`~mmdistill.data.contracts.item_dataset.view_seed`)."""

    def __init__(self, order, seed: int, epoch: int | None = None, views: int = 1) -> None:
        self.order, self.seed, self.fixed_epoch, self.views = order, seed, epoch, views

    def __iter__(self):
        epoch = self.fixed_epoch if self.fixed_epoch is not None else self.order.epoch
        for idx in self.order:
            rows = idx.tolist()
            if self.views > 1:
                chosen = [chosen_view(self.seed, epoch, i, self.views) for i in rows]
                yield [(i, view_seed(self.seed, k, i), k) for i, k in zip(rows, chosen)]
                continue
            s = batch_seed(self.seed, epoch, rows[0])
            yield [(i, s) for i in rows]

    def __len__(self) -> int:
        return len(self.order)


@dataclass
class _Failure:
    """An exception in a worker, carried back as data so that the main process raises it with its context."""

    index: int | None
    kind: str
    message: str
    trace: str


class _SeededReads(torch.utils.data.Dataset):
    """``reads.__getitems__([(index, batch seed), ...])`` -> [(index, item or _Failure), ...], RNGs seeded once.

    ``reading``: a tensor in shared memory, one slot per worker, holding the item the worker is reading (-1: none),
    so that a worker that blocks or dies can be named with its item."""

    def __init__(self, dataset: ItemDataset, reading: torch.Tensor | None = None) -> None:
        self.dataset, self.reading = dataset, reading

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, ...]):
        index = key[0]
        worker = torch.utils.data.get_worker_info()
        reading, slot = self.reading, (worker.id if worker is not None else None)
        if reading is not None and slot is not None:
            reading[slot] = index
        try:
            return index, self.dataset.item(index)
        except USER_ERRORS as err:  # any user error (sys.exit too): carried to the main process with its index
            return index, _Failure(index, type(err).__name__, describe(err), traceback.format_exc())
        finally:
            if reading is not None and slot is not None:
                reading[slot] = -1

    def __getitems__(self, keys: list[tuple[int, ...]]) -> list:
        """A batch's items (the DataLoader's fetcher calls this); in the training process its RNG streams
        (dropout...) are kept as they were, once per batch. Keys with a view, (index, view seed, view), are seeded
        item by item and read as (index, item, view)."""
        if torch.utils.data.get_worker_info() is not None:
            return self._read(keys)
        if not self.dataset.random and len(keys[0]) == 2:  # no random draws: no RNG to seed or keep (0.1 ms)
            return self._read_here(keys)
        with preserved_rngs():
            return self._read(keys)

    def _read_here(self, keys: list[tuple[int, ...]]) -> list:
        """:meth:`__getitem__` of each key, in the training process (no worker slot to mark), in one loop."""
        read: list[tuple[int, dict | _Failure]] = []
        item = self.dataset.item
        for key in keys:
            try:
                read.append((key[0], item(key[0])))
            except USER_ERRORS as err:  # as in __getitem__
                read.append((key[0], _Failure(key[0], type(err).__name__, describe(err), traceback.format_exc())))
        return read

    def _read(self, keys: list[tuple[int, ...]]) -> list:
        if len(keys[0]) == 2:
            seed_rngs(keys[0][1])
            return [self[key] for key in keys]
        read = []
        for index, seed, view in keys:
            seed_rngs(seed)
            read.append((*self[(index,)], view))
        return read


class _Collate:
    """Stacks (index, item) pairs with the dataset's collate; a failure is passed on, never raised in the worker.

    ``check``: a flag in shared memory (the workers read it), 1 while the collate checks the values of each batch
    (NaN/Inf inputs, the targets), 0 once :class:`ItemBatches` has had one whole pass of items that draw no random
    numbers: the same items read again hold the same values. Items that draw random numbers (a transform, or
    ``dataset.random``) are checked in every batch: each read is new, and a NaN in one would otherwise reach the
    loss (a non-finite loss naming no item) or the evaluation (metrics of NaN logits)."""

    def __init__(self, dataset: ItemDataset, check: torch.Tensor | None = None) -> None:
        self.dataset = dataset
        self.check = check if check is not None else torch.ones((), dtype=torch.uint8)

    def __call__(self, pairs):
        for pair in pairs:
            if isinstance(pair[1], _Failure):
                return pair[1]
        try:
            items, indices = [pair[1] for pair in pairs], [pair[0] for pair in pairs]
            batch = self.dataset.collate(items, indices, check_values=bool(self.check))
            if len(pairs[0]) == 3:  # (index, item, view): which cached augmentation each example is
                batch[VIEW] = torch.tensor([pair[2] for pair in pairs])
            return batch
        except Exception as err:  # noqa: BLE001
            return _Failure(None, type(err).__name__, str(err), traceback.format_exc())


def _raise_failure(f: _Failure, split: str) -> None:
    if f.kind == "DataError":  # our own check (collate, the transform's result): it names the item already
        raise DataError(f"{split}: {f.message.removeprefix('DataError: ')}")
    err = DataError(
        f"{split}: reading item {f.index} raised {f.message}"
        if f.index is not None
        else f"{split}: making a batch raised {f.kind}: {f.message}"
    )
    if sys.version_info >= (3, 11):  # exception notes are new in 3.11; on 3.10 the message stands alone
        err.add_note(f.trace)
    raise err


def _quiet_worker(worker_id: int) -> None:
    """In a worker: a crash signal (a segfault in native code) ends the worker without PyTorch's own message on
    stderr, and a connection the training process dropped (it stopped the run) prints no traceback; the training
    process reports the failure in one line naming the split and the item (:class:`ItemBatches`)."""
    for crash in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE):
        signal.signal(crash, signal.SIG_DFL)
    sys.excepthook = _unless_dropped


def _unless_dropped(kind, value, trace) -> None:
    if not issubclass(kind, (ConnectionResetError, BrokenPipeError)):
        sys.__excepthook__(kind, value, trace)


_LAST_WORKERS: dict = {}  # the last DataLoader workers seen ending: split, rows being read, how one ended, timeout


def worker_failure(err: BaseException) -> DataError | None:
    """A DataLoader's report of a worker that blocked past the timeout, exited or was killed, as a DataError naming
    the split and the items the workers were reading (None for any other exception). PyTorch raises the report of a
    dead worker from a signal handler, so it may surface anywhere in a run: the run's entry point asks here."""
    text = str(err).strip().splitlines()[0] if isinstance(err, RuntimeError) and str(err).strip() else ""
    if not text.startswith(("DataLoader timed out", "DataLoader worker")):
        return None
    split, rows = _LAST_WORKERS.get("split", "a split"), _LAST_WORKERS.get("rows", [])
    reading = f" while reading item(s) {', '.join(map(str, rows[:10]))}" if rows else ""
    if text.startswith("DataLoader timed out"):
        return DataError(
            f"{split}: no batch came from the DataLoader workers in {_LAST_WORKERS.get('timeout', 0):g} s "
            f"(trainer.worker_timeout_s){reading}: a read that never returns (a lock, a network file system, "
            "input()); fix the dataset's __getitem__, or raise trainer.worker_timeout_s for slow reads"
        )
    if "exited unexpectedly" in text or "killed by signal" in text:
        ended = _LAST_WORKERS.get("ended", "exited")
        if ended == "exited" and "killed by signal" in text:
            ended = "was killed by signal" + text.split("killed by signal", 1)[1].rstrip(". ")
        return DataError(
            f"{split}: a DataLoader worker {ended}{reading} (a crash in native code, os._exit or running out of "
            "memory); run with trainer.num_workers=0 to see the error in this process"
        )
    return None


def _how_it_ended(it) -> str:
    """How the first worker of ``it`` that ended did: killed by which signal, or exited with which code."""
    for worker in getattr(it, "_workers", []):
        code = worker.exitcode
        if code is not None and code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name} ({signal.strsignal(-code)})"
            except ValueError:
                return f"was killed by signal {-code}"
        if code:
            return f"exited with code {code}"
    return "exited"


class ItemBatches:
    """Batches of an :class:`ItemDataset` through a DataLoader (workers, pinning, prefetch per ``TrainerConfig``)."""

    def __init__(
        self,
        dataset: ItemDataset,
        order,
        cfg: TrainerConfig,
        seed: int,
        device: torch.device | str,
        epoch: int | None = None,
        sampler=None,
    ) -> None:
        """``epoch``: a fixed epoch of batch seeds (None: the order's); ``sampler``: the batch sampler (default: the
        order's batches with their seeds, each example's view chosen when the dataset reads ``views``)."""
        self.dataset, self.order, self.device = dataset, order, torch.device(device)
        on_cuda = self.device.type == "cuda"
        pin = cfg.pin_memory if cfg.pin_memory is not None else on_cuda
        workers = cfg.num_workers
        extra: dict[str, Any] = {"prefetch_factor": cfg.prefetch_factor} if workers and cfg.prefetch_factor else {}
        self.timeout = cfg.worker_timeout_s if workers else 0
        self.reading = torch.full((workers,), -1, dtype=torch.int64).share_memory_() if workers else None
        checked = bool(getattr(dataset, "values_checked", False))
        self.check = torch.tensor(0 if checked else 1, dtype=torch.uint8)  # see _Collate
        if workers:
            self.check.share_memory_()
        views = getattr(dataset, "views", 1) if epoch is None else 1  # training reads: cache.augmentations' views
        self.loader = DataLoader(
            _SeededReads(dataset, self.reading),
            batch_sampler=sampler or _SeededBatches(order, seed, epoch, views),
            collate_fn=_Collate(dataset, self.check),
            num_workers=workers,
            pin_memory=pin and on_cuda,
            persistent_workers=cfg.persistent_workers and workers > 0,
            generator=torch.Generator().manual_seed(seed),
            timeout=self.timeout,
            worker_init_fn=_quiet_worker if workers else None,
            **extra,
        )

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        it = iter(self.loader)
        try:
            for batch in it:
                if isinstance(batch, _Failure):
                    _raise_failure(batch, self.dataset.name)
                yield to_device(batch, self.device)
            if not self.dataset.random:  # one whole pass: every item's values checked (see _Collate)
                self.check.fill_(0)
        except RuntimeError as err:  # a worker that blocked past the timeout, exited or was killed
            problem = self._worker_problem(err, it)
            self.close(it, stop_now=problem is not None)
            if problem is None:
                raise
            raise problem from kept(err)
        except BaseException:  # a failed item, Ctrl-C, an error in the step: stop the workers now, not at exit
            self.close(it, stop_now=True)  # terminated: a worker still sending a batch would print a traceback
            raise

    def _worker_problem(self, err: RuntimeError, it) -> DataError | None:
        """The DataError for a DataLoader's report of a blocked or dead worker (None for another RuntimeError),
        naming the split and the items the workers were reading."""
        self._note_workers(it)
        return worker_failure(err)

    def _note_workers(self, it) -> None:
        """Note the split, the items the workers are reading and how an ended worker ended: PyTorch may report a
        dead worker from its SIGCHLD handler wherever the training process is (a training step), after this
        iterator is closed, and :func:`worker_failure` then names them."""
        if self.reading is None:
            return
        rows = sorted(int(i) for i in self.reading.tolist() if i >= 0)
        _LAST_WORKERS.update(split=self.dataset.name, rows=rows, ended=_how_it_ended(it), timeout=self.timeout)

    def close(self, it=None, stop_now: bool = False) -> None:
        """Stop the workers of ``it`` and the persistent ones (the run ends or failed); ``stop_now``: terminate them
        first (a blocked worker would hold the shutdown for seconds)."""
        for running in (it, getattr(self.loader, "_iterator", None)):
            if running is not None and self.reading is not None:
                self._note_workers(running)
            if stop_now and running is not None:
                if getattr(running, "_worker_pids_set", False):  # else PyTorch's SIGCHLD handler reports them
                    torch.utils.data._utils.signal_handling._remove_worker_pids(id(running))
                    running._worker_pids_set = False
                for worker in getattr(running, "_workers", []):
                    if worker.is_alive():
                        worker.terminate()
            if running is not None and hasattr(running, "_shutdown_workers"):
                running._shutdown_workers()
        self.loader._iterator = None


class ColumnBatches:
    """Batches of a split that ``gathers``: one gather per batch by an index tensor (the fast path)."""

    def __init__(self, dataset: Split, order, device: torch.device | str) -> None:
        self.dataset, self.order, self.device = dataset, order, torch.device(device)

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        on_accelerator = self.device.type != "cpu"
        for idx in self.order:
            batch = self.dataset.__getitems__(idx)
            yield to_device(batch, self.device) if on_accelerator else batch

    def close(self) -> None:
        pass


def to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_batches(
    dataset, cfg: TrainerConfig, seed: int, rank: int, world: int, device: torch.device | str = "cpu", task=None
) -> ColumnBatches | ItemBatches:
    """This process's training batches: call ``set_epoch(e)`` before iterating epoch e.

    A split that gathers has its targets checked once here (``Split.check_targets``, in ``task``'s form; None: the
    dataset's task); an item dataset's are checked per batch by its collate."""
    order = EpochBatches(len(dataset), cfg.batch_size // world, seed, rank, world)
    if dataset.gathers:
        dataset.check_targets(task)
        return ColumnBatches(dataset, order, device)
    return ItemBatches(dataset, order, cfg, seed, device)


class _EveryView:
    """Every view of every example as batches of (index, view seed, view) in row order ``index * views + view``: the
    reads of the teacher cache's build under ``cache.augmentations``."""

    def __init__(self, n: int, views: int, seed: int, batch_size: int) -> None:
        self.rows, self.views, self.seed = torch.arange(n * views), views, seed
        self.batch_size = batch_size

    def __iter__(self):
        for rows in self.rows.split(self.batch_size):
            pairs = [divmod(r, self.views) for r in rows.tolist()]
            yield [(i, view_seed(self.seed, k, i), k) for i, k in pairs]

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        pass


def view_batches(dataset: ItemDataset, batch_size: int, cfg: TrainerConfig, device: torch.device | str = "cpu"):
    """Every one of the ``dataset.views`` seeded augmentations of each example, in row order (index * views + view),
    each batch with its ``"view"``: what the teacher cache stores under ``cache.augmentations``."""
    every = _EveryView(len(dataset), dataset.views, dataset.view_seed_base, batch_size)
    cfg = cfg.model_copy(update={"persistent_workers": False})
    return ItemBatches(dataset, every, cfg, dataset.view_seed_base, device, OUTSIDE_TRAINING, sampler=every)


class _RowBatches:
    """Rows rank, rank + world, ... of a split, in order, as index batches (no padding)."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int) -> None:
        self.rows = torch.arange(rank, n, world)
        self.batch_size = batch_size

    def __iter__(self):
        return iter(self.rows.split(self.batch_size))

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        pass


def eval_batches(
    dataset,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    cfg: TrainerConfig | None = None,
    device: torch.device | str = "cpu",
):
    """This process's share of a split (rows rank, rank+world, ...), no padding, in order.

    An item dataset's random transform, if any, is seeded as outside training (the same draw every evaluation).
    """
    rows = _RowBatches(len(dataset), batch_size, rank, world)
    if dataset.gathers:
        return ColumnBatches(dataset, rows, "cpu")
    cfg = cfg or TrainerConfig()
    return ItemBatches(
        dataset, rows, cfg.model_copy(update={"persistent_workers": False}), 0, device, epoch=OUTSIDE_TRAINING
    )
