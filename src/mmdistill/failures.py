"""From an exception to one line and an exit code: the one place where the CLI turns failures into messages.

Exit codes: 0 success; 2 bad input (every :class:`~mmdistill.errors.MMDistillError` except
:class:`~mmdistill.errors.MachineError`, and argparse's usage errors); 1 the environment (an
``OSError`` such as a read-only folder or a full disk, no GPU, a DDP strategy that cannot start,
another run holding the folder, out of memory); 3 another DDP process of the run died; 130
interrupted (Ctrl-C). A torchvision that does not fit torch (met when torchmetrics imports it) is
the environment too, with what to do. Anything else is a bug and keeps its traceback. With the environment
variable ``MMDISTILL_DEBUG=1`` every exception is re-raised with its traceback (for developers).
"""

from __future__ import annotations

import errno
import os
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import MachineError, MMDistillError

BAD_INPUT, ENVIRONMENT, DDP_PEER_DIED, INTERRUPTED = 2, 1, 3, 130

_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device: free some space or choose a folder on another disk",
    errno.EDQUOT: "disk quota exceeded: free some space or choose a folder on another disk",
    errno.EROFS: "read-only file system: choose a writable folder",
    errno.EACCES: "permission denied: make it writable (or readable) for you, or choose another folder",
    errno.EPERM: "operation not permitted: choose another folder",
    errno.ENOTDIR: "a file is in the way where a folder is needed: move it or choose another folder",
    errno.EISDIR: "a folder is where a file was expected: give a file",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the file name is too long: choose a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.ELOOP: "too many levels of symbolic links: give a real path",
}


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def broken_torchvision(err: BaseException) -> MachineError | None:
    """A MachineError saying what to do when ``err`` came from importing a torchvision built for another torch.

    torchmetrics imports torchvision when it is installed; a torchvision compiled against another torch fails
    while registering its operators ("operator torchvision::nms does not exist", an undefined symbol, a partly
    initialised module). Told by the message or by a traceback frame inside torchvision; None otherwise.
    """
    if not isinstance(err, (ImportError, RuntimeError, AttributeError, OSError)):
        return None
    text = str(err)
    frames = traceback.extract_tb(err.__traceback__)
    said = re.search(r"torchvision::|module 'torchvision|torchvision[/\\]_C", text)
    if not said and not any(f"{os.sep}torchvision{os.sep}" in f.filename for f in frames):
        return None
    torch = _version("torch")
    return MachineError(
        f"the installed torchvision {_version('torchvision')} does not fit torch {torch} (importing it failed: "
        f"{text.splitlines()[0][:200] if text else type(err).__name__}); mmdistill does not need torchvision: "
        f"uninstall it (pip uninstall torchvision) or install the torchvision build made for torch {torch}"
    )


@contextmanager
def dependencies_checked() -> Iterator[None]:
    """Turn a broken torchvision met while importing a dependency (torchmetrics) into :func:`broken_torchvision`'s
    MachineError; any other error passes unchanged."""
    try:
        yield
    except (ImportError, RuntimeError, AttributeError, OSError) as err:
        known = broken_torchvision(err)
        if known is None:
            raise
        raise known from err


def user_exit(stop: SystemExit) -> tuple[int, str]:
    """(exit code, one line) for a ``SystemExit`` that escaped a command: mmdistill's commands return their exit
    code, so it came from the user's code (a dataset plugin, a factory, a transform calling ``sys.exit``), and the
    command did not finish, whatever the code it carried."""
    from .usercode import describe

    return BAD_INPUT, (
        f"the user's code raised {describe(stop)}, a sys.exit inside a plugin or factory, so the command stopped "
        "before it finished: remove that exit (MMDISTILL_DEBUG=1 shows the traceback)"
    )


def debugging() -> bool:
    return os.environ.get("MMDISTILL_DEBUG", "") not in ("", "0")


def _os_message(err: OSError, where: str | None) -> str:
    paths = [p for p in (err.filename, err.filename2) if p is not None]
    advice = _OS_ADVICE.get(err.errno or -1, f"{err.strerror or err}: check the path and its permissions")
    if paths:
        return f"{' -> '.join(map(str, paths))}: {advice}"
    return f"{advice} (while {where})" if where else advice


def explain(err: BaseException, where: str | None = None, resume_hint: str | None = None) -> tuple[int, str] | None:
    """(exit code, one-line message) for ``err``, or None when it is a bug that should keep its traceback.

    ``where`` says what the command was writing (e.g. "writing to --out runs/kd"), for OS errors
    without a file name; ``resume_hint`` is added to messages after which the run can be resumed.
    """
    hint = f"; {resume_hint}" if resume_hint else ""
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED, f"interrupted{hint}"
    if isinstance(err, MachineError):
        return ENVIRONMENT, str(err)
    if isinstance(err, MMDistillError):
        return BAD_INPUT, str(err)
    torchvision = broken_torchvision(err)
    if torchvision is not None:
        return ENVIRONMENT, str(torchvision)
    if type(err).__name__ == "SafetensorError" and "os error" in str(err):  # safetensors' Rust I/O errors
        found = re.search(r"os error (\d+)", str(err))
        err = OSError(int(found.group(1)), os.strerror(int(found.group(1)))) if found else err
    if isinstance(err, OSError):
        return ENVIRONMENT, _os_message(err, where) + (hint if err.errno in (errno.ENOSPC, errno.EDQUOT) else "")
    if isinstance(err, MemoryError):
        return ENVIRONMENT, f"out of memory: use a smaller trainer.batch_size or model, or more memory{hint}"
    if isinstance(err, RuntimeError):
        text = str(err)
        if "closed by peer" in text or "remote worker" in text:
            return DDP_PEER_DIED, (
                f"another DDP process of this run died, so the run stopped (resume it with "
                f"--resume). Distributed backend said: {text.splitlines()[0][:300]}"
            )
        if "out of memory" in text.lower():
            return ENVIRONMENT, f"out of memory on the accelerator: use a smaller trainer.batch_size or model{hint}"
    return None
