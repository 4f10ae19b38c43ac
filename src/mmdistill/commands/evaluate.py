"""``mmdistill evaluate DIR``: re-evaluate the saved students of a run on its test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate the saved models of a run folder",
                       description="Load DIR/config.yaml and each seed's saved weights; print test metrics.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def evaluate_run(run_dir: Path, split: str = "test") -> dict:
    from ..config import load_config
    from ..data import build_splits
    from ..engine.checkpoint import load_tensors
    from ..engine.metrics import evaluate
    from ..engine.trainer import eval_batches
    from ..models.multimodal import build_model

    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    data = build_splits(cfg.data.name, cfg.data.params, seed=cfg.data.split_seed)
    specs, n = data.train.specs(), data.num_classes
    out: dict = {}
    for seed_dir in sorted(run_dir.glob("seed_*")):
        for part in ("teacher", "nokd", "student"):
            weights = seed_dir / part / "student.safetensors"
            if not weights.is_file():
                continue
            model_cfg = cfg.teacher.model if part == "teacher" else cfg.student.model
            model = build_model(model_cfg, specs, n)
            model.load_state_dict(load_tensors(weights)[0])
            out[f"{seed_dir.name}/{part}"] = evaluate(model, eval_batches(data.split(split), 256), n)
    return out


def run(args: argparse.Namespace) -> int:
    results = evaluate_run(args.run_dir, args.split)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, m in results.items():
            print(f"{key:24s} " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()))
    return 0
