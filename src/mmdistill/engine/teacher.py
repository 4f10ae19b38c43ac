"""The frozen teacher: its outputs for a batch, and a disk cache of them per dataset split.

A cache file holds, for every example of a split (row ``index``), the teacher's logits,
hooked features and modality-view logits that the method asked for. Its name is a hash (the
key) of the teacher's weights, the split's data fingerprint, the request, the masking strategy
and the mmdistill version, so a change of any of them misses the cache and rebuilds it. The
key and what it hashes are also stored in the file and checked on open: a file copied under
another key is rebuilt, never used. Files are safetensors with a checksum; a corrupt file is
rebuilt. Opening the cache folder sweeps temp files left by killed writers (ours only).

How a file stores the outputs (``cache.dtype``, ``cache.top_k``; :class:`CacheStorage`): float columns in float32
(default), float16 or bfloat16, read back as float32; with ``top_k = K`` the logits as the teacher's K largest per
example, their class indices and one fill value ``f = logsumexp(z_rest) - log(C - K)`` for the other C - K classes,
so that ``softmax`` at T = 1 gives the K classes their exact probabilities and the others the exact remaining mass,
spread evenly (the sparse logits of large-scale distillation). With K = C the logits come back as stored: KD equals
full KD to float rounding. Modality-view logits and features are stored in ``dtype``, never cut to K.

The build writes the file as the teacher's batches come (:func:`write_table`: each batch's rows at their place in
the file, then the checksum), holding one batch of the table at a time. A hit whose table fits
``MMDISTILL_CACHE_MEMORY_MB`` (default 256 MiB) is read into memory once, checksum verified on the way, and indexed in
memory per batch. A bigger table stays on disk: a batch reads only its rows (sorted, nearby rows in one read), so the
process's memory grows with the dataset neither in the build nor in training.

With ``cache.augmentations = K`` (training data with a random transform) row ``i * K + k`` holds the outputs on view
k of example i, drawn with the RNGs seeded by (seed, k, i); a training batch says which view each example is
(``batch["view"]``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from .. import __version__
from ..batch import INDEX, Batch
from ..config import TrainerConfig
from ..data.contracts.item_dataset import VIEW, ItemDataset
from ..data.contracts.split import Split
from ..data.formats.ondisk import NpyRows
from ..errors import CheckpointError, ConfigError, DataError, TrainingError
from ..io import atomic_write, sweep_stale_temp_files
from ..masking import Masker, split_variants
from ..methods.base import TeacherOutputs, TeacherRequest
from ..methods.multi_teacher_base import TeacherGroupOutputs
from ..models.hooks import FeatureHooks
from .system.checkpoint import RowsWriter, read_verified, tensor_layout

DEFAULT_MEMORY_MB = 256  # a cache hit's table up to this size is held in memory


def memory_budget_bytes() -> int:
    """``MMDISTILL_CACHE_MEMORY_MB`` (MiB, >= 0; 0 keeps every table on disk) in bytes."""
    raw = os.environ.get("MMDISTILL_CACHE_MEMORY_MB", str(DEFAULT_MEMORY_MB))
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise CheckpointError(f"MMDISTILL_CACHE_MEMORY_MB={raw!r}: expected a number of MiB >= 0")
    return int(mb * (1 << 20))


def default_cache_dir() -> Path:
    return Path(os.environ.get("MMDISTILL_CACHE", Path.home() / ".cache" / "mmdistill")) / "teacher"


def announce_new_cache_dir(cache_dir: Path) -> None:
    """Create ``cache_dir`` if absent, saying so once on stderr: where, how to move it, how to turn it off."""
    if cache_dir.is_dir():
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"mmdistill: caching teacher outputs in {cache_dir} (set cache.dir=PATH or MMDISTILL_CACHE to move it, "
        "cache.enabled=false to turn it off)",
        file=sys.stderr,
    )


def model_hash(model: nn.Module) -> str:
    """sha256 over the model class and every parameter/buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class TeacherGroup(nn.Module):
    """Several teachers of one run, by name in their order (``teachers:`` in a config; a list or mapping given to
    ``distill``). ``modalities``: every modality one of them reads. Each is cached under its own key, or runs online
    on its own; their outputs for a batch are one
    :class:`~mmdistill.methods.multi_teacher_base.TeacherGroupOutputs`."""

    def __init__(self, teachers: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.names = tuple(teachers)
        self.teachers = nn.ModuleList(teachers.values())  # by position: a name never clashes with a Module attribute
        self.modalities = tuple(dict.fromkeys(m for t in self.teachers for m in getattr(t, "modalities", ())))

    @property
    def members(self) -> dict[str, nn.Module]:
        return dict(zip(self.names, self.teachers))

    def forward(self, batch: Batch) -> Tensor:
        """(B, K, C): every teacher's output, stacked in the teachers' order."""
        return torch.stack([t(batch) for t in self.teachers], dim=1)


def teacher_outputs(
    teacher: nn.Module, batch: Batch, request: TeacherRequest, masker: Masker | None, learns: bool = False
) -> TeacherOutputs:
    """Run the teacher once on the full batch and, if asked, once on all modality-only views stacked (each teacher
    of a :class:`TeacherGroup`); without gradients unless the teacher ``learns`` alongside (``teacher.trainable``)."""
    if masker is not None:  # partly paired data: the absent rows' inputs are the masker's null values
        batch = masker.fill_absent(batch)
    with contextlib.nullcontext() if learns else torch.no_grad():
        return _teacher_forward(teacher, batch, request, masker)


def _teacher_forward(
    teacher: nn.Module, batch: Batch, request: TeacherRequest, masker: Masker | None
) -> TeacherOutputs:
    if isinstance(teacher, TeacherGroup):
        return TeacherGroupOutputs.of(
            teacher.names, [_teacher_forward(t, batch, request, masker) for t in teacher.teachers]
        )
    with FeatureHooks(teacher, request.features) as feats:
        logits = teacher(batch)
    out = TeacherOutputs(logits=logits, features=dict(feats))
    if request.views:
        assert masker is not None, "modality views need a masker"
        stacked = masker.variants(batch, request.views)
        views = split_variants(teacher(stacked), 1 + len(request.views))
        out.view_logits = views[1:]
    return out


def augmentation_problem(train: Split) -> str | None:
    """Why the teacher's outputs on seeded augmentations of the training split ``train`` cannot be cached
    (``cache.augmentations``), or None when they can: it must be an item dataset whose data and transform give a
    fingerprint (:meth:`~mmdistill.data.contracts.item_dataset.ItemDataset.augmented_fingerprint`)."""
    keyed = getattr(train, "augmented_fingerprint", None)
    if keyed is None:
        return f"the training split is a {type(train).__name__}, not an item dataset read item by item"
    try:
        keyed()
    except DataError as err:
        return str(err)
    return None


def cached_views(augmentations: int, train: Split) -> int:
    """How many views of each example the teacher cache stores: ``cache.augmentations`` when the training data are
    random (a transform, ``dataset.random``) and can be keyed, else 1."""
    return augmentations if augmentations > 1 and train.random and augmentation_problem(train) is None else 1


STORED_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOPK_VALUES, TOPK_INDICES, TOPK_FILL = "logits.topk_values", "logits.topk_indices", "logits.fill"


@dataclass(frozen=True)
class CacheStorage:
    """How a cache file stores the teacher's outputs: ``dtype`` of its float columns, ``top_k`` logits per example
    (None: all of them)."""

    dtype: str = "float32"
    top_k: int | None = None

    def describe(self) -> dict:
        """What the cache key adds for this storage (nothing for the default, so default keys never change)."""
        return {} if self == CacheStorage() else {"storage": {"dtype": self.dtype, "top_k": self.top_k}}

    def encode(self, columns: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The columns as stored: floats in ``dtype``; the logits as top-K values, indices and the fill value."""
        dtype = STORED_DTYPES[self.dtype]
        out = {k: v.to(dtype) if v.is_floating_point() else v for k, v in columns.items()}
        if self.top_k is None:
            return out
        logits = columns["logits"]
        if logits.dim() != 2:
            raise ConfigError(
                f"cache.top_k: the teacher's logits have shape {tuple(logits.shape)}; top_k keeps the largest of "
                "(batch, classes) logits only; leave cache.top_k out"
            )
        classes = logits.shape[1]
        if self.top_k > classes:
            raise ConfigError(f"cache.top_k: {self.top_k} is above the teacher's {classes} classes")
        values, indices = logits.topk(self.top_k, dim=1)
        rest = logits.scatter(1, indices, float("-inf")).logsumexp(1)
        fill = rest - math.log(classes - self.top_k) if self.top_k < classes else rest
        del out["logits"]
        out.update({TOPK_VALUES: values.to(dtype), TOPK_INDICES: indices.to(torch.int32), TOPK_FILL: fill.float()})
        return out


def decoded_logits(values: Tensor, indices: Tensor, fill: Tensor, classes: int) -> Tensor:
    """(B, C) logits from the top-K values at their class indices, every other class at the fill value."""
    out = fill.float().unsqueeze(1).expand(len(fill), classes).clone()
    return out.scatter_(1, indices.long(), values.float())


class TeacherTable:
    """Teacher outputs for every row of a split, looked up by the batch's ``index``.

    Columns are in-memory tensors (just computed) or row readers of the cache file (a cache
    hit): then a batch reads only its rows from disk, so the table's size never counts in
    the process's memory. Every column has the example axis first; ``view_logits`` is
    stored (N, V, C) and handed out (V, B, C).
    """

    def __init__(self, columns: Mapping[str, Tensor | NpyRows], classes: int | None = None, views: int = 1) -> None:
        self.columns, self.classes = columns, classes  # classes: C of top-K logits
        self.views = views  # cache.augmentations: row index * views + view holds that view of that example

    @classmethod
    def open(cls, path: Path, memory_budget: int | None = None) -> tuple[TeacherTable, dict]:
        """The table of a cache file and its stored state, after checking its checksum.

        In memory when the file's tensors fit ``memory_budget`` bytes (default
        :func:`memory_budget_bytes`), else row readers of the file.
        """
        layout, _ = tensor_layout(path)
        size = sum(end - begin for _dtype, _shape, begin, end in layout.values())
        budget = memory_budget_bytes() if memory_budget is None else memory_budget
        state, arrays = read_verified(path, keep=size <= budget)
        classes, views = state.get("classes"), int(state.get("views", 1))
        if arrays is not None:
            return cls(arrays, classes, views), state
        return cls(
            {
                name: NpyRows(str(path), begin, shape, _numpy_dtype(dtype))
                for name, (dtype, shape, begin, _end) in layout.items()
            },
            classes,
            views,
        ), state

    def _rows(self, name: str, idx: Tensor) -> Tensor:
        """The rows ``idx`` of column ``name``; stored float16 / bfloat16 read back as float32."""
        col = self.columns[name]
        if isinstance(col, Tensor):
            rows = col.index_select(0, idx)
        else:
            rows = torch.from_numpy(col.rows(idx.numpy()))
            if name != TOPK_INDICES and rows.dtype == torch.int16:  # bfloat16, which numpy has not, read as int16
                rows = rows.view(torch.bfloat16)
        return rows.float() if rows.is_floating_point() else rows

    def _logits(self, idx: Tensor) -> Tensor:
        if TOPK_VALUES not in self.columns:
            return self._rows("logits", idx)
        assert self.classes is not None, "a top-K table knows its class count"
        return decoded_logits(
            self._rows(TOPK_VALUES, idx), self._rows(TOPK_INDICES, idx), self._rows(TOPK_FILL, idx), self.classes
        )

    @property
    def tensors(self) -> dict[str, Tensor]:
        """Every column in memory (tests and small data)."""
        return {
            k: v if isinstance(v, Tensor) else torch.from_numpy(v.rows(slice(None))) for k, v in self.columns.items()
        }

    def lookup(self, batch: Batch, device: torch.device) -> TeacherOutputs:
        idx = self.rows_of(batch)
        feats = {k[len("feature.") :]: self._rows(k, idx).to(device) for k in self.columns if k.startswith("feature.")}
        views = self._rows("view_logits", idx).transpose(0, 1).to(device) if "view_logits" in self.columns else None
        return TeacherOutputs(self._logits(idx).to(device), feats, views)

    def rows_of(self, batch: Batch) -> Tensor:
        """The table's rows of a batch's examples: ``index``, or ``index * views + view`` (the augmentation the
        batch holds, ``batch["view"]``) in a table of several views per example."""
        idx = batch[INDEX].cpu()
        if self.views == 1:
            return idx
        if VIEW not in batch:
            raise ConfigError(
                f"cache.augmentations: the teacher cache holds {self.views} views of each example, and this batch "
                "does not say which one it holds (batch['view']); read the training data through distill()"
            )
        return idx * self.views + batch[VIEW].cpu()


def _numpy_dtype(dtype: torch.dtype):
    """The numpy dtype to read a stored column as (bfloat16, unknown to numpy, as int16 of the same bytes)."""
    return torch.empty((), dtype=torch.int16 if dtype == torch.bfloat16 else dtype).numpy().dtype


def cache_description(
    teacher: nn.Module,
    dataset: Split,
    request: TeacherRequest,
    masker: Masker | None,
    storage: CacheStorage = CacheStorage(),
) -> dict:
    """What a cache file's key hashes; stored in the file and compared on open."""
    masking = masker.strategy if (masker is not None and request.views) else None
    views = getattr(dataset, "views", 1)
    item_data = cast(ItemDataset, dataset)  # only item data have views
    augmented = {"augmentations": {"views": views, "seed": item_data.view_seed_base}} if views > 1 else {}
    return {
        **storage.describe(),
        **augmented,
        "format": 3,
        "mmdistill": __version__,
        "teacher": model_hash(teacher),
        "data": item_data.augmented_fingerprint() if augmented else dataset.fingerprint(),
        "features": list(request.features),
        "views": [list(v) for v in request.views],
        "masking": masking,
        "mask_state": _masker_hash(masker) if masker is not None and masking else None,
    }


def cache_key(teacher: nn.Module, dataset: Split, request: TeacherRequest, masker: Masker | None) -> str:
    return _key_of(cache_description(teacher, dataset, request, masker))


def _key_of(desc: dict) -> str:
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]


