"""KD and MSD training steps, and a segmentation KD step, on a CUDA GPU in bf16 mixed precision, against bare loops.

Same student, data, batch size, optimizer and loss on both sides; the bare loop keeps the
data and the precomputed teacher logits on the GPU and runs its step under
``torch.autocast("cuda", torch.bfloat16)``; mmdistill runs ``distill(..., trainer.accelerator=gpu,
trainer.precision=bf16-mixed)`` with the teacher cache on (built before timing). Reports
ms/step (minimum over epochs of the epoch's mean, after a warm-up run), samples/s and the peak
GPU memory allocated (``torch.cuda.max_memory_allocated``) of each. On a machine without CUDA
it says so and exits 0.

Segmentation: the RGB+depth U-Net teacher and the RGB U-Net student of ``configs/rgbd_scenes_seg.yaml`` (wider,
on larger procedural scenes), per-pixel KD with the teacher run online on every batch (``cache.enabled=false``),
data through a DataLoader (``--workers`` processes, pinned memory) on both sides; the bare loop is the same
DataLoader, teacher forward and student step written by hand.

    python benchmarks/bench_gpu.py [--batch 256 1024] [--repeats 3] [--n 60000] [--width 1024]
                                   [--seg-batch 32] [--seg-scenes 2000] [--seg-size 96] [--workers 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

EPOCHS, LAM, TEMP = 3, 0.5, 4.0


def fit_module():
    """The module whose ``fit`` a run calls (the run assembly; ``engine.api`` in versions before it), so that the
    benchmark can read the trainer's per-epoch step times on this commit and on older ones side by side."""
    from mmdistill.engine import api

    try:
        from mmdistill.engine import assembly

        if hasattr(assembly, "fit"):
            return assembly
    except ImportError:
        pass
    return api


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--seg-batch", type=int, default=32)
    ap.add_argument("--seg-scenes", type=int, default=2000)
    ap.add_argument("--seg-size", type=int, default=96)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--skip-kd", action="store_true", help="only the segmentation step")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            f"no CUDA device visible to torch {torch.__version__} (torch.cuda.is_available() is False): nothing to "
            f"measure. Run this on a machine with an NVIDIA GPU and a CUDA build of torch."
        )
        return 0
    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.data import build_splits
    from mmdistill.engine.teacher import compute_table
    from mmdistill.methods.base import TeacherRequest
    from mmdistill.methods.kd import kd_loss
    from mmdistill.models import EncoderConfig, ModelConfig, build_model

    dev = torch.device("cuda")
    data = build_splits("toy-two-modality", {"n": args.n, "dim_a": 256, "dim_b": 256})
    specs, n_cls = data.train.specs(), data.num_classes

    def models():
        torch.manual_seed(0)
        teacher = build_model(
            ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[args.width], out_dim=256)), specs, n_cls
        )
        torch.manual_seed(1)
        student = build_model(
            ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[args.width, args.width], out_dim=256)),
            specs,
            n_cls,
        )
        return teacher.eval(), student

    def bare(batch: int) -> tuple[list[float], int]:
        teacher, student = models()
        student = student.to(dev)
        logits_t = (
            compute_table(teacher, data.train, TeacherRequest(), None, 4096, torch.device("cpu"))
            .tensors["logits"]
            .to(dev)
        )
        xa, xb, y = (data.train.tensors["a"].to(dev), data.train.tensors["b"].to(dev), data.train.labels.to(dev))
        opt = torch.optim.Adam(student.parameters(), lr=1e-3)
        torch.cuda.reset_peak_memory_stats()
        per_epoch = []
        for _ in range(EPOCHS):
            perm = torch.randperm(len(y), device=dev)
            torch.cuda.synchronize()
            start, steps = time.perf_counter(), 0
            for i in range(0, len(y), batch):
                idx = perm[i : i + batch]
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = student({"a": xa[idx], "b": xb[idx]})
                loss = (1 - LAM) * F.cross_entropy(out.float(), y[idx]) + LAM * kd_loss(
                    out.float(), logits_t[idx], TEMP
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
            torch.cuda.synchronize()
            per_epoch.append((time.perf_counter() - start) / steps)
        return per_epoch, torch.cuda.max_memory_allocated()

    def ours(batch: int, method: str, params: dict, tmp: Path, run: str) -> tuple[list[float], int]:
        teacher, student = models()
        cfg = TrainerConfig(
            epochs=EPOCHS,
            batch_size=batch,
            accelerator="gpu",
            precision="bf16-mixed",
            optimizer={"name": "adam", "lr": 1e-3},
        )
        return timed_distill(
            student, teacher, data, tmp / run, method, params, trainer=cfg, cache=CacheConfig(dir=tmp / "cache")
        )

    print(
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"toy-two-modality n={args.n} ({len(data.train)} train), student MLP width {args.width} on a+b, bf16-mixed, "
        f"{EPOCHS} epochs, min over epochs of {args.repeats} repeats after a warm-up"
    )
    runs = {
        "bare KD loop": None,
        "mmdistill kd": ("kd", {"temperature": TEMP, "lam": LAM}),
        "mmdistill msd (uniform)": ("msd", {"weighting": "uniform"}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for batch in [] if args.skip_kd else args.batch:
            times = {k: [] for k in runs}
            peak = {}
            for r in range(args.repeats + 1):  # repeat 0 warms up (kernels, caches)
                for name, spec in runs.items():
                    t, mem = bare(batch) if spec is None else ours(batch, *spec, tmp, f"{name[10:13]}-{batch}-{r}")
                    if r:
                        times[name] += t
                        peak[name] = max(peak.get(name, 0), mem)
            print_rows(batch, times, peak, "bare KD loop")
        segmentation(args, tmp)
    return 0


def timed_distill(*args, **kwargs) -> tuple[list[float], int]:
    """``distill(*args, **kwargs)``: seconds per training step of each epoch (the trainer's own timing) and the peak
    GPU memory allocated during the call."""
    from mmdistill.engine import api

    fitted = []
    runner = fit_module()
    real_fit = runner.fit
    runner.fit = lambda *a, **k: fitted.append(real_fit(*a, **k)) or fitted[-1]
    try:
        torch.cuda.reset_peak_memory_stats()
        api.distill(*args, **kwargs)
    finally:
        runner.fit = real_fit
    return [h["train_seconds"] / h["train_steps"] for h in fitted[0].history], torch.cuda.max_memory_allocated()


def print_rows(batch: int, times: dict[str, list[float]], peak: dict[str, int], bare: str) -> None:
    """One line per run: its best ms/step, samples/s, peak GPU memory and ratio to the bare loop ``bare``."""
    base = min(times[bare])
    for name in times:
        best = min(times[name])
        print(
            f"batch {batch:5d}  {name:24s} {best * 1e3:8.3f} ms/step  {batch / best:10.0f} samples/s  "
            f"peak GPU memory {peak[name] / 2**20:8.1f} MiB  ratio to bare {best / base:5.2f}"
        )


def stack_items(items: list[dict]) -> dict:
    """The bare loop's collate: stack each key of the items."""
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def segmentation(args: argparse.Namespace, tmp: Path) -> None:
    """Per-pixel KD, RGB+depth teacher -> RGB student, teacher online; bare loop against ``distill``."""
    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.data.generated.rgbd_scenes import rgbd_scene_splits
    from mmdistill.models.segmentation import build_segmentation_net
    from mmdistill.tasks import get_task

    dev, batch, widths = torch.device("cuda"), args.seg_batch, [32, 64, 128]
    splits = rgbd_scene_splits(n_scenes=args.seg_scenes, size=args.seg_size, seed=0)
    task = get_task({"name": "segmentation", "params": {"ignore_index": 255}})
    n_cls = splits.train.num_classes

    def models():
        torch.manual_seed(0)
        teacher = build_segmentation_net(["rgb", "depth"], {"rgb": 3, "depth": 1}, n_cls, widths)
        torch.manual_seed(1)
        student = build_segmentation_net(["rgb"], {"rgb": 3}, n_cls, widths)
        return teacher.eval(), student

    def bare() -> tuple[list[float], int]:
        teacher, student = models()
        teacher, student = teacher.to(dev), student.to(dev)
        loader = torch.utils.data.DataLoader(
            splits.train,
            batch_size=batch,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=True,
            collate_fn=stack_items,
            drop_last=False,
        )
        opt = torch.optim.Adam(student.parameters(), lr=1e-3)
        torch.cuda.reset_peak_memory_stats()
        per_epoch = []
        for _ in range(EPOCHS):
            torch.cuda.synchronize()
            start, steps = time.perf_counter(), 0
            for b in loader:
                b = {k: v.to(dev, non_blocking=True) for k, v in b.items() if isinstance(v, torch.Tensor)}
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    with torch.no_grad():
                        t_out = teacher(b)
                    out = student(b)
                loss = (1 - LAM) * task.loss(out.float(), b["label"]) + LAM * task.kd_loss(
                    out.float(), t_out.float(), TEMP, b["label"]
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
            torch.cuda.synchronize()
            per_epoch.append((time.perf_counter() - start) / steps)
        return per_epoch, torch.cuda.max_memory_allocated()

    def ours(run: str) -> tuple[list[float], int]:
        teacher, student = models()
        cfg = TrainerConfig(
            epochs=EPOCHS,
            batch_size=batch,
            accelerator="gpu",
            precision="bf16-mixed",
            num_workers=args.workers,
            optimizer={"name": "adam", "lr": 1e-3},
        )
        return timed_distill(
            student,
            teacher,
            splits,
            tmp / run,
            "kd",
            {"temperature": TEMP, "lam": LAM},
            trainer=cfg,
            cache=CacheConfig(enabled=False),
            task=task,
        )

    print(
        f"segmentation: rgbd-scenes {args.seg_scenes} scenes of {args.seg_size}x{args.seg_size} "
        f"({len(splits.train)} train), U-Net widths {widths}, {n_cls} classes, teacher RGB+depth online, student "
        f"RGB, batch {batch}, DataLoader {args.workers} workers, bf16-mixed, {EPOCHS} epochs"
    )
    times, peak = {"bare seg KD loop": [], "mmdistill kd (seg)": []}, {}
    for r in range(args.repeats + 1):
        for name in times:
            t, mem = bare() if name.startswith("bare") else ours(f"seg-{r}")
            if r:
                times[name] += t
                peak[name] = max(peak.get(name, 0), mem)
    print_rows(batch, times, peak, "bare seg KD loop")


if __name__ == "__main__":
    sys.exit(main())
