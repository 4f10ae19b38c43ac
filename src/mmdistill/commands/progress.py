"""Progress of a command's long work, told the way its reader sees it.

On a terminal a tqdm bar (redrawn in place); when stderr is not a terminal (``2> log.txt``, nohup, a cluster
scheduler) one line per finished step, ``demo 2/5 mfh-gamma: done in 12 s``, so a batch job's log holds no bar
redraws; with ``quiet`` nothing. Training's per-epoch progress follows the same rule (:mod:`mmdistill.engine.logging`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def steps(items: Sequence[tuple[str, T]], desc: str, quiet: bool = False) -> Iterator[tuple[str, T]]:
    """Yield ``(name, item)`` pairs, showing progress over them on stderr (see the module docstring)."""
    if quiet:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(items, desc=desc, unit="step")
        for name, item in bar:
            bar.set_postfix_str(name)
            start = time.perf_counter()
            yield name, item
            tqdm.write(f"  {name}: done in {time.perf_counter() - start:.0f} s")
        return
    for i, (name, item) in enumerate(items, 1):
        start = time.perf_counter()
        yield name, item
        print(
            f"{desc} {i}/{len(items)} {name}: done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True
        )
