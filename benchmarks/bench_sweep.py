"""Sweep throughput: the same jobs run one after the other, by a 1-worker sweep and by a 2-worker sweep.

    python benchmarks/bench_sweep.py [--epochs 4] [--rows 3000] [--workdir DIR]

A 2-method x 4-setting grid (kd, dkd; temperature x learning rate) on toy-two-modality, one tune seed and two final
seeds: 3 teachers, 8 trials and 5 final jobs (10 runs), 21 runs in all. In order, each in a fresh process:

1. ``sweep --workers 1`` (the CLI, timed from start to exit);
2. ``sequential``: every run of that sweep, read back from its folders (their ``config.yaml``), trained again by
   ``run_config`` one after the other in one process (own teacher cache): the work without the sweep around it;
3. ``sweep --workers 2``.

Prints one Markdown row per mode (wall time, runs per minute, speed-up over sequential) and the overhead per job of
the 1-worker sweep over the sequential runs; checks that both sweeps wrote the same final table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SEQUENTIAL = """
import sys, time, yaml
from pathlib import Path
from mmdistill.config import load_config
from mmdistill.engine.protocol import run_config
sweep, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = sorted(sweep.glob("teachers/*/s*")) + sorted(sweep.glob("trials/*/s*")) + sorted(sweep.glob("final/*/s*"))
start = time.perf_counter()
for i, run in enumerate(runs):
    seed = int(run.name[1:])
    cfg = load_config(run / "config.yaml", [f"cache.dir={out / 'cache'}"])
    run_config(cfg, out / f"{i:03d}", [seed], baseline=False, quiet=True)
print(len(runs), time.perf_counter() - start)
"""


def write_sweep(folder: Path, epochs: int, rows: int) -> Path:
    base = {
        "data": {"name": "toy-two-modality", "params": {"n": rows}},
        "teacher": {
            "model": {"modalities": ["a", "b"], "encoder": {"type": "mlp", "hidden": [256, 256], "out_dim": 64}}
        },
        "student": {"model": {"modalities": ["b"], "encoder": {"type": "mlp", "hidden": [128, 128], "out_dim": 32}}},
        "trainer": {"epochs": epochs, "batch_size": 32},
    }
    sweep = {
        "base": "base.yaml",
        "methods": ["kd", "dkd"],
        "space": {"method.params.temperature": [1, 4], "trainer.optimizer.lr": [0.001, 0.003]},
        "seeds": {"tune": 1, "final": 2},
    }
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return folder / "sweep.yaml"


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def timed(command: list[str], capture: bool = False) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, its stdout)."""
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, children_cpu() - cpu, done.stdout


def final_table(out: Path) -> list[dict]:
    with open(out / "final.csv") as f:
        return [{k: v for k, v in row.items() if k != "ms_per_step"} for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    work.mkdir(parents=True, exist_ok=True)
    path = write_sweep(work, args.epochs, args.rows)
    sweep = [sys.executable, "-m", "mmdistill", "sweep", str(path), "--quiet"]
    one, one_cpu, _ = timed([*sweep, "--out", str(work / "w1"), "--workers", "1"])
    sequential, seq_cpu, printed = timed([sys.executable, "-c", SEQUENTIAL, str(work / "w1"), str(work / "sequential")])
    runs, inner = printed.split()
    two, two_cpu, _ = timed([*sweep, "--out", str(work / "w2"), "--workers", "2"])
    assert final_table(work / "w1") == final_table(work / "w2"), "the two sweeps' final tables differ"
    jobs = len(list((work / "w1").glob("*/*/trial.json")))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"commit {commit}, {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}; {runs} runs, "
        f"{jobs} jobs, {args.epochs} epochs of {int(0.6 * args.rows)} rows"
    )
    print("| mode | wall s | CPU s | runs/min | speed-up (wall) |")
    print("|---|---|---|---|---|")
    modes = (("sequential (one process)", sequential, seq_cpu), ("sweep --workers 1", one, one_cpu))
    for name, seconds, cpu in (*modes, ("sweep --workers 2", two, two_cpu)):
        print(f"| {name} | {seconds:.1f} | {cpu:.1f} | {60 * int(runs) / seconds:.1f} | {sequential / seconds:.2f}x |")
    print(
        f"overhead per job, 1-worker sweep over sequential: {(one - sequential) / jobs:.2f} s wall, "
        f"{(one_cpu - seq_cpu) / jobs:.2f} s CPU (sequential's runs alone: {float(inner):.1f} s)"
    )
    print(json.dumps({"sequential": [sequential, seq_cpu], "workers_1": [one, one_cpu], "workers_2": [two, two_cpu]}))


if __name__ == "__main__":
    main()
