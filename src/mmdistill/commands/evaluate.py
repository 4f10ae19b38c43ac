"""``mmdistill evaluate DIR [--missing] [--noise]``: re-evaluate the saved models of a run folder.

Every saved model (teacher, no-KD student, distilled student, per seed) goes through the same
harness, so they can be compared side by side:

* default: test metrics of each model;
* ``--missing``: metrics for every non-empty subset of each model's modalities, the others
  removed by the run's masking strategy (``DIR/robustness/missing.csv``);
* ``--noise``: metrics against per-modality Gaussian / dropout noise level
  (``DIR/robustness/noise.csv`` and one PNG per model).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from ..errors import ConfigError
from ..io import write_text
from . import unit_interval

PARTS = ("teacher", "nokd", "student")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate the saved models of a run folder",
                       description="Load DIR/config.yaml and each seed's saved weights; print test metrics.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--missing", action="store_true", help="metrics for every subset of input modalities")
    p.add_argument("--noise", action="store_true", help="metrics against per-modality noise level, with plots")
    p.add_argument("--levels", type=unit_interval, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="noise levels in [0, 1] (Gaussian: std in units of the feature std; dropout: probability)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def load_run_models(run_dir: Path):
    """(config, data splits, {"seed_0/student": model, ...}) of a run folder."""
    from ..config import load_config
    from ..data import build_splits
    from ..engine.checkpoint import load_tensors
    from ..models.multimodal import build_model

    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml", check_machine=False)
    data = build_splits(cfg.data.name, cfg.data.params, seed=cfg.data.split_seed)
    specs, n = data.train.specs(), data.num_classes
    models = {}
    for seed_dir in sorted(run_dir.glob("seed_*")):
        for part in PARTS:
            weights = seed_dir / part / "student.safetensors"
            if not weights.is_file():
                continue
            model = build_model(cfg.teacher.model if part == "teacher" else cfg.student.model, specs, n)
            model.load_state_dict(load_tensors(weights)[0])
            models[f"{seed_dir.name}/{part}"] = model.eval()
    if not models:
        raise ConfigError(f"{run_dir}: no saved model found (expected seed_*/<part>/student.safetensors)")
    return cfg, data, models


def missing_models(run_dir: Path, cfg, models: dict) -> list[str]:
    """The models a run of ``cfg`` in ``run_dir`` should have saved but has not (unfinished), e.g. ``seed_1/nokd``.

    The seeds come from the run's marker (or its ``seed_*`` folders); a teacher is expected when the run trained one
    (no ``teacher.checkpoint``), the no-KD student unless the run was started with ``--no-baseline``.
    """
    from ..engine.runfolder import read_marker
    from ..registry import METHODS

    marker = read_marker(run_dir) or {}
    seeds = set(marker.get("seeds") or []) | {int(p.name[5:]) for p in run_dir.glob("seed_*") if p.name[5:].isdigit()}
    parts = ["student"]
    if METHODS.get(cfg.method.name).needs_teacher and cfg.teacher is not None and cfg.teacher.checkpoint is None:
        parts.insert(0, "teacher")
    if marker.get("baseline", True) and cfg.method.name != "supervised":
        parts.append("nokd")
    return [f"seed_{s}/{p}" for s in sorted(seeds) for p in parts if f"seed_{s}/{p}" not in models]


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def evaluate_run(run_dir: Path, split: str = "test", missing: bool = False, noise: bool = False,
                 levels: tuple[float, ...] = (0.0, 0.5, 1.0)) -> dict:
    from ..engine.metrics import evaluate
    from ..engine.trainer import eval_batches
    from ..masking import Masker

    if noise and not all(0.0 <= float(v) <= 1.0 for v in levels):  # NaN fails too
        raise ConfigError(f"--levels: noise levels must lie in [0, 1] (dropout probability; Gaussian std in units "
                          f"of the feature std), got {list(levels)}")
    cfg, data, models = load_run_models(run_dir)
    dataset = data.split(split)
    out: dict = {"metrics": {k: evaluate(m, eval_batches(dataset, 256), data.num_classes) for k, m in models.items()},
                 "missing_models": missing_models(run_dir, cfg, models)}
    if missing or noise:
        from ..evaluation.robustness import missing_modality_table, noise_curves, plot_noise_curves

        robust_dir = run_dir / "robustness"
        if missing:
            masker = Masker(data.train.specs(), cfg.masking.strategy, cfg.masking.per_modality).fit(data.train.feature_mean())
            rows = [{"model": k, **r} for k, m in models.items() for r in missing_modality_table(m, dataset, masker)]
            write_text(robust_dir / "missing.csv", _csv(rows))
            out["missing"] = rows
        if noise:
            rows = []
            for k, m in models.items():
                curves = noise_curves(m, dataset, list(levels))
                plot_noise_curves(curves, robust_dir / f"noise_{k.replace('/', '_')}.png", title=k)
                rows += [{"model": k, **r} for r in curves]
            write_text(robust_dir / "noise.csv", _csv(rows))
            out["noise"] = rows
    return out


def run(args: argparse.Namespace) -> int:
    import sys

    results = evaluate_run(args.run_dir, args.split, args.missing, args.noise, tuple(args.levels))
    if results["missing_models"]:
        print(f"mmdistill evaluate: warning: the run in {args.run_dir} is not finished: no saved model for "
              f"{', '.join(results['missing_models'])}; evaluated the {len(results['metrics'])} saved model(s)",
              file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for key, m in results["metrics"].items():
        print(f"{key:24s} " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
    for table in ("missing", "noise"):
        if table in results:
            print(f"\n{table}: wrote {args.run_dir / 'robustness' / (table + '.csv')}")
            for r in results[table][:12]:
                print("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    return 0