def _masker_hash(masker: Masker) -> str:
    return hashlib.sha256(
        b"".join(v.detach().cpu().numpy().tobytes() for v in masker.state_dict().values())
    ).hexdigest()


def check_finite_outputs(out: TeacherOutputs, split: str, index: Tensor) -> None:
    """Raise :class:`TrainingError` naming the teacher, ``split`` and the first example with NaN/Inf outputs."""
    parts = {"logits": out.logits, **{f"feature {k!r}": v for k, v in out.features.items()}}
    if out.view_logits is not None:
        parts["modality-view logits"] = out.view_logits.transpose(0, 1)
    for name, v in parts.items():
        bad = ~torch.isfinite(v.reshape(len(v), -1)).all(1)
        if bool(bad.any()):
            first = int(index.reshape(-1)[bad.nonzero()[0, 0].cpu()])
            raise TrainingError(
                f"the teacher's {name} are not finite (NaN/Inf) on split {split!r}, first at example {first} "
                f"(row 'index'); the teacher (its checkpoint, or its weights after training) is broken, not "
                f"the student. Check or retrain the teacher."
            )


def _split_batches(dataset: Split, batch_size: int, device: torch.device, trainer: TrainerConfig | None):
    """The split's batches in row order: an item dataset through the trainer's DataLoader workers (when it has
    some), read as evaluation reads it; column data (or no workers) read here. Under ``cache.augmentations``
    (``dataset.views`` > 1): every view of every example, in row order ``index * views + view``."""
    if getattr(dataset, "views", 1) > 1:
        from .batches import view_batches

        yield from view_batches(cast(ItemDataset, dataset), batch_size, trainer or TrainerConfig(), device)
        return
    if trainer is not None and trainer.num_workers and not dataset.gathers:
        from .batches import eval_batches

        yield from eval_batches(dataset, batch_size, 0, 1, trainer, device)
        return
    for start in range(0, len(dataset), batch_size):
        rows = range(start, min(start + batch_size, len(dataset)))
        yield {k: v.to(device) for k, v in dataset.__getitems__(rows).items()}


