"""``mmdistill analyze modalities DIR``: modality saliency and per-modality accuracy of a run's models."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.system.runfolder import Layout, register_layout
from ..errors import ConfigError
from ..io import write_text

OUTPUTS: Layout = {"analysis": {"modalities.md": None, "saliency_hist.png": None}}
register_layout("train", OUTPUTS)  # what the analysis adds to a train run's folder (--overwrite may replace it)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyses of a run folder")
    kinds = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    m = kinds.add_parser(
        "modalities",
        help="population/instance saliency per modality and per-modality accuracy",
        description="Write DIR/analysis/modalities.md and saliency_hist.png for each seed's teacher and students.",
    )
    m.add_argument("run_dir", type=Path)
    m.add_argument("--saliency", choices=["kl", "true_class"], default="kl")
    m.add_argument("--seed-dir", default=None, help="which seed_* folder (default: the first)")
    m.add_argument(
        "--data",
        metavar="PKG.MOD:FACTORY",
        help="the run's data, a function returning train/val/test datasets (as data.dataset in YAML); needed "
        "for a distill() folder whose datasets were given in Python",
    )
    m.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.modality_importance import importance_markdown, modality_importance, plot_saliency_histogram
    from ..evaluation.runs import load_run_models
    from ..masking import fit_masker

    cfg, data, models = load_run_models(args.run_dir, args.data)
    seeds = sorted({k.split("/")[0] for k in models})
    seed = args.seed_dir or seeds[0]
    if f"{seed}/teacher" not in models:
        raise ConfigError(f"{args.run_dir}/{seed}: no teacher saved; the analysis needs the run's teacher")
    students = {
        k.split("/")[1]: v for k, v in models.items() if k.startswith(seed + "/") and not k.endswith("/teacher")
    }
    masker = fit_masker(cfg.masking, data.train)
    result = modality_importance(models[f"{seed}/teacher"], students, data, masker, args.saliency, task=cfg.task)
    out = args.run_dir / "analysis"
    md = f"# Modality importance ({seed}, method {cfg.method.name})\n\n" + importance_markdown(result)
    if "instance" in result:
        plot_saliency_histogram(result, out / "saliency_hist.png")
        md += "\n![instance saliency](saliency_hist.png)\n"
    write_text(out / "modalities.md", md)
    print(md)
    return 0
