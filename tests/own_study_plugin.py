"""A user's own study in one file, as the tests install it (copied into tmp_path with an entry point, on PYTHONPATH).

``mmdistill reproduce class-balance --seeds N --out DIR`` draws the Gaussian demo task for each seed and writes
the share of the largest class per split: ``class_balance.json``, ``results.csv`` and ``summary.md``, declared as
the study's layout so ``--overwrite`` replaces only those. It is declared in the package metadata as

    [project.entry-points."mmdistill.studies"]
    class-balance = "my_study:target"
"""

import argparse
from pathlib import Path

from mmdistill.commands.reproduce import Target
from mmdistill.data import build_splits
from mmdistill.io import write_csv, write_json, write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=120, help="examples per draw (default 120)")


def run(args: argparse.Namespace, out: Path) -> str:
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        splits = build_splits("toy-two-modality", {"n": args.n}, seed=seed)
        for split in ("train", "val", "test"):
            labels = getattr(splits, split).labels
            largest = labels.bincount().max().item() / len(labels)
            rows.append({"seed": seed, "split": split, "largest_class": round(largest, 4)})
    write_json(out / "class_balance.json", {"n": args.n, "rows": rows})
    write_text(out / "summary.md", f"# class balance\n\n{len(rows)} rows over {args.seeds} seeds\n")
    write_csv(out / "results.csv", rows)
    return f"class-balance: {len(rows)} rows; wrote {out}/results.csv"


target = Target(
    "share of the largest class per split of the demo task",
    run,
    add_arguments,
    {"class_balance.json": None, "results.csv": None, "summary.md": None},
)
