"""Checkpoints in safetensors, with a checksum, written atomically; nothing is ever unpickled.

A training checkpoint is one ``.safetensors`` file holding the trainable module's weights
(``module.*``), the optimizer's tensors (``optim.*``) and the RNG states (``rng.*``: the global one and
the method's own generators); every non-tensor piece of state (epoch, step, best metric, scheduler,
optimizer hyper-parameters) is JSON in the file's metadata. ``metadata["sha256"]`` covers every tensor's name, dtype,
shape and bytes, so a flipped or truncated byte is detected before anything is used.

Files are written by :func:`save_file` here (the safetensors layout, written by hand): the
header's keys are in a fixed order (metadata sorted, tensors by alignment then name), so equal
tensors and state give byte-identical files, and the file gets the permissions a plain ``open``
would give under the process's umask. :class:`RowsWriter` writes the same bytes a block of rows at
a time (the teacher cache's build, whose table may not fit in memory).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from ...errors import CheckpointError
from ...io import atomic_write

FORMAT = "mmdistill-v1"
METHOD_RNG = "rng.method."  # the method's generator states in a training checkpoint, by device: rng.method.cpu

_DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def tensors_checksum(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _raw_bytes(t: Tensor) -> memoryview:
    if not t.numel():
        return memoryview(b"")
    # numpy's stubs give arrays the buffer protocol from Python 3.12 on only (PEP 688); every numpy array has it
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]


Specs = dict[str, tuple[torch.dtype, tuple[int, ...]]]  # tensor name -> (dtype, shape)


def _header(specs: Specs, metadata: dict[str, str] | None) -> tuple[bytes, list[str], dict[str, int]]:
    """The safetensors header of tensors of these dtypes and shapes: the file's first bytes (length and JSON), the
    tensors in file order (by decreasing element size, then name) and each one's first byte in the file."""
    names = sorted(specs, key=lambda k: (-specs[k][0].itemsize, k))
    header: dict[str, Any] = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}} if metadata else {}
    offset, begins = 0, {}
    for k in names:
        dtype, shape = specs[k]
        if dtype not in _DTYPE_NAMES:
            raise CheckpointError(f"tensor {k!r}: dtype {dtype} cannot be stored in safetensors")
        n = math.prod(shape) * dtype.itemsize
        header[k] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        begins[k], offset = offset, offset + n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    start = 8 + len(raw)
    return len(raw).to_bytes(8, "little") + raw, names, {k: start + b for k, b in begins.items()}


