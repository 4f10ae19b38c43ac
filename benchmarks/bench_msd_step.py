"""Time per training step of MSD (each weighting) against Hinton KD, in one run.

Same data, teacher, student, batch size and epochs; the teacher cache is on (built before
timing). Time per step is the trainer's own timing of its training steps. MSD runs the
student on 1 + M inputs per step (full + each modality alone) in one batched pass; the
``learned`` weighting adds a double backward and a forward on a held-out batch.

    python benchmarks/bench_msd_step.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine.api import distill
from mmdistill.models import EncoderConfig, ModelConfig, build_model

RUNS = [
    ("kd", "kd", {}),
    ("msd-uniform", "msd", {"weighting": "uniform"}),
    ("msd-population", "msd", {"weighting": "population"}),
    ("msd-instance", "msd", {"weighting": "instance"}),
    ("msd-learned", "msd", {"weighting": "learned", "heldout_fraction": 0.1}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = build_splits("mfeat", {"views": ["fou", "zer", "mor"]})
    specs, n = data.train.specs(), data.num_classes
    mods = ["fou", "zer", "mor"]
    trainer = TrainerConfig(epochs=3, batch_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        teacher = build_model(ModelConfig(modalities=mods, encoder=EncoderConfig(hidden=[256], out_dim=256)), specs, n)
        times: dict[str, list[float]] = {name: [] for name, _, _ in RUNS}
        for r in range(args.repeats + 1):  # repeat 0 warms up and builds the caches
            for name, method, params in RUNS:
                torch.manual_seed(1)
                student = build_model(
                    ModelConfig(modalities=mods, encoder=EncoderConfig(hidden=[16], out_dim=16)), specs, n
                )
                res = distill(
                    student,
                    teacher,
                    data,
                    tmp / f"{name}{r}",
                    method,
                    params,
                    trainer=trainer,
                    cache=CacheConfig(dir=tmp / "c"),
                )
                if r:
                    times[name].append(res.train_seconds / res.train_steps)
    kd = min(times["kd"])
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, threads {args.threads}; mfeat fou+zer+mor, "
        "batch 64, "
        f"{len(data.train)} train examples, min of {args.repeats} repeats"
    )
    for name, _, _ in RUNS:
        print(f"{name:15s} {min(times[name]) * 1e3:7.3f} ms/step   ratio to kd {min(times[name]) / kd:5.2f}")


if __name__ == "__main__":
    main()
