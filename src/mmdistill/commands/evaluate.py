"""``mmdistill evaluate DIR [--missing] [--noise]``: re-evaluate the saved models of a run folder.

Every saved model (teacher, no-KD student, distilled student, per seed) goes through the same
harness, so they can be compared side by side:

* default: test metrics of each model (the task's percent metrics in percent, e.g. accuracy 57.33; loss, MAE
  and Pearson r as they are; the same in ``--json`` and the CSVs);
* ``--missing``: metrics for every non-empty subset of each model's modalities, the others
  removed by the run's masking strategy (``DIR/robustness/missing.csv``);
* ``--noise``: metrics against per-modality Gaussian / dropout noise level
  (``DIR/robustness/noise.csv`` and one PNG per model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engine.system.runfolder import Layout, register_layout
from . import unit_interval

OUTPUTS: Layout = {"robustness": {"missing.csv": None, "noise.csv": None, "noise_*.png": None}}
register_layout("train", OUTPUTS)  # what evaluate adds to a train run's folder (--overwrite may replace it)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate the saved models of a run folder",
        description="Load DIR/config.yaml and each seed's saved weights; print test metrics.",
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--missing", action="store_true", help="metrics for every subset of input modalities")
    p.add_argument("--noise", action="store_true", help="metrics against per-modality noise level, with plots")
    p.add_argument(
        "--levels",
        type=unit_interval,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        help="noise levels in [0, 1], at most 21 (Gaussian: std in units of the feature std; dropout: probability)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--data",
        metavar="PKG.MOD:FACTORY",
        help="the run's data, a function returning train/val/test datasets (as data.dataset in YAML); needed "
        "for a distill() folder whose datasets were given in Python",
    )
    p.set_defaults(func=run)


MAX_LEVELS = 21  # 0, 0.05, ..., 1: a finer curve than any plot shows


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import ConfigError
    from ..evaluation.runs import evaluate_run
    from ..tasks import get_task

    if len(args.levels) > MAX_LEVELS:  # each level is a pass over the split per modality: bound the work
        raise ConfigError(f"--levels: at most {MAX_LEVELS} noise levels, got {len(args.levels)}")
    results = evaluate_run(args.run_dir, args.split, args.missing, args.noise, tuple(args.levels), args.data)
    if results["missing_models"]:
        print(
            f"mmdistill evaluate: warning: the run in {args.run_dir} is not finished: no saved model for "
            f"{', '.join(results['missing_models'])}; evaluated the {len(results['metrics'])} saved model(s)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    task = get_task(results["task"])

    def shown(k: str, v) -> str:  # percent metrics are in percent already (the task's digits); others as they are
        return f"{v:.{task.metric_spec(k).digits}f}" if isinstance(v, float) else str(v)

    for key, m in results["metrics"].items():
        print(f"{key:24s} " + "  ".join(f"{k} {shown(k, v)}" for k, v in m.items()))
    for table in ("missing", "noise"):
        if table in results:
            print(f"\n{table}: wrote {args.run_dir / 'robustness' / (table + '.csv')}")
            for r in results[table][:12]:
                print("  " + "  ".join(f"{k}={shown(k, v)}" for k, v in r.items()))
    return 0
