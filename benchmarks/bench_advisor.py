"""The advisor's cost against one full distillation run of the same pair, and its advice on real pairs.

    python benchmarks/bench_advisor.py [--seeds 5] [--out docs/results/advisor/bench.json]

1. Venn pairs of the validation suites' kind (n_train 50 / 100 / 200): the advice's wall-clock time
   against one full distillation run of the pair by the paper's protocol (linear teacher, then a KD
   student, 1000 full-batch epochs), timed (a) with the batched trainer alone and (b) with torch
   autograd and ``torch.optim.SGD``, one model at a time (as a user's own loop would).
2. Real pairs (mfeat view pairs, AV-Digits image/audio; the demo's list): the advice (predicted gain,
   80% interval, cost) against the measured gain (regular KD - no KD over ``--seeds`` seeds, MLP
   students, the mfh-removal protocol) and one full run of that protocol (teacher + KD student).
3. The CLI: ``mmdistill advise --config`` against ``mmdistill train`` on the same config (teacher,
   no-KD and KD student), CPU seconds of each process.
4. ``--wide``: the advice alone on 1,500 rows of 3,000 values a side (wall and CPU seconds).
Median of 3 timings where a figure is a time; 1 torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from mmdistill.advisor.predict import advise
from mmdistill.data.generated.venn import VennSpec, draw
from mmdistill.io import write_text
from mmdistill.mfh.ensemble import Run, fit_sequential, train_runs
from mmdistill.studies.demo_advice import PAIRS, advice_vs_measured
from mmdistill.studies.mfh_synthetic import _official_inits

ROOT = Path(__file__).resolve().parents[1]


def _median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _teacher_then_kd_batched(spec: VennSpec, d) -> None:
    t, kd, _ = _official_inits(1, (spec.dim_a, spec.dim_b, spec.dim_b), (), 2)
    trained = train_runs([Run(t, d.xa, d.y)], lr=0.1, epochs=1000)
    soft = torch.softmax(trained.logits([d.xa])[0], -1)
    train_runs([Run(kd, d.xb, d.y, soft, 1.0, 1.0)], lr=0.1, epochs=1000)


def _teacher_then_kd_autograd(spec: VennSpec, d) -> None:
    t, kd, _ = _official_inits(1, (spec.dim_a, spec.dim_b, spec.dim_b), (), 2)
    fit_sequential([Run(t, d.xa, d.y)], lr=0.1, epochs=1000)
    soft = torch.softmax(t(d.xa), -1).detach()
    fit_sequential([Run(kd, d.xb, d.y, soft, 1.0, 1.0)], lr=0.1, epochs=1000)


def venn_costs() -> list[dict]:
    rows = []
    for n in (50, 100, 200):
        spec = VennSpec(s0=6, sa=4, sb=4, dim_a=20, dim_b=60)
        d = draw(spec, 0, n_train=n).train
        rows.append(
            {
                "n": n,
                "advice_s": _median_time(partial(advise, d.xa, d.xb, d.y)),
                "run_batched_s": _median_time(partial(_teacher_then_kd_batched, spec, d)),
                "run_autograd_s": _median_time(partial(_teacher_then_kd_autograd, spec, d)),
            }
        )
    return rows


def wide_cost(n: int = 1500, width: int = 3000, repeats: int = 3) -> dict:
    """``advise()`` on ``n`` rows of ``width`` values a side (three classes): median wall and CPU seconds of the
    advice alone (one thread, so CPU seconds are one core's)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    xa = torch.randn(n, width, generator=g) + 0.3 * y[:, None]
    xb = torch.randn(n, width, generator=g) + 0.1 * y[:, None]
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        advice = advise(xa, xb, y)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"rows": n, "width": width, "wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu)),
            "basis": advice.basis}  # fmt: skip


def _cpu_seconds(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "mmdistill", *argv], check=True, env=env, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def cli_costs() -> list[dict]:
    rows = []
    config = ROOT / "src" / "mmdistill" / "configs" / "demo.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        advise_s = _cpu_seconds(["advise", "--config", str(config)])
        startup = _cpu_seconds(["--help"])
        train_s = _cpu_seconds(["train", str(config), "--out", str(Path(tmp) / "run")])
    rows.append(
        {
            "config": "src/mmdistill/configs/demo.yaml (teacher a+b -> student b)",
            "advise_cpu_s": advise_s,
            "train_cpu_s": train_s,
            "startup_cpu_s": startup,
        }
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "advisor" / "bench.json"))
    ap.add_argument("--skip-real", action="store_true", help="only the Venn and CLI timings")
    ap.add_argument("--wide", action="store_true", help="only the cost on 1,500 rows of 3,000 values a side")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.wide:
        r = wide_cost()
        print(f"advise() on {r['rows']} rows x {r['width']} values a side: {r['wall_s']:.2f} s wall, "
              f"{r['cpu_s']:.2f} CPU s (median of 3; {r['basis']})")  # fmt: skip
        return
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread",
        "venn": venn_costs(),
        "cli": cli_costs(),
    }
    if not args.skip_real:
        result["real"] = advice_vs_measured(PAIRS, seeds=range(args.seeds))
    write_text(Path(args.out), json.dumps(result, indent=1))
    print("| n_train | advice s | one run, batched trainer s | advice / run | one run, autograd s | advice / run |")
    print("|---|---|---|---|---|---|")
    for r in result["venn"]:
        print(
            f"| {r['n']} | {r['advice_s']:.3f} | {r['run_batched_s']:.3f} | "
            f"{100 * r['advice_s'] / r['run_batched_s']:.0f}% | "
            f"{r['run_autograd_s']:.3f} | {100 * r['advice_s'] / r['run_autograd_s']:.0f}% |"
        )
    for r in result["cli"]:
        print(
            f"\nCLI, {r['config']}: advise {r['advise_cpu_s']:.1f} CPU s, train {r['train_cpu_s']:.1f} CPU s "
            f"({100 * r['advise_cpu_s'] / r['train_cpu_s']:.1f}%; interpreter start-up and imports "
            f"{r['startup_cpu_s']:.1f} s of each)"
        )
    for r in result.get("real", []):
        print(
            f"{r['dataset']} {r['pair']}: predicted {r['predicted_gain']:+.1f} "
            f"[{r['predicted_low']:+.1f}, {r['predicted_high']:+.1f}], measured {r['measured_gain']:+.2f} "
            f"[{r['measured_low']:+.2f}, {r['measured_high']:+.2f}], advice {r['advice_seconds']:.2f} s, "
            f"one run {r['run_seconds']:.2f} s ({100 * r['advice_seconds'] / r['run_seconds']:.0f}%)"
        )


if __name__ == "__main__":
    main()
