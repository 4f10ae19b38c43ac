"""``mmdistill sweep SWEEP.yaml --out DIR [--workers N] [--executor local|ray] [--resume]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="compare methods and settings: tune on validation, re-run the best on fresh seeds",
        description="Run a sweep file (base run config, methods, search space, search, seeds, selection) into DIR: "
        "the trials, the final runs and DIR/summary.md (docs/sweeps.md).",
    )
    p.add_argument("sweep", type=Path, help="sweep file (YAML)")
    p.add_argument("--out", required=True, type=Path, help="sweep folder")
    p.add_argument("--workers", type=positive_int, default=1, help="trials in parallel (default 1)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local processes or Ray tasks")
    p.add_argument("--ray-address", default=None, help="a Ray cluster (default: a local Ray started for the sweep)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in DIR (only what is missing)")
    p.add_argument("--overwrite", action="store_true", help="replace a sweep in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.executor == "local" and args.workers > 1:
        from ..sweep import fork_server

        fork_server.start()  # the workers' server imports torch beside this process's own import (run_sweep stops it)
    from ..sweep import run_sweep

    result = run_sweep(
        args.sweep,
        args.out,
        workers=args.workers,
        executor=args.executor,
        ray_address=args.ray_address,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    if not args.quiet:
        for row in result["final"]:
            test = "failed" if row["error"] else f"{row['test_mean']:.2f}"
            print(f"{row['method']:>14s} {row['variant']:8s} test {test}  {row['params']}", file=sys.stdout)
        print(f"wrote {args.out / 'summary.md'}")
    return 0
