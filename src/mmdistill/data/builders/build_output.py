"""Where ``mmdistill data build`` writes: a folder installed whole, under a lock, never deleting what it did not write.

A builder (:func:`~mmdistill.data.builders.avmnist_build.build_av_mnist`,
:func:`~mmdistill.data.generated.rgbd_scenes.write_rgbd_scenes`)
writes into a staging folder ``.NAME.partial-XXXX`` beside ``out`` (``with build_folder(...) as staging:``):

* ``out`` must be missing, empty, or (with ``overwrite``) an earlier build of the same builder (its marker file);
  anything else is refused before any work;
* a lock (:mod:`mmdistill.locks` on ``.NAME.mmdistill-build-lock`` beside ``out``, held from the check to the
  install and removed after) makes a second build into the same folder fail at once with
  :class:`~mmdistill.errors.OutputBusyError` naming the first one's process;
* the finished staging folder is renamed onto ``out``, which the OS does only while ``out`` is empty: the earlier
  build's own entries (``outputs``) are moved aside first and removed after; if anything else is in ``out`` by then
  (a file someone put there during the build) they are put back, nothing is deleted, and the new build is kept in
  its staging folder, named in the :class:`~mmdistill.errors.OutputExistsError`.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ... import locks
from ...errors import OutputBusyError, OutputExistsError


@dataclass(frozen=True)
class BuiltFolder:
    """What a builder writes and how its refusals read. ``label``: how ``out`` is named in messages (``--out DIR``
    from the CLI); ``made_by``: who makes such folders; ``finished``: what an earlier build is, with what to do."""

    marker: str
    outputs: tuple[str, ...]
    made_by: str
    finished: str


@contextmanager
def _build_lock(out: Path, label: str) -> Iterator[None]:
    """Hold the lock beside ``out`` (:func:`mmdistill.locks.temporary`); a busy one is an OutputBusyError at once."""
    try:
        with locks.temporary(out.parent / f".{out.name}.mmdistill-build-lock"):
            yield
    except locks.Busy as busy:
        raise OutputBusyError(
            f"{label}: another data build is writing there (pid {busy.holder}); wait for it to end or choose "
            "another folder"
        ) from None


def _check_out(out: Path, spec: BuiltFolder, overwrite: bool, label: str) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{label}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / spec.marker).is_file():
            raise OutputExistsError(
                f"{label}: folder is not empty and was not made by {spec.made_by}; choose a new or empty folder"
            )
        if not overwrite:
            raise OutputExistsError(f"{label}: holds {spec.finished}")


def _install(staging: Path, out: Path, outputs: Iterable[str], label: str) -> None:
    """Rename ``staging`` onto ``out`` (see the module docstring)."""
    outputs = set(outputs)
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    moved = [e for e in (out / name for name in outputs) if out.is_dir() and (e.exists() or e.is_symlink())]
    for entry in moved:
        entry.rename(aside / entry.name)
    try:
        staging.rename(out)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        for entry in moved:
            (aside / entry.name).rename(entry)
        aside.rmdir()
        others = sorted(e.name for e in out.iterdir() if e.name not in outputs) if out.is_dir() else [out.name]
        raise OutputExistsError(
            f"{label}: {', '.join(others[:5])} appeared there during the build, and mmdistill never deletes what it "
            f"did not write; nothing in it was changed. The finished build is in {staging}: move it where you want it"
        ) from None
    shutil.rmtree(aside)  # only the earlier build's own entries


@contextmanager
def build_folder(
    out: str | Path, spec: BuiltFolder, overwrite: bool = False, label: str | None = None
) -> Iterator[Path]:
    """``with build_folder(out, spec, overwrite) as staging:`` write the build into ``staging``; on leaving, it is
    installed as ``out`` (or, on an error, removed)."""
    out = Path(out)
    label = label or str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(out, label):
        _check_out(out, spec, overwrite, label)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            yield staging
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700 folders; give the usual permissions
        except BaseException:
            shutil.rmtree(staging)  # made above by this call
            raise
        _install(staging, out, (*spec.outputs, spec.marker), label)
