"""The fixed cost of an epoch's end beyond its validation pass: checkpoints, best weights, CSV and TensorBoard logs.

    PYTHONPATH=src python benchmarks/bench_epoch_end.py [--epochs 20] [--repeats 3] [--every 1 5]

Runs ``distill(..., "kd")`` on toy-two-modality (n = 2,000: 1,200 training rows, 400 validation rows), the student
of ``bench_kd_step.py`` (64 -> 256 -> 256 -> 128 -> 4, Adam), one thread, and times each call of the trainer's
``end_epoch`` and of the validation ``evaluate`` inside it (CPU time of the process, ``time.process_time``; wall
time beside it). The figure is the median over epochs 2.. (the first end loads TensorBoard) of
``end_epoch - validation``, for each ``trainer.checkpoint_every`` in ``--every`` (a commit without that key is
measured at its only behaviour, a checkpoint every epoch).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mmdistill.config import TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine import trainer as trainer_mod
from mmdistill.engine.api import distill
from mmdistill.models import EncoderConfig, ModelConfig, build_model


def models(data):
    specs, n = data.train.specs(), data.num_classes
    torch.manual_seed(0)
    teacher = build_model(
        ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[256], out_dim=128)), specs, n
    )
    torch.manual_seed(1)
    student = build_model(
        ModelConfig(modalities=["b"], encoder=EncoderConfig(hidden=[256, 256], out_dim=128)), specs, n
    )
    return teacher.eval(), student


def timed_run(data, out: Path, epochs: int, every: int | None) -> list[tuple[float, float, float, float]]:
    """Per epoch: (end_epoch CPU s, validation CPU s, end_epoch wall s, validation wall s)."""
    ends: list[tuple[float, float, float, float]] = []
    validation: list[tuple[float, float]] = []
    real_end, real_evaluate = trainer_mod._Training.end_epoch, trainer_mod.evaluate

    def evaluate(*args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        result = real_evaluate(*args, **kwargs)
        validation.append((time.process_time() - cpu, time.perf_counter() - wall))
        return result

    def end_epoch(self, *args, **kwargs):
        cpu, wall = time.process_time(), time.perf_counter()
        real_end(self, *args, **kwargs)
        ends.append((time.process_time() - cpu, *validation[-1][:1], time.perf_counter() - wall, validation[-1][1]))

    extra = {} if every is None else {"checkpoint_every": every}
    cfg = TrainerConfig(epochs=epochs, batch_size=64, optimizer={"name": "adam", "lr": 1e-3}, **extra)
    trainer_mod._Training.end_epoch, trainer_mod.evaluate = end_epoch, evaluate
    try:
        teacher, student = models(data)
        distill(student, teacher, data, out, "kd", {"temperature": 4.0, "lam": 0.5}, trainer=cfg, quiet=True)
    finally:
        trainer_mod._Training.end_epoch, trainer_mod.evaluate = real_end, real_evaluate
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = build_splits("toy-two-modality", {"n": 2000, "dim_a": 64, "dim_b": 64})
    has_key = "checkpoint_every" in TrainerConfig.model_fields
    settings = args.every if has_key else [None]
    print(f"torch {torch.__version__}, 1 thread, {args.epochs} epochs, {args.repeats} repeats")
    print(f"{'checkpoint_every':>16s} {'end - validation, CPU ms':>25s} {'wall ms':>8s} {'validation CPU ms':>18s}")
    with tempfile.TemporaryDirectory() as tmp:
        for every in settings:
            rows = []
            for r in range(args.repeats):
                rows += timed_run(data, Path(tmp) / f"run-{every}-{r}", args.epochs, every)[1:]
            beyond = statistics.median(end - val for end, val, _, _ in rows) * 1e3
            beyond_wall = statistics.median(end - val for _, _, end, val in rows) * 1e3
            val = statistics.median(v for _, v, _, _ in rows) * 1e3
            shown = "(key absent)" if every is None else str(every)
            print(f"{shown:>16s} {beyond:25.2f} {beyond_wall:8.2f} {val:18.2f}")


if __name__ == "__main__":
    main()
