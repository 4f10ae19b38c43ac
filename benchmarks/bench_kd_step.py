"""Time per training step: mmdistill KD (teacher cache on) vs a bare hand-written PyTorch loop.

Both train the same student (same init, data, batch size, optimizer) with the same loss,
(1 - lam) * CE + lam * T^2 * KL, the bare loop reading precomputed teacher logits from a
tensor. The headline figure is the trainer's own timing of its
training steps (data loading, teacher-cache lookup, label checks, forward, named losses,
backward, optimizer step); the whole-run figure adds what `distill` does per epoch and at
the end (validation, checkpoints, CSV/TensorBoard logs, final val+test evaluation). The
teacher cache is built once before timing (once per teacher and split in real use). Repeats alternate; the figure
of each is the minimum over every epoch of every repeat of the epoch's mean step time (robust to a busy machine).

    python benchmarks/bench_kd_step.py [--threads 2] [--repeats 3] [--batch 64 512] [--no-cache-too]

``--batch`` takes several sizes (each measured separately); ``--no-cache-too`` also times
mmdistill with the teacher run every step (cache off), to compare a cache hit with the teacher.
``--student-width 8`` shrinks the student to (64 -> 8 -> 8 -> 4 -> 4 classes) so that a step is almost all fixed
overhead (the difference to the bare loop is then mmdistill's per-step cost, less masked by arithmetic).
``MMDISTILL_CACHE_MEMORY_MB=0`` forces the file-backed cache path; ``--lookup-only`` times only
getting a batch's teacher outputs: cache held in memory, file-backed cache, teacher forward pass.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.engine import api
from mmdistill.engine.api import distill
from mmdistill.engine.teacher import compute_table
from mmdistill.methods.base import TeacherRequest
from mmdistill.methods.kd import kd_loss
from mmdistill.models import EncoderConfig, ModelConfig, build_model

EPOCHS, LAM, TEMP = 3, 0.5, 4.0
BATCH = 128  # set per measurement by main()


STUDENT_WIDTH = 256  # --student-width: 8 makes the step's compute nearly nothing, so the difference is overhead


def fit_module():
    """The module whose ``fit`` a run calls (the run assembly; ``engine.api`` in versions before it), so that the
    benchmark can read the trainer's per-epoch step times on this commit and on older ones side by side."""
    try:
        from mmdistill.engine import assembly

        if hasattr(assembly, "fit"):
            return assembly
    except ImportError:
        pass
    return api


