"""Output folders: the one place where mmdistill claims, locks, cleans and releases a ``--out`` folder.

A folder is *ours* only if it holds the marker ``.mmdistill-run.json`` (written when mmdistill
claims it: run id, mmdistill version, command, creation time). The rules, for every command with ``--out``:

* missing or empty folder: claimed (created if missing, with the marker);
* non-empty folder without the marker: refused by name; nothing in it is touched;
* a folder of another command (say a ``demo`` folder given to ``train``): refused;
* a finished run (its ``finished`` file exists): refused unless ``--overwrite``;
* an interrupted run (marker, some outputs, no ``finished`` file): refused unless ``--resume``
  (continue it) or ``--overwrite`` (replace it) — a restart never deletes checkpoints silently;
* ``--overwrite`` removes only the entries that the command's layout recognises as its outputs, and
  refuses (naming them) if anything else is mixed in; symbolic links inside are foreign. Each command
  declares its own layout (:func:`register_layout`): this module knows no command's file names;
* a run in progress: a POSIX record lock (:mod:`mmdistill.locks`) on ``.mmdistill-lock`` is held for the
  whole run, so a second process (or a second claim in the same process) is refused with "a run is
  in progress in DIR (pid N)"; forked children (DataLoader workers) do not inherit it, and the OS
  drops it the moment the process dies, which leaves an interrupted (resumable) run;
* a resumed folder loses its stale temp files (``.NAME.*.tmp`` of a write killed half-way);
* ``protect``: files (e.g. ``teacher.checkpoint``) that must survive: replacing a folder that
  holds one is refused;
* a symbolic link as ``--out`` is resolved and its target follows the same rules; a dangling
  link or a link loop is refused.

On an error before anything worth keeping was written, :meth:`RunFolder.discard` removes what
this claim wrote (and the folders it created), so no partial folder is left.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from ... import locks
from ...errors import MachineError, OutputBusyError, OutputExistsError

MARKER = ".mmdistill-run.json"
LOCK = ".mmdistill-lock"
ANYWHERE = (MARKER, LOCK, ".*.tmp")  # ours in any folder of a run: marker, lock, atomic-write temp files


class RunOf(str):
    """A layout entry for a sub-folder that is a whole run folder of another kind: ``{"part_*": RunOf("train")}``."""


class Prepared:
    """A layout entry for a file written when a run starts, before any work (its resolved config): a folder
    holding only such files has nothing to lose."""


PREPARED = Prepared()

Layout = dict[str, Union[None, Prepared, RunOf, "Layout"]]  # pattern -> None (a file), PREPARED, RunOf or a folder
ALL: Layout = {"*": None}  # a folder whose whole content mmdistill writes (a teacher cache inside the run folder)
EVERY_RUN = "*"  # the kind whose layout every run folder shares (a report written into any of them)

LAYOUTS: dict[str, Layout] = {}  # kind of run -> what it writes; filled by the commands (register_layout)
RESUMABLE: set[str] = set()  # kinds whose interrupted runs continue with --resume
FINISHED: dict[str, str] = {}  # kind -> the file whose presence says a run of that kind finished


def register_layout(kind: str, layout: Layout, resumable: bool = False, finished: str | None = None) -> None:
    """Declare what a command writes into its ``--out`` folder of ``kind`` (the names ``--overwrite`` may remove).

    Each command or study declares its own outputs; a command that writes into another's folder (an evaluation
    added to a ``train`` run) adds its part under that kind, and ``kind`` :data:`EVERY_RUN` adds to every run
    folder. ``resumable``: an interrupted run of this kind continues with ``--resume``; ``finished``: the file that
    a finished run of this kind holds (:func:`finished_file`).
    """
    _merge(LAYOUTS.setdefault(kind, {}), layout)
    if resumable:
        RESUMABLE.add(kind)
    if finished is not None:
        FINISHED[kind] = finished


def finished_file(kind: str) -> str:
    """The file whose presence says a ``kind`` run finished (declared with :func:`register_layout`)."""
    layout_of(kind)  # a kind nobody registered is a bug, named
    if kind not in FINISHED:
        raise LookupError(f"no finished file is registered for a '{kind}' run folder (runfolder.register_layout)")
    return FINISHED[kind]


def _merge(into: Layout, layout: Layout) -> None:
    for pattern, sub in layout.items():
        known = into.get(pattern)
        if isinstance(known, dict) and isinstance(sub, dict) and known is not ALL and sub is not ALL:
            merged = dict(known)  # never change a layout object that another declaration may share
            _merge(merged, sub)
            into[pattern] = merged
        else:
            into[pattern] = sub


def layout_of(kind: str) -> Layout:
    """The registered layout of a ``kind`` run folder, with what every run folder may hold."""
    if kind not in LAYOUTS:
        raise LookupError(f"no output layout is registered for a '{kind}' run folder (runfolder.register_layout)")
    return {**LAYOUTS.get(EVERY_RUN, {}), **LAYOUTS[kind]}


def _version() -> str:
    from ... import __version__

    return __version__


def _matches(name: str, layout: Layout) -> tuple[bool, Layout | Prepared | RunOf | None]:
    for pattern in ANYWHERE:
        if fnmatch.fnmatchcase(name, pattern):
            return True, None
    for pattern, sub in layout.items():
        if fnmatch.fnmatchcase(name, pattern):
            return True, sub
    return False, None


def _any_match(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def classify(folder: Path, layout: Layout) -> tuple[list[Path], list[Path]]:
    """(ours, foreign) entries under ``folder``; ``ours`` lists files before their folders (deletion order)."""
    ours: list[Path] = []
    foreign: list[Path] = []
    for entry in sorted(folder.iterdir()):
        known, sub = _matches(entry.name, layout)
        if isinstance(sub, RunOf):
            sub = layout_of(sub)
        elif isinstance(sub, Prepared):  # PREPARED, the one instance
            sub = None
        if not known or entry.is_symlink():  # mmdistill never makes links: a link is someone else's
            foreign.append(entry)
        elif entry.is_dir():
            if layout is ALL:
                sub = ALL
            if sub is None:
                foreign.append(entry)
            else:
                o, f = classify(entry, sub)
                ours += o
                foreign += f
                ours.append(entry)
        elif sub is None and entry.is_file():
            ours.append(entry)
        else:
            foreign.append(entry)
    return ours, foreign


def _names(paths: Iterable[Path], root: Path, limit: int = 5) -> str:
    paths = list(paths)
    shown = ", ".join(str(p.relative_to(root)) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def read_marker(folder: Path) -> dict | None:
    """The marker of an mmdistill run folder, or None if ``folder`` is not one."""
    path = folder / MARKER
    if not path.is_file() or path.is_symlink():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("mmdistill") == "run folder" else None


def resolve_out(out: str | Path, option: str = "--out") -> Path:
    """``out`` as an absolute path, symbolic links resolved; a dangling link or a loop is refused."""
    out = Path(out)
    try:
        resolved = out.resolve(strict=False)
    except RuntimeError:  # a symlink loop (Python < 3.13)
        raise OutputExistsError(f"{option} {out}: a symbolic link loop; give a real folder") from None
    if out.is_symlink() and not resolved.exists():
        raise OutputExistsError(
            f"{option} {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
            f"create the target folder or give another {option}"
        )
    if resolved.exists() and not resolved.is_dir():
        raise OutputExistsError(f"{option} {out} exists and is not a folder")
    return resolved


def launching_process() -> bool:
    """True in the process the user started, False in a DDP worker that Fabric's launcher started (it must not
    claim the folder: rank 0 holds it)."""
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def _holder(folder: Path) -> str:
    return locks.holder(folder / LOCK)


def _is_locked(folder: Path) -> bool:
    return locks.is_locked(folder / LOCK)


@dataclass
class Plan:
    """What claiming a folder will do: ``new`` (missing/empty), ``resume`` (keep the work) or ``replace``."""

    path: Path
    action: str
    marker: dict | None = None
    doomed: list[Path] = field(default_factory=list)


def check(
    out: str | Path,
    kind: str,
    finished: str,
    overwrite: bool = False,
    resume: bool = False,
    protect: Iterable[Path] = (),
    option: str = "--out",
    locked_by_us: bool = False,
) -> Plan:
    """Decide what claiming ``out`` for command ``kind`` would do, or raise; reads only, writes nothing."""
    path = resolve_out(out, option)
    if not path.exists() or not any(e.name != LOCK for e in path.iterdir()):
        return Plan(path, "new")
    marker = read_marker(path)
    if marker is None:
        entries = sorted(e.name for e in path.iterdir())
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise OutputExistsError(
            f"{option} {out} is a non-empty folder that is not an mmdistill run (it holds "
            f"{shown}); mmdistill never writes into or deletes such a folder: "
            f"choose a new or empty folder"
        )
    if marker.get("command") != kind:
        raise OutputExistsError(
            f"{option} {out} holds an mmdistill '{marker.get('command')}' run, not a '{kind}' run; "
            f"choose another folder"
        )
    if not locked_by_us and _is_locked(path):
        raise OutputBusyError(
            f"a run is in progress in {path} (pid {_holder(path)}); wait for it to end or choose another {option}"
        )
    done = (path / finished).is_file()
    if resume and not overwrite:
        return Plan(path, "resume", marker)
    if not overwrite:
        if done:
            raise OutputExistsError(f"{path} already holds a finished run ({finished}); pass --overwrite to replace it")
        prepared = {p for p, sub in layout_of(kind).items() if sub is PREPARED}
        work = [e for e in path.iterdir() if e.name not in (MARKER, LOCK) and not _any_match(e.name, prepared)]
        if not work:  # claimed, then stopped before any work: nothing to lose
            return Plan(path, "replace", marker, classify(path, layout_of(kind))[0])
        how = "use --overwrite to replace it"
        if kind in RESUMABLE:
            how = "use --resume to continue it or --overwrite to replace it"
        raise OutputExistsError(f"an interrupted run is here: {path} ({finished} is missing); {how}")
    ours, foreign = classify(path, layout_of(kind))
    if foreign:
        raise OutputExistsError(
            f"{option} {out}: --overwrite replaces only mmdistill's own outputs, and this folder "
            f"also holds {_names(foreign, path)}; move those away or choose another folder"
        )
    for p in protect:
        p = Path(p).resolve()
        if p == path or path in p.parents:
            raise OutputExistsError(
                f"{p} lies inside {option} {out}, which --overwrite would replace; "
                f"copy it out of the folder first or choose another {option}"
            )
    return Plan(path, "replace", marker, ours)


class RunFolder:
    """A claimed output folder: marker written, lock held until :meth:`release` (or the process ends)."""

    def __init__(self, plan: Plan, kind: str, info: dict, created: list[Path]) -> None:
        self.path, self.kind, self.plan, self.created = plan.path, kind, plan, created
        self._fd: int | None = None
        self._info = info

    def _lock(self) -> None:
        """Take the folder's run lock (:mod:`mmdistill.locks`: never inherited by forked workers, free when the
        holder dies); held by another process or by this one: OutputBusyError naming its pid."""
        try:
            self._fd = locks.acquire(self.path / LOCK)
        except locks.Busy as busy:
            who = f"{busy.holder}, this process" if busy.holder == str(os.getpid()) else busy.holder
            raise OutputBusyError(
                f"a run is in progress in {self.path} (pid {who}); wait for it to end or choose another folder"
            ) from None
        except OSError as err:
            if err.filename is not None:  # the lock file could not be made: the OS error names it
                raise
            raise MachineError(
                f"{self.path / LOCK}: cannot lock the output folder ({err.strerror}); its file "
                f"system does not support locks: choose a folder on a local disk"
            ) from None

    def _write_marker(self) -> None:
        from ...io import write_json

        old = self.plan.marker if self.plan.action == "resume" else None
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        marker = (
            dict(old)
            if old
            else {
                "mmdistill": "run folder",
                "run_id": uuid.uuid4().hex,
                "version": _version(),
                "command": self.kind,
                "created": created,
            }
        )
        marker.update(self._info)
        if marker != old:
            write_json(self.path / MARKER, marker)

    def update_marker(self, **info) -> None:
        from ...io import write_json

        marker = read_marker(self.path) or {}
        marker.update(info)
        write_json(self.path / MARKER, marker)

    def discard(self) -> None:
        """Remove what this claim wrote: the command's outputs, marker and lock, and the folders it created."""
        if self.plan.action == "resume" or not self.path.is_dir():
            return
        self.release()
        try:
            ours, _ = classify(self.path, layout_of(self.kind))
            _remove(ours)  # includes the marker and the lock file
            for folder in self.created:  # deepest first; only if empty (never anything else)
                folder.rmdir()
        except OSError:
            pass  # best effort (e.g. a read-only or full disk): the error that stopped the run is the one to report

    def release(self) -> None:
        if self._fd is not None:
            locks.release(self._fd)
            self._fd = None


