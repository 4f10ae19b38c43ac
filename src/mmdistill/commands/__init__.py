"""The sub-commands of ``mmdistill`` (one module each) and the argparse value types they share.

Every numeric option is read by :func:`integer` or :func:`number`, so every one has a lower and an upper bound and a
value outside them is one line naming the option (``--epochs: must be a positive integer up to 1000000, got 0``)
before anything runs. The named types below are the common cases.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

MAX_COUNT = 1_000_000  # epochs, steps, permutations, rows: more would run for days
MAX_SEEDS = 10_000
MAX_WIDTH = 65_536  # hidden widths, feature dimensions


def integer(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in [low, high] (``3.0`` and ``1e3`` are refused: an integer is meant)."""

    def read(text: str) -> int:
        wanted = f"a positive integer up to {high}" if low == 1 else f"an integer in [{low}, {high}]"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    read.bounds = (low, high)  # type: ignore[attr-defined]  # what the option accepts, for --help readers and tests
    return read


def number(low: float, high: float, above: bool = False, below: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high]; ``above``: greater than ``low``; ``below``: less than ``high``."""
    shown = f"{'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"

    def read(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {shown}, got {text!r}") from None
        inside = (value > low if above else value >= low) and (value < high if below else value <= high)
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"must be a number in {shown}, got {text}")
        return value

    read.bounds, read.open = (low, high), (above, below)  # type: ignore[attr-defined]
    return read


positive_int = integer(1, MAX_COUNT)  # steps, epochs, rows, permutations
seeds_count = integer(1, MAX_SEEDS)  # --seeds: how many seeds
seed_int = integer(0, 2**32 - 1)  # a seed, as torch and numpy take it
width = integer(1, MAX_WIDTH)  # a hidden width
unit_interval = number(0.0, 1.0)  # a noise level: dropout probability, Gaussian std in feature stds
fraction = number(0.0, 1.0, above=True)  # a fraction kept
positive_float = number(0.0, 100.0, above=True)  # a learning rate
threads = integer(1, 4 * (os.cpu_count() or 1))  # torch threads: beyond four per CPU only slows the run
