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
import time


from ..errors import ConfigError
from . import positive_float, positive_int, seed_int


def default_layer(hidden: list[int]) -> str:
    """Input channels for a linear model, else the last hidden ReLU of ``make_mlp``'s Sequential."""
    from ..mfh.algorithm1 import INPUT

    return INPUT if not hidden else str(2 * len(hidden) - 1)


def _run(args: argparse.Namespace) -> int:
    from ..engine.runfolder import owned

    if any(h < 1 for h in args.hidden):
        raise ConfigError(f"--hidden: widths must be positive integers, got {args.hidden}")
    with owned(args.out, "salience", "scores.csv", args.overwrite) as folder:
        return _score(args, folder)


def _score(args: argparse.Namespace, folder) -> int:
    from ..io import write_text
    from ..mfh.ensemble import make_mlp
    from ..mfh.pairs import load_pairs
    from ..studies.mfh_crossmodal_plots import plot_sorted_scores
    from ..mfh.algorithm1 import algorithm1, precision_at
    import torch

    from .data import _params

    params = _params(args.param)
    if args.preset is not None:
        params.update({"preset": args.preset, "setting": args.setting})
    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.dataset, params, args.teacher, args.student, seed=args.seed)
    tr = pairs.train
    torch.manual_seed(args.seed)
    teacher = make_mlp(tr.xa.shape[1], args.hidden, pairs.num_classes)
    student = make_mlp(tr.xb.shape[1], args.hidden, pairs.num_classes)
    layer = args.layer or default_layer(args.hidden)
    start = time.perf_counter()
    result = algorithm1(teacher, student, tr.xa, tr.xb, tr.y, layer, variant=args.variant, permutations=args.permutations,
                        seed=args.seed, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    order = torch.argsort(result.scores, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    truth = set(pairs.shared.tolist()) if pairs.shared is not None else None
    lines = ["channel,score,raw,rank" + (",shared" if truth is not None else "")]
    for c in range(len(order)):
        extra = f",{int(c in truth)}" if truth is not None else ""
        lines.append(f"{c},{result.scores[c]:.6g},{result.raw[c]:.6g},{int(rank[c]) + 1}{extra}")
    out = folder.path
    title = f"{args.dataset}: teacher {pairs.teacher} -> student {pairs.student}, layer {layer} ({args.variant})"
    plot_sorted_scores(result.scores, out / "salience.png", title, truth)
    write_text(out / "scores.csv", "\n".join(lines) + "\n")
    report = {"dataset": args.dataset, "teacher": pairs.teacher, "student": pairs.student, "layer": layer,
              "variant": args.variant, "channels": len(order), "permutations": args.permutations,
              "top": order[: min(10, len(order))].tolist(), "seconds_total": round(seconds, 3),
              "seconds_scoring": round(result.seconds, 4)}
    if truth is not None:
        k = len(truth)
        report["precision_at_shared"] = precision_at(result.top(k), pairs.shared)
    if args.json:
        print(json.dumps(report))
    else:
        prec = f"; precision of the top {len(truth)} vs the true shared channels {report['precision_at_shared']:.2f}" if truth else ""
        print(f"{title}: {len(order)} channels scored in {result.seconds:.3f} s (training + scoring {seconds:.2f} s); "
              f"top {report['top']}{prec}; wrote {out}/scores.csv and salience.png")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("salience", help="MFH Algorithm 1: score a teacher layer's channels (CSV + plot)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="registered dataset (venn, mfeat, av-digits, ...)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="dataset parameter (repeatable, YAML value)")
    p.add_argument("--preset", help="venn: official preset (vary-gamma, vary-alpha, modify-gamma)")
    p.add_argument("--setting", type=int, help="venn: the preset's setting (e.g. xs2 for modify-gamma)")
    p.add_argument("--teacher", help="teacher modality / mfeat view (default: venn a, mfeat pix, av-digits image)")
    p.add_argument("--student", help="student modality / mfeat view (default: venn b, mfeat zer, av-digits audio)")
    p.add_argument("--hidden", type=int, nargs="*", default=[], metavar="H", help="hidden widths of both MLPs (default: linear)")
    p.add_argument("--layer", help="teacher layer to score: a module path of the MLP, or 'input' (default: see above)")
    p.add_argument("--variant", choices=["joint", "separate"], default="joint",
                   help="train jointly with CE+CE+MSE (paper) or each network alone")
    p.add_argument("--epochs", type=positive_int, default=300, help="training epochs (default 300)")
    p.add_argument("--lr", type=positive_float, default=0.01, help="SGD learning rate, momentum 0.9 (default 0.01)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--permutations", type=positive_int, default=10, help="permutations per channel M (default 10)")
    p.add_argument("--seed", type=seed_int, default=0, help="data split, init and permutation seed")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of a sentence")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of a finished salience run in --out")
    p.set_defaults(func=_run)
