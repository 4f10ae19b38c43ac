"""Start-up time of the command line: imports and the wall time to the first training step.

Measures, each ``--repeats`` times (median), one thread:

* ``python -c "import torch"``, the floor;
* ``python -c "import mmdistill.engine.api"``, what ``train`` imports;
* ``mmdistill train <config> --seeds 1 trainer.epochs=1 --quiet``: the seconds from process start to the
  first training step (the trainer prints the Unix time of its first step on stderr when
  ``MMDISTILL_TRACE_STARTUP=1``: one line, ``mmdistill: first training step at unix time <t>``), and the
  wall time of the whole command.

Usage: ``PYTHONPATH=src python benchmarks/bench_startup.py [--repeats 3] [--config src/mmdistill/configs/demo.yaml]``
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    launched = time.time()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stderr, launched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="src/mmdistill/configs/demo.yaml")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MMDISTILL_TRACE_STARTUP="1")
    py = sys.executable
    rows: dict[str, list[float]] = {
        "import torch": [],
        "import mmdistill.engine.api": [],
        "train: first training step": [],
        "train: whole command": [],
    }
    for _ in range(args.repeats):
        rows["import torch"].append(timed([py, "-c", "import torch"], env)[0])
        rows["import mmdistill.engine.api"].append(timed([py, "-c", "import mmdistill.engine.api"], env)[0])
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "run")
            command = [
                py,
                "-m",
                "mmdistill",
                "train",
                args.config,
                "--seeds",
                "1",
                "trainer.epochs=1",
                "trainer.num_threads=1",
                "--out",
                out,
                "--quiet",
            ]
            wall, err, launched = timed(command, env)
        found = re.search(r"first training step at unix time ([0-9.]+)", err)
        if found is None:
            raise SystemExit(f"no start-up trace line on stderr:\n{err[-2000:]}")
        rows["train: first training step"].append(float(found.group(1)) - launched)
        rows["train: whole command"].append(wall)
    print(f"{'what':34s} {'median s':>9s}  runs")
    for name, values in rows.items():
        print(f"{name:34s} {statistics.median(values):9.2f}  " + " ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
