"""Progress of a command's long work, told the way its reader sees it.

On a terminal a tqdm bar (redrawn in place); when stderr is not a terminal (``2> log.txt``, nohup, a cluster
scheduler) one line per finished step, ``demo 2/5 mfh-gamma: done in 12 s``, so a batch job's log holds no bar
redraws; with ``quiet`` nothing. Training's per-epoch progress follows the same rule
(:mod:`mmdistill.engine.system.logging`).
A study announces each finished part (:mod:`mmdistill.studies.progress`); :func:`part_lines` prints them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
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


def part_lines(desc: str) -> Callable[[str], None]:
    """A listener for :func:`mmdistill.studies.progress.announce`: one stderr line per finished part of a study,
    ``reproduce msd: av-digits seed 2: teacher and 6 students trained (41 s)``, with the time since the last one."""
    last = [time.perf_counter()]

    def line(part: str) -> None:
        now = time.perf_counter()
        text = f"{desc}: {part} ({now - last[0]:.0f} s)"
        if sys.stderr.isatty():  # above a progress bar that may be on screen, not through it
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)
        last[0] = now

    return line
