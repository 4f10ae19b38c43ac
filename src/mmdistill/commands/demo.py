"""``mmdistill demo --out DIR``: the main job on bundled data, in minutes on 2 CPU cores."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo study on bundled data",
                       description="Teacher (a+b), student on b without and with KD, 3 seeds; prints a table.")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..config import load_config
    from ..engine.api import run_config

    torch.set_num_threads(min(2, torch.get_num_threads()))
    config_path = resources.files("mmdistill") / "configs" / "demo.yaml"
    cfg = load_config(str(config_path))
    metrics = run_config(cfg, args.out / "kd", list(range(args.seeds)), overwrite=args.overwrite, quiet=args.quiet)
    md = (args.out / "kd" / "summary.md").read_text()
    print(md)
    return 0
