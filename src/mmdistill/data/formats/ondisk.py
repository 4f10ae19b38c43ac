"""Modality arrays left on disk: rows of a ``.npy`` file read on demand, with bounded RSS.

A :class:`DiskArray` is what the ``folder`` loader hands to a
:class:`~mmdistill.data.contracts.dataset.MultimodalDataset` instead of an in-memory tensor, so a
dataset larger than the memory budget can be trained on. Reading a batch gathers only its
rows (``take``); whole-array passes (NaN scan, fingerprint, mean) go in chunks of about
``CHUNK_BYTES``; a subset is a row-index view onto the same file, never a copy.

Why positional reads (``pread``) and not the memory mapping itself: pages of a file mapping
that a process touches count in its resident set until the kernel reclaims them, and the
kernel maps more than was touched (fault-around, and whole large folios: on Linux 6.18 with
ext4, reading 128 random 4 KiB rows of a 48 MiB file mapped all 48 MiB). An epoch over a
shuffled file would then show the file's size as RSS. ``pread`` copies exactly the requested
bytes from the page cache into the batch, which is all the process holds; the page cache
itself is shared, reclaimable and not part of RSS. The file is opened memory-mapped only to
validate its header (``np.load(mmap_mode="r")``); nothing is read through that mapping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ...errors import DataError

CHUNK_BYTES = 8 << 20  # about this many bytes per chunk of a whole-array pass
GAP_BYTES = 16 << 10  # rows closer than this in the file are fetched by one read (the gap is read and dropped)
SPAN_BYTES = 4 << 20  # the most one such read fetches


def _byte_view(a: np.ndarray) -> memoryview:
    """The bytes of C-ordered array ``a``, writable in place."""
    # numpy's stubs give arrays the buffer protocol from Python 3.12 on only (PEP 688); every numpy array has it
    return memoryview(a.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


class NpyRows:
    """Row reader of one C-ordered ``.npy`` file, shared by every view of it.

    Picklable (for ``ddp_spawn``): the pickle holds the path and layout; the file is opened
    again on the other side.
    """

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = str(path), int(offset), tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    @classmethod
    def of(cls, memmap: np.memmap) -> NpyRows:
        """The file behind a C-ordered ``np.load(..., mmap_mode="r")`` array."""
        if not memmap.flags.c_contiguous:
            raise ValueError("only C-ordered .npy files can be read row by row")
        if memmap.filename is None:
            raise ValueError("only arrays mapped from a .npy file can be read row by row")
        return cls(memmap.filename, memmap.offset, memmap.shape, memmap.dtype)

    def _read_into(self, buf: memoryview, first_row: int) -> None:
        pos, done = self.offset + first_row * self.row_bytes, 0
        while done < len(buf):
            got = os.preadv(self._fd, [buf[done:]], pos + done)
            if got <= 0:
                raise DataError(
                    f"{self.path}: file ended at byte {pos + done}; it is shorter than its header says (truncated?)"
                )
            done += got

    def rows(self, idx: np.ndarray | slice) -> np.ndarray:
        """A new array holding rows ``idx`` (any order, repeats allowed) or the slice's rows."""
        if isinstance(idx, slice):
            start, stop, _ = idx.indices(self.shape[0])
            out = np.empty((max(stop - start, 0), *self.shape[1:]), self.dtype)
            if out.size:
                self._read_into(_byte_view(out), start)
            return out
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        uniq, inverse = np.unique(idx, return_inverse=True)
        buf = np.empty((len(uniq), *self.shape[1:]), self.dtype)
        if buf.size:
            self._gather_sorted(uniq, _byte_view(buf))
        if len(uniq) == len(idx) and (len(idx) < 2 or bool((idx[1:] > idx[:-1]).all())):
            return buf  # already in the asked order
        return buf[inverse.reshape(-1)]

    def _gather_sorted(self, uniq: np.ndarray, raw: memoryview) -> None:
        """Rows ``uniq`` (sorted, distinct) into ``raw``, one ``pread`` per span of nearby rows.

        Rows less than ``GAP_BYTES`` apart share one read (the gap is read and dropped: cheaper
        than a system call), so a batch of small rows (a teacher's logits) costs a few calls,
        not one per row; a span reads at most ``SPAN_BYTES`` (bounded memory).
        """
        rb = self.row_bytes
        gap_rows = max(GAP_BYTES // max(rb, 1), 0)
        cuts = np.flatnonzero(np.diff(uniq) > gap_rows + 1) + 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(uniq)]):
            first, last = int(uniq[a]), int(uniq[b - 1])
            span = (last - first + 1) * rb
            if span == (b - a) * rb:  # consecutive rows: straight into the batch
                self._read_into(raw[a * rb : b * rb], first)
            elif span <= SPAN_BYTES:
                scratch = np.empty(span, np.uint8)
                self._read_into(_byte_view(scratch), first)
                rows = scratch.reshape(-1, rb)[uniq[a:b] - first]
                raw[a * rb : b * rb] = rows.reshape(-1).data
            else:  # too far apart to read in one go: one call per run of consecutive rows
                starts = np.flatnonzero(np.diff(uniq[a:b], prepend=-2) != 1) + a
                for s, e in zip(starts.tolist(), [*starts[1:].tolist(), b]):
                    self._read_into(raw[s * rb : e * rb], int(uniq[s]))

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("path", "offset", "shape", "dtype")}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self, **state)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


