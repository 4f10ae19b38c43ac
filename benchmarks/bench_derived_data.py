"""CPU time of the demo's AV-Digits pairs (its advise step) and the share of it spent in SVDs.

Runs ``mmdistill.studies.demo_advice.advice_vs_measured`` on AV-Digits image:audio and audio:image (3 seeds) with
``torch.linalg.svd`` and ``numpy.linalg.svd`` wrapped to count their calls and CPU time, and prints the rows without
their timings (to compare two trees' results: ``PYTHONPATH=<other src> python benchmarks/bench_derived_data.py``).

    python benchmarks/bench_derived_data.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

SPENT = {"calls": 0, "cpu": 0.0}


def counted(real):
    def svd(*args, **kwargs):
        start = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            SPENT["calls"] += 1
            SPENT["cpu"] += time.process_time() - start

    return svd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.linalg.svd, np.linalg.svd = counted(torch.linalg.svd), counted(np.linalg.svd)
    from mmdistill.studies import demo_advice

    start = time.process_time()
    rows = demo_advice.advice_vs_measured(pairs=[("av-digits", "image:audio"), ("av-digits", "audio:image")])
    total = time.process_time() - start
    share = 100 * SPENT["cpu"] / total
    print(f"AV-Digits pairs: {total:.2f} s CPU; SVDs: {SPENT['calls']} calls, {SPENT['cpu']:.2f} s ({share:.1f}%)")
    for row in rows:
        print({k: v for k, v in row.items() if not k.endswith("seconds")})


if __name__ == "__main__":
    main()
