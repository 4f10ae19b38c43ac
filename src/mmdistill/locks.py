"""The one kind of lock mmdistill takes on its output folders: a POSIX record lock (``fcntl.lockf``) on a lock file.

The kernel ties the lock to the process that took it: a forked child (a DataLoader worker) never holds it, and it
is gone the instant its owner dies, so a killed run never keeps its folder "in progress". (``flock`` is shared with
forked children through the open file: an orphaned worker kept a killed run's folder locked.) Its one trap: closing
*any* descriptor of the file drops the process's lock, so this process never opens a lock file it holds
(:data:`_HELD`); holding a lock also does not keep out this same process, so :func:`acquire` refuses that too.
The lock file holds the holder's pid, for messages.

Users: the run folder (:mod:`mmdistill.engine.system.runfolder`, a lock file inside the folder for the whole run) and
``data build`` (:mod:`mmdistill.data.builders.build_output`, a lock file beside the output folder, removed after).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HELD: dict[tuple[int, int], int] = {}  # (device, inode) of a lock file this process holds -> its descriptor


class Busy(Exception):
    """Another process (or this one) holds the lock; ``holder`` is its pid as the lock file says it."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _busy(err: OSError) -> bool:
    return err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def held_here(lock: Path) -> bool:
    """Whether this process holds ``lock``."""
    try:
        st = lock.stat()
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in _HELD


def holder(lock: Path) -> str:
    """The pid written in ``lock`` by its holder ('unknown' if unreadable)."""
    if held_here(lock):
        return str(os.getpid())
    try:
        return lock.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def is_locked(lock: Path) -> bool:
    """Whether some process holds ``lock`` (probed with a read lock, never disturbing this process's own)."""
    if not lock.is_file():
        return False
    if held_here(lock):
        return True
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused while a holder has the write lock
    except OSError as err:
        if _busy(err):
            return True
        raise
    finally:
        os.close(fd)  # closing drops the probe's lock
    return False


def acquire(lock: Path) -> int:
    """Take ``lock`` (created if missing) and write this pid into it; returns the descriptor for :func:`release`.

    Raises :class:`Busy` when another process or this one holds it, and ``OSError`` when the file system cannot
    lock (a network share without lock support)."""
    if held_here(lock):
        raise Busy(str(os.getpid()))
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if _busy(err):
            raise Busy(holder(lock)) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    st = os.fstat(fd)
    _HELD[(st.st_dev, st.st_ino)] = fd
    return fd


def release(fd: int) -> None:
    """Drop the lock taken by :func:`acquire` (closing its descriptor drops it)."""
    st = os.fstat(fd)
    _HELD.pop((st.st_dev, st.st_ino), None)
    os.close(fd)


@contextmanager
def temporary(lock: Path) -> Iterator[None]:
    """Hold ``lock`` for the ``with`` block and remove the file after (while still holding it). A file that the
    previous holder removed between our open and our lock is not the lock any more: taken again on the new file."""
    while True:
        fd = acquire(lock)
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        release(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while held: the next holder opens a new file
        release(fd)