class DiskArray:
    """Rows ``rows`` (all when ``None``) of a ``.npy`` file, read as float32 or, for tokens, int64.

    ``row_shape`` reshapes each row (same element count, e.g. (784,) -> (1, 28, 28)) and ``scale``
    multiplies it after conversion (e.g. 1/255), so a stored layout can be read as a model expects.

    Has the few tensor-like attributes a dataset needs (``shape``, ``dtype``,
    ``is_floating_point``, ``len``); everything else goes through ``take``, ``chunks`` or
    ``materialize`` so that no whole-array copy happens by accident.
    """

    def __init__(
        self,
        file: NpyRows,
        rows: np.ndarray | None = None,
        tokens: bool = False,
        checked_finite: bool = False,
        row_shape: tuple[int, ...] | None = None,
        scale: float | None = None,
    ) -> None:
        self.file, self.tokens, self.checked_finite = file, tokens, checked_finite
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        n = file.shape[0] if self.rows is None else len(self.rows)
        self.row_shape = tuple(file.shape[1:]) if row_shape is None else tuple(row_shape)
        if int(np.prod(self.row_shape)) != int(np.prod(file.shape[1:])):
            raise ValueError(f"row_shape {self.row_shape} does not hold the file's rows of shape {file.shape[1:]}")
        self.scale = scale  # rows are multiplied by this after conversion (e.g. 1/255), None: as stored
        self.shape = (n, *self.row_shape)
        self.dtype = torch.int64 if tokens else torch.float32
        self._np_dtype = np.int64 if tokens else np.float32

    @classmethod
    def of(
        cls,
        memmap: np.memmap,
        tokens: bool = False,
        row_shape: tuple[int, ...] | None = None,
        scale: float | None = None,
    ) -> DiskArray:
        return cls(NpyRows.of(memmap), tokens=tokens, row_shape=row_shape, scale=scale)

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return len(self.shape)

    def is_floating_point(self) -> bool:
        return not self.tokens

    def _convert(self, x: np.ndarray) -> Tensor:
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, which the NaN/Inf scan reports
            x = np.ascontiguousarray(x, dtype=self._np_dtype).reshape(len(x), *self.row_shape)
            if self.scale is not None:
                np.multiply(x, np.float32(self.scale), out=x)
            return torch.from_numpy(x)

    def take(self, idx: np.ndarray | Tensor) -> Tensor:
        """The rows ``idx`` of this view (positions in the view, not in the file) as a tensor."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        return self._convert(self.file.rows(idx if self.rows is None else self.rows[idx]))

    def subset(self, idx: np.ndarray | Tensor) -> DiskArray:
        """A view of rows ``idx`` of this view: new row numbers, same file, no data read."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        return DiskArray(
            self.file,
            idx if self.rows is None else self.rows[idx],
            self.tokens,
            self.checked_finite,
            self.row_shape,
            self.scale,
        )

    def chunks(self, max_bytes: int | None = None) -> Iterator[tuple[int, Tensor]]:
        """(first row, rows as a tensor) over the whole view, about ``max_bytes`` at a time."""
        step = max(1, (max_bytes or CHUNK_BYTES) // max(self.file.row_bytes, 1))
        for start in range(0, len(self), step):
            stop = min(start + step, len(self))
            src = slice(start, stop) if self.rows is None else self.rows[start:stop]
            yield start, self._convert(self.file.rows(src))

    def first_nonfinite(self) -> tuple[int, int]:
        """(count of NaN/Inf values after conversion to float32, first row holding one, or -1)."""
        count, first = 0, -1
        if self.tokens:
            return count, first
        for start, x in self.chunks():
            bad = ~torch.isfinite(x)
            k = int(bad.sum())
            if k and first < 0:
                first = start + int(bad.reshape(len(x), -1).any(1).nonzero()[0])
            count += k
        return count, first

    def materialize(self) -> Tensor:
        """The whole view as one in-memory tensor (costs its full size; for small data and tests)."""
        if not len(self):
            return torch.empty(self.shape, dtype=self.dtype)
        return torch.cat([x for _, x in self.chunks()])

    def __repr__(self) -> str:
        return f"DiskArray({self.file.path!r}, shape={self.shape}, dtype={self.dtype})"
