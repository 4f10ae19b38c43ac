"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A temp file is named ``.<target>.mmdistill-<host>-<pid>-<random>.tmp`` in the target's folder,
so that one left by a killed process can be recognised as ours and swept
(:func:`sweep_stale_temp_files`): its process is gone (same host), or it is older than a day.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STALE_TEMP_SECONDS = 24 * 3600  # a temp file of another host's process is stale after this long
_TEMP_RE = re.compile(r"^\..+\.mmdistill-(?P<host>[A-Za-z0-9_]*)-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:64]


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file in the target folder, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.mmdistill-{_host()}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, default_file_mode())  # mkstemp makes 0600 files; give the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def sweep_stale_temp_files(folder: str | Path, max_age_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove temp files of :func:`atomic_write` in ``folder`` whose writer is gone; return them.

    Only names of our pattern are considered; one is stale when it was made on this host by a
    process that no longer exists, or (any host) when it is older than ``max_age_s``. Nothing
    else in the folder is touched.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    host, now = _host(), time.time()
    for entry in os.scandir(folder):
        m = _TEMP_RE.match(entry.name)
        if not m or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > max_age_s
            pid = int(m["pid"])
            if old or (m["host"] == host and pid != os.getpid() and not _pid_alive(pid)):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone already, or not ours to remove (permissions): leave it
            continue
    return removed


def write_text(path: str | Path, text: str) -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write(path, w)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def csv_text(rows: Sequence[dict], fields: Sequence[str] | None = None, float_format: str | None = None) -> str:
    """``rows`` as CSV text with a header: columns ``fields`` (default: the first row's keys; other keys are
    left out), floats written with ``float_format`` (e.g. ``".6g"``) when given, ``\\n`` line ends."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields or rows[0]), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: (format(v, float_format) if float_format and isinstance(v, float) else v) for k, v in row.items()}
        )
    return buf.getvalue()


def write_csv(
    path: str | Path, rows: Sequence[dict], fields: Sequence[str] | None = None, float_format: str | None = None
) -> Path:
    """:func:`csv_text` of ``rows``, written atomically."""
    return write_text(path, csv_text(rows, fields, float_format))
