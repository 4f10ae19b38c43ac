"""Listeners told about every finished training epoch: a sweep's pruning, an experiment tracker.

    with listening(lambda report: print(report.epoch, report.values["val/accuracy"])):
        run_config(cfg, "runs/kd")

The trainer calls :func:`report_epoch` once per epoch on the process that writes (global rank 0), after the epoch's
checkpoint is written, so a listener that raises stops the run at a point ``--resume`` continues from. Listeners are
process-wide and stacked; :func:`listening` removes its listener on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch of one training run. ``values``: ``train/<term>``, ``val/<metric>`` (fractions, as the
    task's metrics compute them) and ``lr``; ``seconds`` and ``steps``: the epoch's training steps and their time."""

    out_dir: Path
    desc: str
    epoch: int
    values: dict[str, float]
    seconds: float
    steps: int


EpochListener = Callable[[EpochReport], None]
_LISTENERS: list[EpochListener] = []


@contextmanager
def listening(listener: EpochListener) -> Iterator[None]:
    """Call ``listener`` with an :class:`EpochReport` after every training epoch run inside the block."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


def report_epoch(report: EpochReport) -> None:
    """Tell every listener about ``report`` (in the order they started listening)."""
    for listener in list(_LISTENERS):
        listener(report)
