"""Calling the user's own code: import paths, factories, datasets and transforms.

Everything mmdistill runs on a user's behalf goes through :func:`import_path` (``"package.module:name"`` -> the
object) and :func:`call` (the object called). Whatever the user's code raises (anything, ``SystemExit`` included),
fails with at import (a ``SyntaxError``, an ``ImportError`` inside the module) or returns instead of what was
expected becomes one :class:`~mmdistill.errors.MMDistillError` whose message names the config key, the factory or
file, the original error (type, message, and the user's line that raised it) and what to do. Ctrl-C stays an
interrupt. With ``MMDISTILL_DEBUG=1`` the original exception is chained (``raise ... from err``), so its traceback
is shown for a real bug.
"""

from __future__ import annotations

import importlib
import os
import reprlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ConfigError, MMDistillError


def debugging() -> bool:
    """``MMDISTILL_DEBUG=1``: keep tracebacks (for developers); the switch of :func:`mmdistill.failures.debugging`."""
    return os.environ.get("MMDISTILL_DEBUG", "") not in ("", "0")


def cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (errors quote inputs, never unboundedly)."""
    return cut(reprlib.repr(value), limit)


@lru_cache(maxsize=1)
def _library_folders() -> tuple[str, ...]:
    """mmdistill's own folder, the standard library's and the installed packages' (read when first needed: an
    error is being described, so start-up does not pay for it)."""
    import sysconfig

    paths = (sysconfig.get_path("stdlib"), sysconfig.get_path("purelib"))
    return (str(Path(__file__).resolve().parent), *(str(Path(p).resolve()) for p in paths if p))


def _is_library(filename: str) -> bool:
    path = os.path.abspath(filename)
    return filename.startswith("<") or any(path.startswith(folder) for folder in _library_folders())


def where_raised(err: BaseException) -> str:
    """``file.py:12`` of the deepest frame of the user's code in ``err``'s traceback ('' when there is none)."""
    if isinstance(err, SyntaxError):  # its message names the file and line already
        return ""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    for frame in reversed(frames):
        if not _is_library(frame.filename):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return ""


def describe(err: BaseException) -> str:
    """``Type: first line of the message (at file.py:12)``: the original error, in one line."""
    lines = str(err).strip().splitlines()
    first = cut(" ".join(lines[0].split()), 300) if lines else ""
    at = where_raised(err)
    return f"{type(err).__name__}{': ' + first if first else ''}{f' (at {at})' if at else ''}"


def failed(
    err: BaseException, message: str, error: type[MMDistillError] = ConfigError, advice: str = ""
) -> MMDistillError:
    """The error to raise for ``err`` raised by the user's code: ``message: Type: text (at file:line); advice``.

    Raise it ``from kept(err)``: the original exception stays the cause only when debugging."""
    joiner = " " if message.endswith(" raised") else ": "
    return error(f"{message}{joiner}{describe(err)}{'; ' + advice if advice else ''}")


def kept(err: BaseException) -> BaseException | None:
    """The cause to chain: ``err`` with ``MMDISTILL_DEBUG=1`` (its traceback shows), else None (one line)."""
    return err if debugging() else None


def _at(key: str) -> str:
    return f"{key}: " if key else ""


USER_ERRORS = (Exception, SystemExit)  # anything the user's code raises, except Ctrl-C (KeyboardInterrupt)


def import_module(name: str, key: str) -> ModuleType:
    """The module ``name``; one that is missing, or fails while importing (a syntax error, an ImportError inside it,
    any exception or ``sys.exit``), is a ConfigError naming ``key`` and the module."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            raise ConfigError(
                f"{_at(key)}cannot import module {short(name, 200)} ({err}); is its package installed or on PYTHONPATH?"
            ) from None
        raise failed(
            err, f"{_at(key)}importing module {short(name, 200)} failed", advice="fix the import in it"
        ) from kept(err)
    except USER_ERRORS as err:
        raise failed(err, f"{_at(key)}importing module {short(name, 200)} failed", advice="fix the module") from kept(
            err
        )


def import_path(path: Any, key: str, what: str = "a function or class") -> Callable[..., Any]:
    """``"package.module:attr.attr"`` -> the callable it names; anything else is a ConfigError naming ``key``."""
    module_name, sep, attr = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{_at(key)}expected 'package.module:callable' (a module path, a colon, a name), got {short(path)}"
        )
    obj: Any = import_module(module_name, key)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{_at(key)}module {short(module_name)} has no attribute {short(attr)}") from None
        except USER_ERRORS as err:  # a module-level __getattr__ or a property that raises
            raise failed(err, f"{_at(key)}reading {short(path)} failed") from kept(err)
    if not callable(obj):
        raise ConfigError(f"{_at(key)}{short(path)} is a {type(obj).__name__}, not {what}")
    return obj


def call(fn: Callable[..., Any], key: str, source: str, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, the user's code: whatever it raises is a ConfigError ``key: source raised ...``.

    mmdistill's own errors raised inside (e.g. by mmdistill functions the factory calls) pass unchanged."""
    try:
        return fn(*args, **kwargs)
    except MMDistillError:
        raise
    except USER_ERRORS as err:
        if isinstance(err, TypeError) and _is_call_mismatch(err):
            raise ConfigError(f"{_at(key)}{source} does not take these arguments ({err})") from None
        raise failed(
            err, f"{_at(key)}{source} raised", advice="fix it, or set MMDISTILL_DEBUG=1 for the traceback"
        ) from kept(err)


def _is_call_mismatch(err: TypeError) -> bool:
    """The TypeError is about the call itself (an unknown or missing argument), not raised inside the callee."""
    tb = err.__traceback__
    return tb is not None and tb.tb_next is None and "argument" in str(err)