def teacher_rows(
    teacher: nn.Module,
    dataset: Split,
    request: TeacherRequest,
    masker: Masker | None,
    batch_size: int,
    device: torch.device,
    trainer: TrainerConfig | None = None,
) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
    """The teacher's outputs on the split batch by batch, in row order: (the table's rows, {column: float32 values on
    the CPU}), checked finite; the items read by ``trainer.num_workers`` DataLoader workers when it gives some."""
    teacher.eval()
    rows_of = TeacherTable({}, views=getattr(dataset, "views", 1)).rows_of
    for batch in _split_batches(dataset, batch_size, device, trainer):
        out = teacher_outputs(teacher, batch, request, masker)
        check_finite_outputs(out, dataset.name, batch[INDEX])
        parts = {"logits": out.logits, **{f"feature.{k}": v for k, v in out.features.items()}}
        if out.view_logits is not None:
            parts["view_logits"] = out.view_logits.transpose(0, 1)  # (B, V, C): example axis first
        yield rows_of(batch), {k: v.float().cpu() for k, v in parts.items()}


def compute_table(
    teacher: nn.Module,
    dataset: Split,
    request: TeacherRequest,
    masker: Masker | None,
    batch_size: int,
    device: torch.device,
    trainer: TrainerConfig | None = None,
) -> TeacherTable:
    """Teacher outputs for the whole split in memory, in row order (:func:`teacher_rows` filled into preallocated
    columns)."""
    views = getattr(dataset, "views", 1)
    columns: dict[str, Tensor] = {}
    for rows, parts in teacher_rows(teacher, dataset, request, masker, batch_size, device, trainer):
        for k, v in parts.items():
            if k not in columns:
                columns[k] = torch.empty((len(dataset) * views, *v.shape[1:]), dtype=torch.float32)
            columns[k][rows] = v
    return TeacherTable(columns, views=views)


