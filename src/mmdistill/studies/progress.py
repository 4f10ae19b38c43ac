"""Progress of a study's long work: each finished part (one seed's models) is announced to whoever listens.

The ``reproduce`` and ``demo`` commands listen (:func:`listening`) and print one line per part on stderr, so a study
that trains for an hour is never silent; a study run from Python says nothing unless told.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_listeners: list[Callable[[str], None]] = []


def announce(part: str) -> None:
    """Tell the listeners that ``part`` (e.g. ``"mfeat seed 3"``) is done."""
    for listen in list(_listeners):
        listen(part)


@contextmanager
def listening(listen: Callable[[str], None]) -> Iterator[None]:
    """``with listening(print_line): run_study(...)``: ``listen`` hears every :func:`announce` meanwhile."""
    _listeners.append(listen)
    try:
        yield
    finally:
        _listeners.remove(listen)
