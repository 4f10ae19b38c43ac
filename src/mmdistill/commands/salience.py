"""``mmdistill salience``: MFH Algorithm 1 channel scores of a teacher layer, as CSV and a sorted-score plot.

    mmdistill salience --dataset venn --preset modify-gamma --setting 15 --out DIR
    mmdistill salience --dataset mfeat --teacher pix --student zer --hidden 64 --out DIR
    mmdistill salience --dataset av-digits --teacher image --student audio --hidden 64 --variant separate --out DIR

Teacher and student are MLPs (``--hidden``; none: linear) on the flattened, standardised modalities,
trained on the training split (jointly with CE + CE + MSE, or separately), then the channels of
``--layer`` (default: the input with no hidden layer, else the last hidden ReLU, i.e. the
penultimate features) are scored on the training split. Writes ``DIR/scores.csv`` (channel, score,
raw, rank and, on unmixed Venn data, whether the channel is truly shared) and ``DIR/salience.png``.
"""

from __future__ import annotations

import argparse
import json

from ..engine.system.runfolder import register_layout
from ..errors import ConfigError
from . import integer, positive_float, positive_int, seed_int, threads, width

register_layout("salience", {"scores.csv": None, "salience.png": None})


def _run(args: argparse.Namespace) -> int:
    from ..engine.system.runfolder import owned

    if any(h < 1 for h in args.hidden):
        raise ConfigError(f"--hidden: widths must be positive integers, got {args.hidden}")
    with owned(args.out, "salience", "scores.csv", args.overwrite) as folder:
        return _score(args, folder)


def _score(args: argparse.Namespace, folder) -> int:
    import torch

    from ..io import write_csv
    from ..mfh.channel_scores import score_pair
    from ..studies.mfh_crossmodal_plots import plot_sorted_scores
    from .data import _params

    params = _params(args.param)
    if args.preset is not None:
        params.update({"preset": args.preset, "setting": args.setting})
    torch.set_num_threads(args.threads)
    scored = score_pair(
        args.dataset,
        params,
        args.teacher,
        args.student,
        args.hidden,
        args.layer,
        args.variant,
        args.permutations,
        args.seed,
        args.epochs,
        args.lr,
        args.batch_size,
    )
    out, report = folder.path, scored.report
    plot_sorted_scores(scored.result.scores, out / "salience.png", scored.title, scored.shared)
    write_csv(out / "scores.csv", scored.rows, float_format=".6g")
    if args.json:
        print(json.dumps(report))
    else:
        prec = (
            f"; precision of the top {len(scored.shared)} vs the true shared channels "
            f"{report['precision_at_shared']:.2f}"
            if scored.shared
            else ""
        )
        print(
            f"{scored.title}: {report['channels']} channels scored in {scored.result.seconds:.3f} s (training + "
            f"scoring {report['seconds_total']:.2f} s); top {report['top']}{prec}; wrote {out}/scores.csv and "
            "salience.png"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "salience",
        help="MFH Algorithm 1: score a teacher layer's channels (CSV + plot)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", required=True, help="registered dataset (venn, mfeat, av-digits, ...)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="dataset parameter (repeatable, YAML value)")
    p.add_argument("--preset", help="venn: official preset (vary-gamma, vary-alpha, modify-gamma)")
    p.add_argument("--setting", type=integer(0, 10_000), help="venn: the preset's setting (e.g. xs2 for modify-gamma)")
    p.add_argument("--teacher", help="teacher modality / mfeat view (default: venn a, mfeat pix, av-digits image)")
    p.add_argument("--student", help="student modality / mfeat view (default: venn b, mfeat zer, av-digits audio)")
    p.add_argument(
        "--hidden", type=width, nargs="*", default=[], metavar="H", help="hidden widths of both MLPs (default: linear)"
    )
    p.add_argument("--layer", help="teacher layer to score: a module path of the MLP, or 'input' (default: see above)")
    p.add_argument(
        "--variant",
        choices=["joint", "separate"],
        default="joint",
        help="train jointly with CE+CE+MSE (paper) or each network alone",
    )
    p.add_argument("--epochs", type=positive_int, default=300, help="training epochs (default 300)")
    p.add_argument("--lr", type=positive_float, default=0.01, help="SGD learning rate, momentum 0.9 (default 0.01)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--permutations", type=positive_int, default=10, help="permutations per channel M (default 10)")
    p.add_argument("--seed", type=seed_int, default=0, help="data split, init and permutation seed")
    p.add_argument("--threads", type=threads, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of a sentence")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of a finished salience run in --out")
    p.set_defaults(func=_run)