def write_table(path: str, outputs, rows: int, storage: CacheStorage, state: dict) -> None:
    """The teacher's ``outputs`` (:func:`teacher_rows`) written into the cache file ``path`` as they come, in
    ``storage``'s form, ``rows`` rows in all: the build holds one batch of the table at a time, never all of it."""
    writer = None
    try:
        for idx, parts in outputs:
            stored = storage.encode(parts)
            if writer is None:
                if storage != CacheStorage():  # the class count of top-K logits (the state of a default file unchanged)
                    logits = parts["logits"]
                    state = {**state, "classes": int(logits.shape[-1]) if logits.dim() > 1 else 1}
                specs = {k: (v.dtype, (rows, *v.shape[1:])) for k, v in stored.items()}
                writer = RowsWriter(path, specs, state)
            first = int(idx[0])
            if torch.equal(idx, torch.arange(first, first + len(idx))):  # the usual case: a block of rows
                for k, v in stored.items():
                    writer.write(k, first, v)
                continue
            for j, row in enumerate(idx.tolist()):
                for k, v in stored.items():
                    writer.write(k, row, v[j : j + 1])
        writer = writer or RowsWriter(path, {}, state)
        writer.finish()
    finally:
        if writer is not None:
            writer.close()


def cached_table(
    teacher: nn.Module,
    dataset: Split,
    request: TeacherRequest,
    masker: Masker | None,
    cache_dir: Path,
    batch_size: int,
    device: torch.device,
    build: bool = True,
    storage: CacheStorage = CacheStorage(),
    trainer: TrainerConfig | None = None,
) -> tuple[TeacherTable, bool]:
    """Load the split's table from ``cache_dir`` or compute and store it. Returns (table, was_hit).

    ``build=False`` (non-zero DDP ranks) only loads; rank 0 builds first behind a barrier. A
    file whose stored key or description differs from this run's (copied or synced under
    another key) is rebuilt with a note on stderr; so is a corrupt one.
    ``storage``: how the file stores the outputs; ``trainer``: its DataLoader settings read an item dataset's
    items for the build (``num_workers`` workers).
    """
    desc = cache_description(teacher, dataset, request, masker, storage)
    key = _key_of(desc)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{key}.safetensors"
    if build:
        announce_new_cache_dir(cache_dir)
        for stale in sweep_stale_temp_files(cache_dir):
            print(f"mmdistill: removed {stale}, a partial teacher-cache file left by a killed process", file=sys.stderr)
    if path.is_file():
        try:
            table, state = TeacherTable.open(path)
            problem = _key_problem(state, key, desc)
        except CheckpointError as err:
            table, problem = None, str(err)
        if problem is None and table is not None:
            return table, True
        if not build:
            raise CheckpointError(f"teacher cache {path}: {problem}")
        print(f"mmdistill: teacher cache {path}: {problem}; rebuilding it", file=sys.stderr)
        del table
    if not build:
        raise CheckpointError(f"teacher cache {path} was not built by rank 0")
    views = getattr(dataset, "views", 1)
    state = {"rows": len(dataset), "cache_key": key, "cache_description": desc}
    state.update({"views": views} if views > 1 else {})
    outputs = teacher_rows(teacher, dataset, request, masker, batch_size, device, trainer)
    atomic_write(path, lambda tmp: write_table(tmp, outputs, len(dataset) * views, storage, state))
    return TeacherTable.open(path)[0], False


def _key_problem(state: dict, key: str, desc: dict) -> str | None:
    """Why a cache file's stored key does not match this run's, or None when it does."""
    if "cache_key" not in state:
        return "the file does not say which key it was built for (another version, or not a cache file)"
    if state["cache_key"] != key or state.get("cache_description") != desc:
        stored = state.get("cache_description") or {}
        diff = sorted(k for k in set(stored) | set(desc) if stored.get(k) != desc.get(k))
        if "augmentations" in diff:
            built, asked = (d.get("augmentations", {}).get("views", 1) for d in (stored, desc))
            return f"cache.augmentations: the file holds {built} view(s) of each example, this run reads {asked}"
        return (
            f"the file was built for key {state['cache_key']!r}, not this run's {key!r} "
            f"(differs in: {', '.join(diff) or 'the key'}); it was copied or renamed"
        )
    return None