def _remove(paths: list[Path]) -> None:
    for p in paths:  # files before their folders (classify's order)
        if p.is_dir() and not p.is_symlink():
            try:
                p.rmdir()
            except OSError as err:
                if err.errno != errno.ENOTEMPTY:
                    raise
        else:
            p.unlink(missing_ok=True)


def claim(
    out: str | Path,
    kind: str,
    finished: str,
    overwrite: bool = False,
    resume: bool = False,
    protect: Iterable[Path] = (),
    info: dict | None = None,
    option: str = "--out",
) -> RunFolder:
    """Claim ``out`` for command ``kind`` (see the module docstring); the checks are repeated under the lock."""
    protect = list(protect)
    plan = check(out, kind, finished, overwrite, resume, protect, option)
    created = []
    for parent in [plan.path, *plan.path.parents]:
        if parent.exists():
            break
        created.append(parent)
    plan.path.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(plan, kind, dict(info or {}), created)
    try:
        folder._lock()
        folder.plan = plan = check(plan.path, kind, finished, overwrite, resume, protect, option, locked_by_us=True)
        _remove([p for p in plan.doomed if p != plan.path / LOCK])  # the lock file stays: we hold it
        if plan.action == "resume":  # under the lock no one else writes here: a temp file is a killed write's leftover
            ours = classify(plan.path, layout_of(kind))[0]
            _remove([p for p in ours if fnmatch.fnmatchcase(p.name, ".*.tmp") and p.is_file()])
        folder._write_marker()
    except BaseException:
        folder.release()
        if plan.action == "new":
            try:
                if not any(e.name not in (LOCK, MARKER) for e in plan.path.iterdir()):
                    for name in (MARKER, LOCK):
                        if (plan.path / name).exists():
                            (plan.path / name).unlink()
                for d in created:
                    d.rmdir()
            except OSError:
                pass  # the clean-up is best effort; the first error is the one to report
        raise
    return folder


