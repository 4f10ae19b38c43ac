"""The frozen teacher: its outputs for a batch, and a disk cache of them per dataset split.

A cache file holds, for every example of a split (row ``index``), the teacher's logits,
hooked features and modality-view logits that the method asked for. A cache hit is read row
by row from the file (only a batch's rows are ever in memory), after a chunked checksum. Its name is a hash of
the teacher's weights, the split's data fingerprint, the request and the masking strategy,
so a change of any of them misses the cache and rebuilds it. Files are safetensors with a
checksum; a corrupt file is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ..batch import INDEX, Batch
from ..data.dataset import MultimodalDataset
from ..data.ondisk import NpyRows
from ..errors import CheckpointError
from ..masking import Masker, split_variants
from ..methods.base import TeacherOutputs, TeacherRequest
from ..models.hooks import FeatureHooks
from .checkpoint import save_tensors, tensor_layout, verify_file


def default_cache_dir() -> Path:
    return Path(os.environ.get("MMDISTILL_CACHE", Path.home() / ".cache" / "mmdistill")) / "teacher"


def model_hash(model: nn.Module) -> str:
    """sha256 over the model class and every parameter/buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, batch: Batch, request: TeacherRequest, masker: Masker | None) -> TeacherOutputs:
    """Run the teacher once on the full batch and, if asked, once on all modality-only views stacked."""
    with FeatureHooks(teacher, request.features) as feats:
        logits = teacher(batch)
    out = TeacherOutputs(logits=logits, features=dict(feats))
    if request.views:
        assert masker is not None, "modality views need a masker"
        stacked = masker.variants(batch, request.views)
        views = split_variants(teacher(stacked), 1 + len(request.views))
        out.view_logits = views[1:]
    return out


class TeacherTable:
    """Teacher outputs for every row of a split, looked up by the batch's ``index``.

    Columns are in-memory tensors (just computed) or row readers of the cache file (a cache
    hit): then a batch reads only its rows from disk, so the table's size never counts in
    the process's memory. Every column has the example axis first; ``view_logits`` is
    stored (N, V, C) and handed out (V, B, C).
    """

    def __init__(self, columns: dict[str, Tensor | NpyRows]) -> None:
        self.columns = columns

    @classmethod
    def open(cls, path: Path) -> "TeacherTable":
        """Row readers of a cache file, after checking its checksum (read in chunks)."""
        verify_file(path)
        layout, _ = tensor_layout(path)
        return cls({name: NpyRows(str(path), begin, shape, torch.empty((), dtype=dtype).numpy().dtype)
                    for name, (dtype, shape, begin, _end) in layout.items()})

    def _rows(self, name: str, idx: Tensor) -> Tensor:
        col = self.columns[name]
        return col[idx] if isinstance(col, Tensor) else torch.from_numpy(col.rows(idx.numpy()))

    @property
    def tensors(self) -> dict[str, Tensor]:
        """Every column in memory (tests and small data)."""
        return {k: v if isinstance(v, Tensor) else torch.from_numpy(v.rows(slice(None))) for k, v in self.columns.items()}

    def lookup(self, batch: Batch, device: torch.device) -> TeacherOutputs:
        idx = batch[INDEX].cpu()
        feats = {k[len("feature."):]: self._rows(k, idx).to(device) for k in self.columns if k.startswith("feature.")}
        views = self._rows("view_logits", idx).transpose(0, 1).to(device) if "view_logits" in self.columns else None
        return TeacherOutputs(self._rows("logits", idx).to(device), feats, views)


def cache_key(teacher: nn.Module, dataset: MultimodalDataset, request: TeacherRequest, masker: Masker | None) -> str:
    masking = masker.strategy if (masker is not None and request.views) else None
    desc = json.dumps(
        {"format": 2, "teacher": model_hash(teacher), "data": dataset.fingerprint(), "features": request.features,
         "views": request.views, "masking": masking, "mask_state": _masker_hash(masker) if masking else None},
        sort_keys=True,
    )
    return hashlib.sha256(desc.encode()).hexdigest()[:32]


def _masker_hash(masker: Masker) -> str:
    return hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in masker.state_dict().values())).hexdigest()


@torch.no_grad()
def compute_table(teacher: nn.Module, dataset: MultimodalDataset, request: TeacherRequest, masker: Masker | None,
                  batch_size: int, device: torch.device) -> TeacherTable:
    """Teacher outputs for the whole split, in row order."""
    teacher.eval()
    chunks: dict[str, list[Tensor]] = {}
    for start in range(0, len(dataset), batch_size):
        batch = {k: v.to(device) for k, v in dataset.__getitems__(range(start, min(start + batch_size, len(dataset)))).items()}
        out = teacher_outputs(teacher, batch, request, masker)
        parts = {"logits": out.logits, **{f"feature.{k}": v for k, v in out.features.items()}}
        if out.view_logits is not None:
            parts["view_logits"] = out.view_logits.transpose(0, 1)  # (B, V, C): example axis first
        for k, v in parts.items():
            chunks.setdefault(k, []).append(v.float().cpu())
    return TeacherTable({k: torch.cat(v).contiguous() for k, v in chunks.items()})


def cached_table(teacher: nn.Module, dataset: MultimodalDataset, request: TeacherRequest, masker: Masker | None,
                 cache_dir: Path, batch_size: int, device: torch.device, build: bool = True) -> tuple[TeacherTable, bool]:
    """Load the split's table from ``cache_dir`` or compute and store it. Returns (table, was_hit).

    ``build=False`` (non-zero DDP ranks) only loads; rank 0 builds first behind a barrier.
    """
    path = Path(cache_dir) / f"{cache_key(teacher, dataset, request, masker)}.safetensors"
    if path.is_file():
        try:
            return TeacherTable.open(path), True
        except CheckpointError:
            if not build:
                raise
            path.unlink(missing_ok=True)  # corrupt: rebuild below
    if not build:
        raise CheckpointError(f"teacher cache {path} was not built by rank 0")
    table = compute_table(teacher, dataset, request, masker, batch_size, device)
    save_tensors(path, table.columns, {"rows": len(dataset)})
    return table, False
