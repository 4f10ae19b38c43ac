"""Time per epoch of each method as the dataset grows (1x, 2x, 4x rows) and as modalities are added (1, 2, 4).

Data: generated ``folder`` datasets (on disk, read batch by batch; see
``bench_memory.write_folder_dataset``), 64 float32 features per modality, 10 classes.
Size sweep: 2 modalities, 1x = ``--rows`` train rows. Modality sweep: 1x rows, 1, 2 and 4
modalities. Models read every modality: teacher MLP [128] -> 64 per modality, student MLP
[64] -> 32, concat fusion. Methods: supervised (CE), kd (T = 4), hint (FitNets on
``encoders.m0.body.2``), msd (uniform weighting; 1 + M student views per step). The teacher
cache is on and built before timing. Time per epoch is the trainer's own timing of its
training steps (``RunResult.train_seconds / epochs_run``), one run per cell after one warm-up
run; ratios are to the 1x / 1-modality cell of the same method (MSD needs two or more
modalities: its modality ratios are to the 2-modality cell).

    python benchmarks/bench_scaling.py [--rows 20000] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import write_folder_dataset

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine.api import distill
from mmdistill.errors import ConfigError
from mmdistill.models import EncoderConfig, ModelConfig, build_model

METHODS = {
    "supervised": {},
    "kd": {"temperature": 4.0},
    "hint": {"student_layer": "encoders.m0.body.2", "teacher_layer": "encoders.m0.body.2", "beta": 0.5},
    "msd": {"weighting": "uniform"},
}
DIM, BATCH = 64, 256


def epoch_seconds(data, method: str, work: Path, epochs: int, threads: int) -> float | None:
    """Seconds per epoch of training steps for one (dataset, method) cell; None where the method does not apply."""
    specs, n, mods = data.train.specs(), data.num_classes, [s.name for s in data.train.specs()]
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=mods, encoder=EncoderConfig(hidden=[128], out_dim=64)), specs, n)
    torch.manual_seed(1)
    student = build_model(ModelConfig(modalities=mods, encoder=EncoderConfig(hidden=[64], out_dim=32)), specs, n)
    out = work / f"run-{method}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        res = distill(
            student,
            teacher,
            data,
            out,
            method,
            METHODS[method],
            cache=CacheConfig(dir=work / "cache"),
            quiet=True,
            trainer=TrainerConfig(epochs=epochs, batch_size=BATCH, num_threads=threads),
        )
    except ConfigError:  # MSD needs two or more modalities
        return None
    return res.train_seconds / res.epochs_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000, help="train rows at 1x")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="mmd-bench-scaling-"))
    try:
        cells = {("size", s): (args.rows * s, 2) for s in (1, 2, 4)} | {("mods", m): (args.rows, m) for m in (1, 2, 4)}
        data = {}
        for key, (rows, mods) in cells.items():
            root = work / f"data-{rows}-{mods}"
            if not root.exists():
                write_folder_dataset(root, rows, modalities=mods, dim=DIM)
            data[key] = build_splits("folder", {"root": str(root)})
        epoch_seconds(data[("size", 1)], "kd", work, 1, args.threads)  # warm-up
        times = {
            (m, key): epoch_seconds(data[key], m, work, args.epochs, args.threads)
            for m in args.methods
            for key in cells
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, threads {args.threads}; {args.rows} train "
        "rows at 1x, "
        f"{DIM} features per modality, batch {BATCH}, {args.epochs} epochs; seconds per epoch (ratio to the first "
        "column)"
    )
    print("\n| method | 1x (2 mod.) | 2x | 4x | 1 modality (1x) | 2 modalities | 4 modalities |")
    print("|---|---|---|---|---|---|---|")
    for m in args.methods:
        size = [times[(m, ("size", s))] for s in (1, 2, 4)]
        mods = [times[(m, ("mods", k))] for k in (1, 2, 4)]
        first = next(t for t in mods if t is not None)
        cols = [f"{t:.2f} ({t / size[0]:.2f})" for t in size] + [
            "n/a" if t is None else f"{t:.2f} ({t / first:.2f})" for t in mods
        ]
        print(f"| {m} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