def make_models(data):
    specs, n = data.train.specs(), data.num_classes
    w = STUDENT_WIDTH
    torch.manual_seed(0)
    teacher = build_model(
        ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[256], out_dim=128)), specs, n
    ).eval()
    torch.manual_seed(1)
    student = build_model(
        ModelConfig(modalities=["b"], encoder=EncoderConfig(hidden=[w, w], out_dim=max(w // 2, 1))), specs, n
    )
    return teacher, student


def bare_loop(student, data, teacher_logits) -> list[float]:
    """Seconds per step of each epoch."""
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    xb, y = data.train.tensors["b"], data.train.labels
    n = len(y)
    per_epoch = []
    for epoch in range(EPOCHS):
        steps = 0
        start = time.perf_counter()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, n, BATCH):
            idx = perm[i : i + BATCH]
            logits = student({"b": xb[idx]})
            loss = (1 - LAM) * F.cross_entropy(logits, y[idx]) + LAM * kd_loss(logits, teacher_logits[idx], TEMP)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        per_epoch.append((time.perf_counter() - start) / steps)
    return per_epoch


def engine(
    student, teacher, data, workdir: Path, cache_dir: Path, run: str, cache: bool = True
) -> tuple[list[float], float, float]:
    """(seconds per training step of each epoch as timed by the trainer, whole distill() s/step, run's mean s/step)."""
    cfg = TrainerConfig(epochs=EPOCHS, batch_size=BATCH, optimizer={"name": "adam", "lr": 1e-3})
    fitted = []
    runner = fit_module()
    real_fit = runner.fit
    runner.fit = lambda *a, **k: fitted.append(real_fit(*a, **k)) or fitted[-1]  # to read the per-epoch step times
    try:
        start = time.perf_counter()
        r = distill(
            student,
            teacher,
            data,
            workdir / f"run{run}",
            "kd",
            {"temperature": TEMP, "lam": LAM},
            trainer=cfg,
            cache=CacheConfig(dir=cache_dir, enabled=cache),
            quiet=True,
        )
        whole = (time.perf_counter() - start) / r.train_steps
    finally:
        runner.fit = real_fit
    history = fitted[0].history
    mean = r.train_seconds / r.train_steps
    if history and "train_seconds" in history[0]:
        return [h["train_seconds"] / h["train_steps"] for h in history], whole, mean
    return [mean], whole, mean  # an older trainer: only the mean over the run


def measure(args, data, teacher, teacher_logits, tmp: Path) -> None:
    _, s = make_models(data)
    engine(s, teacher, data, tmp, tmp / "cache", f"{BATCH}-warm")  # warm-up; builds the teacher cache
    bare, ours, whole, online, bare_runs, ours_runs = [], [], [], [], [], []
    for r in range(args.repeats):
        _, s = make_models(data)
        epochs = bare_loop(s, data, teacher_logits)
        bare += epochs
        bare_runs.append(sum(epochs) / len(epochs))
        _, s = make_models(data)
        step_times, whole_time, run_mean = engine(s, teacher, data, tmp, tmp / "cache", f"{BATCH}-{r}")
        ours += step_times
        ours_runs.append(run_mean)
        whole.append(whole_time)
        if args.no_cache_too:
            _, s = make_models(data)
            online += engine(s, teacher, data, tmp, tmp / "cache", f"{BATCH}-{r}-online", cache=False)[0]
    b, o, w = min(bare), min(ours), min(whole)
    print(f"train examples {len(data.train)}, batch {BATCH}, epochs {EPOCHS}, repeats {args.repeats}")
    print(f"bare loop   {b * 1e3:.3f} ms/step (per epoch: {', '.join(f'{x * 1e3:.2f}' for x in bare)})")
    print(f"mmdistill   {o * 1e3:.3f} ms/step (per epoch: {', '.join(f'{x * 1e3:.2f}' for x in ours)})")
    if online:
        print(
            f"mmdistill, teacher run every step (cache off) {min(online) * 1e3:.3f} ms/step "
            f"(all: {', '.join(f'{x * 1e3:.3f}' for x in online)})"
        )
    print(
        f"mmdistill, whole distill() incl. per-epoch validation, checkpoints, logs, final val+test: {w * 1e3:.3f} "
        "ms/step"
    )
    print(f"overhead per step over the bare loop = {(o - b) * 1e3:.3f} ms")
    print(f"ratio mmdistill / bare, training steps = {o / b:.3f}")
    print(f"ratio mmdistill / bare, whole run      = {w / b:.3f}")
    print(
        f"min over repeats of each run's mean step: bare {min(bare_runs) * 1e3:.3f} ms, mmdistill "
        f"{min(ours_runs) * 1e3:.3f} ms, ratio {min(ours_runs) / min(bare_runs):.3f}"
    )


def lookup_only(args, data, teacher, tmp: Path) -> None:
    """Microseconds per batch: a cache hit held in memory, a file-backed cache hit, and the teacher's forward pass."""
    from mmdistill.engine.teacher import cached_table, teacher_outputs

    req, cpu = TeacherRequest(), torch.device("cpu")
    cached_table(teacher, data.train, req, None, tmp / "lk", 1024, cpu)
    held, _ = cached_table(teacher, data.train, req, None, tmp / "lk", 1024, cpu)
    os.environ["MMDISTILL_CACHE_MEMORY_MB"] = "0"
    try:
        on_disk, _ = cached_table(teacher, data.train, req, None, tmp / "lk", 1024, cpu)
    finally:
        del os.environ["MMDISTILL_CACHE_MEMORY_MB"]
    assert isinstance(held.columns["logits"], torch.Tensor) and not isinstance(on_disk.columns["logits"], torch.Tensor)
    for batch in args.batch:
        gen = torch.Generator().manual_seed(batch)
        batches = [data.train.__getitems__(torch.randperm(len(data.train), generator=gen)[:batch]) for _ in range(50)]
        timings = {}
        for name, fn in (
            ("cache hit, in memory", lambda b: held.lookup(b, cpu)),
            ("cache hit, file-backed", lambda b: on_disk.lookup(b, cpu)),
            ("teacher forward pass", lambda b: teacher_outputs(teacher, b, req, None)),
        ):
            best = float("inf")
            for _ in range(args.repeats * 3):
                start = time.perf_counter()
                for b in batches:
                    fn(b)
                best = min(best, (time.perf_counter() - start) / len(batches))
            timings[name] = best
        print(f"batch {batch}: " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in timings.items()))


def main() -> None:
    global BATCH, STUDENT_WIDTH
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, nargs="+", default=[128])
    ap.add_argument("--no-cache-too", action="store_true")
    ap.add_argument(
        "--lookup-only", action="store_true", help="only time the teacher outputs of a batch (cache vs teacher)"
    )
    ap.add_argument("--student-width", type=int, default=256, help="hidden width of the student MLP (default 256)")
    args = ap.parse_args()
    STUDENT_WIDTH = args.student_width
    torch.set_num_threads(args.threads)
    data = build_splits("toy-two-modality", {"n": args.n, "dim_a": 64, "dim_b": 64})
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
        f"MMDISTILL_CACHE_MEMORY_MB={os.environ.get('MMDISTILL_CACHE_MEMORY_MB', 'unset')}, "
        f"student width {STUDENT_WIDTH}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher, _ = make_models(data)
        if args.lookup_only:
            lookup_only(args, data, teacher.eval(), tmp)
            return
        teacher_logits = compute_table(teacher, data.train, TeacherRequest(), None, 1024, torch.device("cpu")).tensors[
            "logits"
        ]
        for size in args.batch:
            BATCH = size  # the module-level batch size that measure() and its helpers read
            measure(args, data, teacher, teacher_logits, tmp)


if __name__ == "__main__":
    main()
