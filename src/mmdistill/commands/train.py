"""``mmdistill train CONFIG [key=value ...] --out DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import seeds_count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="distil a teacher into a student from a YAML config",
        description="Train (teacher,) distilled student and a no-KD baseline per seed; write DIR/metrics.json.",
    )
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.epochs=3 method.params.temperature=2")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seeds", type=seeds_count, default=None, help="run seeds 0..N-1 (default: the config's seed)")
    p.add_argument("--no-baseline", action="store_true", help="skip the no-KD student")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in DIR")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.system import run_outputs, runfolder  # noqa: F401  (run_outputs declares the train folder's layout)

    # At once, before the slow imports: a foreign, busy, finished or interrupted --out (run_config checks it again).
    if runfolder.launching_process() and not (args.resume and args.overwrite):
        runfolder.check(args.out, "train", "metrics.json", args.overwrite, args.resume)

    from ..config import load_config
    from ..engine.protocol import run_config, summary_columns
    from ..stats import few_seeds_caution, format_summary
    from ..tasks import get_task

    cfg = load_config(args.config, args.overrides)
    seeds = list(range(args.seeds)) if args.seeds else None
    metrics = run_config(
        cfg,
        args.out,
        seeds,
        baseline=not args.no_baseline,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    if not args.quiet and runfolder.launching_process():  # once, not per DDP process
        s = metrics["summary"]
        key, _, scale, digits, bounds = summary_columns(get_task(cfg.task), metrics)[0]
        for part in ("teacher", "nokd", "student"):  # the task's first summary column (classification: accuracy)
            if f"{part}.{key}" in s:
                print(
                    f"{part:8s} test {key} {format_summary(s[f'{part}.{key}'], scale, digits, bounds)}", file=sys.stdout
                )
        if few_seeds_caution(len(metrics["seeds"])):
            print(few_seeds_caution(len(metrics["seeds"])))
        print(f"wrote {args.out / 'metrics.json'}")
    return 0
