"""Checkpoints in safetensors, with a checksum, written atomically; nothing is ever unpickled.

A training checkpoint is one ``.safetensors`` file holding the trainable module's weights
(``module.*``), the optimizer's tensors (``optim.*``) and the RNG state (``rng.*``); every
non-tensor piece of state (epoch, best metric, scheduler, optimizer hyper-parameters) is
JSON in the file's metadata. ``metadata["sha256"]`` covers every tensor's name, dtype,
shape and bytes, so a flipped or truncated byte is detected before anything is used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import CheckpointError
from ..io import atomic_write

FORMAT = "mmdistill-v1"


def tensors_checksum(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, Tensor], state: dict[str, Any] | None = None) -> Path:
    """Write ``tensors`` (+ JSON ``state``) atomically, with a checksum in the metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "sha256": tensors_checksum(tensors), "state": json.dumps(state or {})}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _sniff(path: Path) -> None:
    """Refuse files that are not safetensors (pickles, torch.save zips) before parsing them."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(
            f"{path}: this is a pickle / torch.save archive, not a safetensors file; mmdistill never unpickles files "
            f"(convert it with safetensors.torch.save_file on a machine where you trust its origin)"
        )
    if len(head) < 9 or head[8:9] != b"{":
        raise CheckpointError(f"{path}: not a safetensors file (bad header; the file may be truncated or corrupt)")


def load_tensors(path: str | Path, verify: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; raise :class:`CheckpointError` if it is corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    _sniff(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from None
    if verify and "sha256" in meta and tensors_checksum(tensors) != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch — the file is corrupt; delete it to rebuild or restart")
    try:
        state = json.loads(meta.get("state", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: metadata 'state' is not valid JSON (corrupt file)") from None
    return tensors, state


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}


def tensor_layout(path: str | Path) -> tuple[dict[str, tuple[torch.dtype, tuple[int, ...], int, int]], dict]:
    """``({name: (dtype, shape, first byte, end byte)}, metadata)`` of a safetensors file, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    _sniff(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: corrupt or truncated safetensors header") from None
    meta = header.pop("__metadata__", {}) or {}
    layout = {}
    for name, info in header.items():
        begin, end = (8 + n + int(o) for o in info["data_offsets"])
        if end > size or info["dtype"] not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} runs past the end of the file or has an unknown dtype (truncated?)")
        layout[name] = (_SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"]), begin, end)
    return layout, meta


def verify_file(path: str | Path, chunk_bytes: int = 8 << 20) -> dict:
    """Check a file's sha256 (as :func:`tensors_checksum`) reading it in chunks; return its JSON state."""
    layout, meta = tensor_layout(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for name in sorted(layout):
            dtype, shape, begin, end = layout[name]
            h.update(f"{name}|{dtype}|{shape}|".encode())
            f.seek(begin)
            for pos in range(begin, end, chunk_bytes):
                h.update(f.read(min(chunk_bytes, end - pos)))
    if "sha256" in meta and h.hexdigest() != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch — the file is corrupt; delete it to rebuild or restart")
    try:
        return json.loads(meta.get("state", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: metadata 'state' is not valid JSON (corrupt file)") from None


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Model weights from ``.safetensors`` (checked), or a ``.pt``/``.pth`` state dict via ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        if not path.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  torch raises several types for unsafe or corrupt files
            raise CheckpointError(f"{path}: refused or unreadable with torch.load(weights_only=True): {err}") from None
        if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: expected a state dict of tensors")
        return obj
    return load_tensors(path)[0]


def _flatten_optimizer(sd: dict) -> tuple[dict[str, Tensor], dict]:
    tensors: dict[str, Tensor] = {}
    rest: dict = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        rest["state"][str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                rest["state"][str(pid)][k] = v
    return tensors, rest


def _unflatten_optimizer(tensors: dict[str, Tensor], rest: dict) -> dict:
    state: dict = {int(pid): dict(st) for pid, st in rest["state"].items()}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": rest["param_groups"]}


def save_training_state(path: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: dict) -> Path:
    """Everything needed to resume bitwise: weights, optimizer, scheduler, RNG, loop state."""
    tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
    opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    full = dict(state, optimizer=opt_rest, scheduler=scheduler.state_dict() if scheduler is not None else None)
    return save_tensors(path, tensors, full)


def load_training_state(path: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    tensors, state = load_tensors(path)
    module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state.pop("optimizer")))
    sched = state.pop("scheduler")
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state