@contextmanager
def owned(
    out: str | Path,
    kind: str,
    finished: str,
    overwrite: bool = False,
    resume: bool = False,
    protect: Iterable[Path] = (),
    info: dict | None = None,
    keep: Callable[[Path], bool] = lambda path: False,
) -> Iterator[RunFolder]:
    """``with owned(args.out, "salience", "scores.csv", args.overwrite) as folder:`` write into ``folder.path``.

    On any error or Ctrl-C, what this claim wrote is removed unless ``keep(folder.path)`` says it is
    worth keeping (e.g. a training checkpoint to resume from); the lock is released either way.
    """
    folder = claim(out, kind, finished, overwrite, resume, protect, info)
    try:
        yield folder
    except BaseException:
        if not keep(folder.path):
            folder.discard()
        raise
    finally:
        folder.release()


def guard_model_folder(
    out_dir: str | Path, resume: bool = False, overwrite: bool = False, check_only: bool = False
) -> Path:
    """The Python API's rule for ``distill(out_dir=...)``: write only into a folder that mmdistill owns, and never
    replace a run silently.

    ``out_dir`` may be missing or empty (it is created and marked as a ``distill`` folder), inside a run folder that
    this process claimed and holds (a part of a ``train`` run or a study: the command that claimed it owns the
    layout), or an earlier ``distill`` folder: a finished one (its finished file) or an interrupted one is refused
    unless ``resume`` (continue it) or ``overwrite`` (its outputs removed first; refused when anything else is mixed
    in). Refused by name, nothing touched: another command's run folder (its root, or a folder inside it that no run
    of this process holds) and any other non-empty folder. ``check_only``: the refusals only; nothing is written.
    """
    path = resolve_out(out_dir, "out_dir")
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"out_dir {out_dir} exists and is not a folder")
    marker = read_marker(path)
    owner = next((p for p in path.parents if read_marker(p) is not None), None)
    if marker is None and owner is not None:
        if locks.held_here(owner / LOCK):
            return path
        command = (read_marker(owner) or {}).get("command")
        raise OutputExistsError(
            f"out_dir {out_dir} lies inside {owner}, an mmdistill '{command}' run folder "
            "that no run of this process holds; distill() does not write into another run: choose a folder outside it"
        )
    if marker is not None and marker.get("command") != "distill":
        raise OutputExistsError(
            f"out_dir {out_dir} holds an mmdistill '{marker.get('command')}' run; distill() would write over its "
            "files: choose a new or empty folder"
        )
    if marker is not None:
        _distill_again(path, out_dir, resume, overwrite, check_only)
        return path
    if path.is_dir() and any(path.iterdir()):
        foreign = classify(path, {})[1]
        raise OutputExistsError(
            f"out_dir {out_dir} is a non-empty folder that mmdistill did not create (it holds "
            f"{_names(foreign, path)}); mmdistill never writes into or deletes such a "
            f"folder: choose a new or empty folder"
        )
    if check_only:
        return path
    path.mkdir(parents=True, exist_ok=True)
    from ...io import write_json

    write_json(
        path / MARKER,
        {
            "mmdistill": "run folder",
            "run_id": uuid.uuid4().hex,
            "version": _version(),
            "command": "distill",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return path


def _distill_again(path: Path, out_dir: str | Path, resume: bool, overwrite: bool, check_only: bool) -> None:
    """An earlier ``distill`` folder: continued (``resume``), emptied of its outputs (``overwrite``), else refused."""
    if overwrite:
        ours, foreign = classify(path, layout_of("distill"))
        if foreign:
            raise OutputExistsError(
                f"out_dir {out_dir}: overwrite=True replaces only mmdistill's own outputs, and this folder also "
                f"holds {_names(foreign, path)}; move those away or choose another folder"
            )
        if not check_only:
            _remove([p for p in ours if p != path / MARKER])
    elif not resume and (path / finished_file("distill")).is_file():
        raise OutputExistsError(
            f"out_dir {out_dir} already holds a finished distill() run ({finished_file('distill')}); pass "
            "resume=True to keep it (nothing is retrained), overwrite=True to replace it, or choose another folder"
        )
    elif not resume and any(e.name not in (MARKER, LOCK) for e in path.iterdir()):
        raise OutputExistsError(
            f"an interrupted distill() run is here: {path} ({finished_file('distill')} is missing); pass "
            "resume=True to continue it or overwrite=True to replace it"
        )
