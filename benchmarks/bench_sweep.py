"""Sweep throughput: the same jobs run one after the other, by a 1-worker sweep and by a 2-worker sweep.

    python benchmarks/bench_sweep.py [--epochs 4] [--rows 3000] [--workdir DIR]

A 2-method x 4-setting grid (kd, dkd; temperature x learning rate) on toy-two-modality, one tune seed and two final
seeds: 3 teachers, 8 trials and 5 final jobs (10 runs), 21 runs in all. In order, each in a fresh process:
``sweep --workers 1`` (the CLI, timed from start to exit, torch's default threads: one per core); ``sequential``:
every run of that sweep, read back from its folders (their ``config.yaml``), trained again by ``run_config`` one
after the other in one process (own teacher cache): the work without the sweep around it; the same with
``OMP_NUM_THREADS=1``; ``sweep --workers 1`` with ``OMP_NUM_THREADS=1``; ``sweep --workers 2`` (each worker one
thread on 2 cores).

Prints one Markdown row per mode (wall and CPU time, runs per minute, speed-up over each sequential mode), the
overhead per job of the 1-thread sweep over the 1-thread sequential runs, and how busy the 2 workers were while jobs
ran (from each job's ``started_at`` and ``ended_at``: the sum of the jobs' times over 2 x the time from the first
start to the last end; the rest is a worker waiting for a job it may start); checks that the sweeps wrote the same
final table.
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
print(len(runs), time.perf_counter() - start)  # not read: the caller times the whole process
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


def timed(command: list[str], one_thread: bool = False) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, its stdout); ``one_thread``: OMP_NUM_THREADS=1."""
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if one_thread else {})}
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, children_cpu() - cpu, done.stdout


def final_table(out: Path) -> list[dict]:
    with open(out / "final.csv") as f:
        return [{k: v for k, v in row.items() if k != "ms_per_step"} for row in csv.DictReader(f)]


def workers_busy(out: Path, workers: int) -> str:
    """How busy the workers of the sweep in ``out`` were between its first job's start and its last job's end."""
    records = [json.loads(p.read_text()) for p in out.glob("*/*/trial.json")]
    if not records or "started_at" not in records[0]:
        return "no job times recorded"
    span = max(r["ended_at"] for r in records) - min(r["started_at"] for r in records)
    busy = sum(r["ended_at"] - r["started_at"] for r in records)
    return f"jobs {busy:.1f} s over {span:.1f} s on {workers} workers: {100 * busy / (workers * span):.1f}% busy"


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
    sequential = [sys.executable, "-c", SEQUENTIAL, str(work / "w1")]
    modes = {  # name -> (wall, CPU); the first sweep's folders are what the sequential modes re-run
        "sweep --workers 1": timed([*sweep, "--out", str(work / "w1"), "--workers", "1"])[:2],
        "sequential (one process)": timed([*sequential, str(work / "seq")])[:2],
        "sequential, 1 thread": timed([*sequential, str(work / "seq1")], one_thread=True)[:2],
        "sweep --workers 1, 1 thread": timed([*sweep, "--out", str(work / "w1t"), "--workers", "1"], True)[:2],
        "sweep --workers 2 (1 thread each)": timed([*sweep, "--out", str(work / "w2"), "--workers", "2"])[:2],
    }
    for other in ("w1t", "w2"):
        assert final_table(work / "w1") == final_table(work / other), f"{other}'s final table differs from w1's"
    runs = len(list((work / "w1").glob("*/*/s*/config.yaml")))
    jobs = len(list((work / "w1").glob("*/*/trial.json")))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"commit {commit}, {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}; {runs} runs, "
        f"{jobs} jobs, {args.epochs} epochs of {int(0.6 * args.rows)} rows"
    )
    base, base1 = modes["sequential (one process)"][0], modes["sequential, 1 thread"][0]
    print("| mode | wall s | CPU s | runs/min | speed-up over sequential | over sequential, 1 thread |")
    print("|---|---|---|---|---|---|")
    for name, (wall, cpu) in modes.items():
        print(
            f"| {name} | {wall:.1f} | {cpu:.1f} | {60 * runs / wall:.1f} | {base / wall:.2f}x | {base1 / wall:.2f}x |"
        )
    overhead = (modes["sweep --workers 1, 1 thread"][0] - base1) / jobs
    print(f"overhead per job, 1-worker sweep over sequential runs (1 thread each): {overhead:.2f} s wall")
    print(f"sweep --workers 2: {workers_busy(work / 'w2', 2)}")
    print(json.dumps(modes))


if __name__ == "__main__":
    main()