def save_file(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file with a deterministic header: same tensors and metadata, same bytes.

    Layout (the safetensors format): 8-byte little-endian header length N, N bytes of JSON
    (``__metadata__`` with sorted keys, then tensors by decreasing element size and name, padded
    with spaces to a multiple of 8), then the tensors' bytes in header order.
    """
    raw, names, _ = _header({k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()}, metadata)
    with open(path, "wb") as f:
        f.write(raw)
        for k in names:
            f.write(_raw_bytes(tensors[k].detach().cpu().contiguous()))


class RowsWriter:
    """A file of :func:`save_tensors`' layout and bytes, written a block of rows at a time, so that tensors larger
    than memory can be written: ``specs`` fixes every tensor's dtype and shape up front, :meth:`write` puts rows at
    their place (the first axis), :meth:`finish` hashes the tensors back from the file in chunks and writes the
    checksum into the header, which held a placeholder of the same length until then."""

    def __init__(self, path: str | Path, specs: Specs, state: dict[str, Any]) -> None:
        self.path, self.specs = str(path), specs
        self.meta = {"format": FORMAT, "sha256": "0" * 64, "state": _state_json(state)}
        raw, _, self.begins = _header(specs, self.meta)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        os.pwrite(self.fd, raw, 0)
        end = max((self.begins[k] + math.prod(s) * d.itemsize for k, (d, s) in specs.items()), default=len(raw))
        os.ftruncate(self.fd, end)

    def write(self, name: str, first_row: int, rows: Tensor) -> None:
        """Rows ``first_row``, ``first_row + 1``, ... of tensor ``name``."""
        dtype, shape = self.specs[name]
        row_bytes = math.prod(shape[1:]) * dtype.itemsize
        data = _raw_bytes(rows.detach().cpu().to(dtype).contiguous())
        pos, done = self.begins[name] + first_row * row_bytes, 0
        while done < len(data):
            done += os.pwrite(self.fd, data[done:], pos + done)

    def finish(self, chunk_bytes: int = 8 << 20) -> None:
        """The checksum (as :func:`tensors_checksum`) into the header; the file closed."""
        h = hashlib.sha256()
        for name in sorted(self.specs):
            dtype, shape = self.specs[name]
            h.update(f"{name}|{dtype}|{tuple(shape)}|".encode())
            begin, size = self.begins[name], math.prod(shape) * dtype.itemsize
            pos, end = begin, begin + size
            while pos < end:
                got = os.pread(self.fd, min(chunk_bytes, end - pos), pos)
                if not got:
                    raise CheckpointError(f"{self.path}: file ends inside tensor {name!r} while it is written")
                h.update(got)
                pos += len(got)
        self.meta["sha256"] = h.hexdigest()
        os.pwrite(self.fd, _header(self.specs, self.meta)[0], 0)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _state_json(state: dict) -> str:
    """JSON with sorted keys (same state, same bytes); insertion order if keys of mixed types cannot be sorted."""
    try:
        return json.dumps(state, sort_keys=True)
    except TypeError:
        return json.dumps(state)


def save_tensors(path: str | Path, tensors: dict[str, Tensor], state: dict[str, Any] | None = None) -> Path:
    """Write ``tensors`` (+ JSON ``state``) atomically, with a checksum in the metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "sha256": tensors_checksum(tensors), "state": _state_json(state or {})}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def file_format(path: str | Path) -> str:
    """What a file is, from its structure: ``"safetensors"``, ``"zip"`` (torch.save), ``"pickle"`` or ``"unknown"``.

    safetensors: an 8-byte little-endian header length N, with N + 8 <= the file's size, then N
    bytes of JSON starting with ``{``. That is checked first, because the header length's low
    byte can be anything (0x80, 'P', ...). A torch.save archive starts ``PK\\x03\\x04``; a pickle
    starts with the PROTO opcode 0x80 and a protocol number 2..5.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") + 8 <= size:
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def _sniff(path: Path) -> None:
    """Refuse files that are not safetensors (pickles, torch.save zips) before parsing them."""
    kind = file_format(path)
    if kind in ("pickle", "zip"):
        raise CheckpointError(
            f"{path}: this is a {'pickle' if kind == 'pickle' else 'torch.save archive'}, not a safetensors file; "
            f"mmdistill never unpickles files (convert it with safetensors.torch.save_file on a machine where you "
            f"trust its origin)"
        )
    if kind != "safetensors":
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


_SAFETENSORS_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}


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
            raise CheckpointError(
                f"{path}: tensor {name!r} runs past the end of the file or has an unknown dtype (truncated?)"
            )
        layout[name] = (_SAFETENSORS_DTYPES[info["dtype"]], tuple(info["shape"]), begin, end)
    return layout, meta


def read_verified(
    path: str | Path, keep: bool = False, chunk_bytes: int = 8 << 20
) -> tuple[dict, dict[str, Tensor] | None]:
    """Check a file's sha256 (as :func:`tensors_checksum`) reading it in chunks; return (JSON state, tensors).

    With ``keep`` the tensors are read into memory on the way (one pass over the file, no second
    copy), else only hashed and ``None`` is returned in their place.
    """
    layout, meta = tensor_layout(path)
    h = hashlib.sha256()
    arrays: dict[str, Tensor] | None = {} if keep else None
    with open(path, "rb", buffering=0) as f:
        for name in sorted(layout):
            dtype, shape, begin, end = layout[name]
            h.update(f"{name}|{dtype}|{shape}|".encode())
            f.seek(begin)
            if arrays is not None:
                arr = np.empty(end - begin, np.uint8)
                view, done = memoryview(arr), 0  # type: ignore[arg-type]  # as in _raw_bytes
                while done < len(arr):
                    got = f.readinto(view[done : done + chunk_bytes])
                    if not got:
                        raise CheckpointError(f"{path}: file ends inside tensor {name!r} (truncated?)")
                    h.update(view[done : done + got])
                    done += got
                arrays[name] = torch.from_numpy(arr).view(dtype).reshape(shape)
            else:
                for pos in range(begin, end, chunk_bytes):
                    h.update(f.read(min(chunk_bytes, end - pos)))
    if "sha256" in meta and h.hexdigest() != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch — the file is corrupt; delete it to rebuild or restart")
    try:
        return json.loads(meta.get("state", "{}")), arrays
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: metadata 'state' is not valid JSON (corrupt file)") from None


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """Model weights from ``.safetensors`` (checked), or a ``.pt``/``.pth`` state dict via
    ``torch.load(weights_only=True)``."""
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


def refuse_cast(weights: dict[str, Tensor], model: torch.nn.Module, path: str | Path, key: str) -> None:
    """Refuse weights that ``load_state_dict`` would cast without a word: an integer or boolean tensor (a quantised
    checkpoint, e.g. int8) for a floating-point parameter or buffer of the model. ``key`` names the config key."""
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, tensor in weights.items():
        target = own.get(name)
        if target is not None and target.is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(
                f"{key}: {path} holds {name!r} as {tensor.dtype} where the model has {target.dtype} (a quantised "
                "checkpoint?); mmdistill does not cast weights: save the floating-point weights"
            )


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


def save_training_state(
    path: str | Path,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict,
    generators: dict[str, Tensor] | None = None,
) -> Path:
    """Everything needed to resume bitwise: weights, optimizer, scheduler, RNG (the global one and the method's
    ``generators``, by device), loop state."""
    tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
    opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors.update({f"{METHOD_RNG}{device}": g for device, g in (generators or {}).items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    full = dict(state, optimizer=opt_rest, scheduler=scheduler.state_dict() if scheduler is not None else None)
    return save_tensors(path, tensors, full)


def load_training_state(
    path: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[dict, dict[str, Tensor]]:
    """Load what :func:`save_training_state` wrote; returns the loop state and the method's generator states."""
    tensors, state = load_tensors(path)
    generators = {k[len(METHOD_RNG) :]: v for k, v in tensors.items() if k.startswith(METHOD_RNG)}
    module.load_state_dict({k[len("module.") :]: v for k, v in tensors.items() if k.startswith("module.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state.pop("optimizer")))
    sched = state.pop("scheduler")
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state, generators
