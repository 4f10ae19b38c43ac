"""``mmdistill reproduce`` targets of MFH Algorithm 1: ``mfh-table2`` and ``mfh-removal``.

Kept out of ``reproduce.py`` so that the registry there stays one line per target; each target is a
``run(args, out) -> str`` and an ``add_arguments(parser)`` (see :class:`reproduce.Target`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from . import fraction, integer, positive_float, positive_int, width


def _table2_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--epochs", type=positive_int, default=1000, help="full-batch SGD steps per teacher/student (paper: 1000)"
    )
    parser.add_argument(
        "--joint-epochs", type=positive_int, default=500, help="steps of Algorithm 1's joint training (default 500)"
    )
    parser.add_argument(
        "--permutations", type=positive_int, default=10, help="Algorithm 1 permutations per channel (default 10)"
    )


def _table2_run(args: argparse.Namespace, out: Path) -> str:
    from ..studies.mfh_table2 import table2, write_table2

    for name in ("epochs", "joint_epochs", "permutations"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be a positive integer, got {getattr(args, name)}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    result = table2(seeds=seeds, epochs=args.epochs, joint_epochs=args.joint_epochs, permutations=args.permutations)
    command = f"mmdistill reproduce mfh-table2 --seeds {args.seeds}"
    command += f" --first-seed {args.first_seed}" if args.first_seed else ""
    command += f" --epochs {args.epochs}" if args.epochs != 1000 else ""
    command += f" --joint-epochs {args.joint_epochs}" if args.joint_epochs != 500 else ""
    command += f" --permutations {args.permutations}" if args.permutations != 10 else ""
    write_table2(result, out, f"{command} --out {args.out}")
    return (
        f"mfh-table2: {result.timings['models']} models in {result.seconds:.1f} s; wrote {out}/results.csv, "
        "summary.md, table2.png"
    )


def _removal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=["mfeat", "av-digits", "venn"], help="dataset")
    parser.add_argument(
        "--pairs",
        nargs="*",
        metavar="TEACHER:STUDENT",
        help="teacher:student modality pairs (default: mfeat pix:zer fou:kar; av-digits image:audio audio:image)",
    )
    parser.add_argument(
        "--keep", type=fraction, default=0.25, help="fraction r of the teacher's channels kept (default 0.25)"
    )
    parser.add_argument(
        "--fill", choices=["mean", "zero"], default="mean", help="value of the removed channels (default mean)"
    )
    parser.add_argument(
        "--hidden", type=width, default=64, help="hidden width of teacher and student MLPs (default 64)"
    )
    parser.add_argument("--epochs", type=positive_int, default=300, help="full-batch SGD steps per model (default 300)")
    parser.add_argument("--lr", type=positive_float, default=0.3, help="full-batch SGD learning rate (default 0.3)")
    parser.add_argument(
        "--pca",
        type=integer(-1, 65_536),
        default=-1,
        help=(
            "project inputs wider than this on their principal components (default: 64 for av-digits, else off; 0: off)"
        ),
    )


def _removal_run(args: argparse.Namespace, out: Path) -> str:
    from ..studies.mfh_removal import feature_removal, write_removal

    if args.hidden < 1 or args.epochs < 1:
        raise ConfigError(f"--hidden and --epochs: must be positive integers, got {args.hidden} and {args.epochs}")

    result = feature_removal(
        args.dataset,
        pairs=args.pairs,
        seeds=range(args.first_seed, args.first_seed + args.seeds),
        keep=args.keep,
        fill=args.fill,
        hidden=args.hidden,
        epochs=args.epochs,
        lr=args.lr,
        pca=None if args.pca == 0 else args.pca,
    )
    command = f"mmdistill reproduce mfh-removal --dataset {args.dataset} --seeds {args.seeds}"
    command += f" --first-seed {args.first_seed}" if args.first_seed else ""
    command += f" --pairs {' '.join(args.pairs)}" if args.pairs else ""
    for name, default in (("keep", 0.25), ("fill", "mean"), ("hidden", 64), ("epochs", 300), ("lr", 0.3), ("pca", -1)):
        if getattr(args, name) != default:
            command += f" --{name} {getattr(args, name)}"
    write_removal(result, out, f"{command} --out {args.out}")
    return (
        f"mfh-removal: {result.timings['models']} models in {result.seconds:.1f} s; wrote {out}/results.csv, "
        "summary.md, removal.png"
    )


def targets(target_class) -> dict:
    """The entries for ``reproduce.TARGETS``."""
    return {
        "mfh-table2": target_class(
            "MFH paper Table 2: a modality-general teacher (random / ground truth / Algorithm 1 channels)",
            _table2_run,
            _table2_arguments,
        ),
        "mfh-removal": target_class(
            "MFH feature removal on real data: keep top / random / bottom Algorithm 1 channels",
            _removal_run,
            _removal_arguments,
        ),
    }
