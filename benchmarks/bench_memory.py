"""Peak RSS of training on a generated ``folder`` dataset at 1x and 10x size, and RSS across epochs.

The folder format keeps ``.npy`` modality files on disk and reads only each batch's rows
(``mmdistill.data.formats.ondisk``), so peak memory should not grow with the data: the 10x/1x ratio
of peak RSS should be far below 10. Every measurement runs in a fresh Python process that
reports its own peak: VmHWM from ``/proc/self/status`` (the headline) and ``ru_maxrss``. On
Linux a child's ``ru_maxrss`` (and the parent's ``RUSAGE_CHILDREN``) starts from the parent's
own high-water mark, inherited through fork + exec, so the parent keeps its RSS small (it
writes the data with plain writes) and both are printed. A control run copies the same splits into memory first
(what the loader did before), to show what the ratio would otherwise be.

Training: KD (teacher cache on) from a random MLP teacher on both modalities into an MLP
student on both, 1 epoch, batch 512, 1 thread; then the same without a teacher (supervised),
which isolates the data path from the teacher cache (a table of N x classes logits in memory).
The epochs run trains a smaller dataset for
50 epochs and records VmRSS after every epoch.

    python benchmarks/bench_memory.py [--rows 60000] [--dim 512] [--dir /tmp/mmd-bench-memory]
    python benchmarks/bench_memory.py --gather-only   # ms per batch of 512 random rows: on disk vs in memory
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = 10


def write_folder_dataset(
    root: Path, rows: int, modalities: int = 2, dim: int = 512, classes: int = CLASSES, seed: int = 0, chunk: int = 8192
) -> int:
    """A paired folder dataset: train ``rows``, val and test ``rows // 10``; returns bytes written.

    Modality ``m{i}`` of an example of class c is ``mu[i, c] + N(0, 1)`` (float32, ``dim``
    features); written chunk by chunk so the writer's memory stays small.
    """
    rng = np.random.default_rng(seed)
    mu = rng.normal(scale=0.3, size=(modalities, classes, dim)).astype(np.float32)
    total = 0
    for split, n in (("train", rows), ("val", max(rows // 10, classes)), ("test", max(rows // 10, classes))):
        (root / split).mkdir(parents=True, exist_ok=True)
        y = rng.integers(0, classes, n)
        y[:classes] = np.arange(classes)  # every class in every split
        np.save(root / split / "labels.npy", y)
        for i in range(modalities):
            # plain writes, not a writable memmap: mapped dirty pages would raise this process's RSS
            # high-water mark, which a forked child's ru_maxrss inherits
            with open(root / split / f"m{i}.npy", "wb") as f:
                header = {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                    "fortran_order": False,
                    "shape": (n, dim),
                }
                np.lib.format.write_array_header_1_0(f, header)
                for s in range(0, n, chunk):
                    yy = y[s : s + chunk]
                    f.write((mu[i, yy] + rng.standard_normal((len(yy), dim), dtype=np.float32)).tobytes())
            total += n * dim * 4
    (root / "meta.json").write_text(json.dumps({"num_classes": classes}))
    return total


def _vm(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def child(args: argparse.Namespace) -> None:
    """One measured run; prints a JSON line with RSS figures in MiB."""
    import torch

    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.data import build_splits
    from mmdistill.data.contracts.dataset import DataSplits, MultimodalDataset
    from mmdistill.engine.api import distill
    from mmdistill.engine.system import logging as run_logging
    from mmdistill.models import EncoderConfig, ModelConfig, build_model

    torch.set_num_threads(args.threads)
    after_import = _vm("VmRSS")
    per_epoch: list[int] = []
    original = run_logging.RunLogger.log_epoch

    def log_epoch(self, epoch, values):  # RSS at the end of every epoch
        per_epoch.append(_vm("VmRSS"))
        return original(self, epoch, values)

    run_logging.RunLogger.log_epoch = log_epoch
    data = build_splits("folder", {"root": args.root})
    if args.in_memory:  # control: the splits copied into memory, as the loader did before
        data = DataSplits(
            *(
                MultimodalDataset(dict(d.tensors), d.labels, d.num_classes, d.name)
                for d in (data.train, data.val, data.test)
            )
        )
    after_load = _vm("VmRSS")
    specs, n, mods = data.train.specs(), data.num_classes, [s.name for s in data.train.specs()]
    torch.manual_seed(0)
    teacher = build_model(ModelConfig(modalities=mods, encoder=EncoderConfig(hidden=[128], out_dim=64)), specs, n)
    student = build_model(ModelConfig(modalities=mods, encoder=EncoderConfig(hidden=[64], out_dim=32)), specs, n)
    trainer = TrainerConfig(epochs=args.epochs, batch_size=512, num_threads=args.threads)
    start = time.perf_counter()
    params = {"temperature": 4.0} if args.method == "kd" else {}
    res = distill(
        student,
        teacher,
        data,
        Path(args.work) / "run",
        args.method,
        params,
        trainer=trainer,
        cache=CacheConfig(dir=Path(args.work) / "cache"),
        quiet=True,
    )
    mib = 1 / 1024
    print(
        json.dumps(
            {
                "rows": len(data.train),
                "after_import_mib": after_import * mib,
                "after_load_mib": after_load * mib,
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * mib,
                "vmhwm_mib": _vm("VmHWM") * mib,
                "epoch_rss_mib": [r * mib for r in per_epoch],
                "train_seconds": res.train_seconds,
                "wall_seconds": time.perf_counter() - start,
                "test_accuracy": res.test["accuracy"],
            }
        )
    )


def measure(root: Path, work: Path, threads: int, epochs: int = 1, in_memory: bool = False, method: str = "kd") -> dict:
    """Run :func:`child` in a fresh interpreter; its JSON plus the parent's RUSAGE_CHILDREN peak so far."""
    shutil.rmtree(work, ignore_errors=True)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--root",
        str(root),
        "--work",
        str(work),
        "--threads",
        str(threads),
        "--epochs",
        str(epochs),
        "--method",
        method,
    ] + (["--in-memory"] if in_memory else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["children_maxrss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def gather_ms(rows: int = 200000, dim: int = 512, batches: int = 200, threads: int = 1) -> None:
    """Time to gather a batch of 512 random rows: on-disk column (pread), numpy memmap indexing, in-memory tensor."""
    import torch

    from mmdistill.data.formats.ondisk import DiskArray

    torch.set_num_threads(threads)
    base = Path(tempfile.mkdtemp(prefix="mmd-bench-gather-"))
    try:
        write_folder_dataset(base, rows, modalities=1, dim=dim)
        mm = np.load(base / "train" / "m0.npy", mmap_mode="r")
        col, mem = DiskArray.of(mm), torch.from_numpy(np.array(mm))
        rng = np.random.default_rng(0)
        idx = [rng.choice(rows, 512, replace=False) for _ in range(batches)]
        for name, fetch in (
            ("on disk (pread)", col.take),
            ("np.memmap indexing", lambda i: torch.from_numpy(mm[i])),
            ("in-memory tensor", lambda i: mem[torch.from_numpy(i)]),
        ):
            fetch(idx[0])
            start = time.perf_counter()
            for i in idx:
                fetch(i)
            print(f"{name:20s} {(time.perf_counter() - start) / batches * 1e3:6.3f} ms per 512 rows of {dim * 4} bytes")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=60000, help="train rows at 1x")
    ap.add_argument("--dim", type=int, default=512, help="float32 features per modality (2 modalities)")
    ap.add_argument("--epoch-rows", type=int, default=20000, help="train rows of the 50-epoch run")
    ap.add_argument("--long-epochs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where to write the datasets (deleted afterwards); default a temp dir")
    ap.add_argument("--skip-control", action="store_true", help="skip the in-memory control runs")
    ap.add_argument("--gather-only", action="store_true", help="only time batch gathers (see gather_ms)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="kd", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.gather_only:
        return gather_ms(dim=args.dim, threads=args.threads)

    base = Path(args.dir or tempfile.mkdtemp(prefix="mmd-bench-memory-"))
    try:
        print(
            f"machine: {platform.machine()}, {platform.python_version()}, threads {args.threads}; "
            f"2 modalities x {args.dim} float32 features, KD, batch 512; figures in MiB"
        )
        rows: dict[str, dict] = {}
        for scale in (1, 10):
            root = base / f"x{scale}"
            t = time.perf_counter()
            size = write_folder_dataset(root, args.rows * scale, dim=args.dim)
            print(
                f"  wrote {scale}x: {args.rows * scale} train rows, {size / 2**30:.2f} GiB in "
                f"{time.perf_counter() - t:.0f} s"
            )
            rows[f"on disk {scale}x"] = measure(root, base / "work", args.threads) | {"gib": size / 2**30}
            rows[f"on disk {scale}x, supervised"] = measure(root, base / "work", args.threads, method="supervised") | {
                "gib": size / 2**30
            }
            if not args.skip_control:
                rows[f"in memory {scale}x"] = measure(root, base / "work", args.threads, in_memory=True) | {
                    "gib": size / 2**30
                }
            if scale == 10:
                shutil.rmtree(root)
        print(
            f"\nparent: own ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
            f"RUSAGE_CHILDREN ru_maxrss {rows[list(rows)[-1]]['children_maxrss_mib']:.0f} MiB"
        )
        print(
            "\n| run | data on disk (GiB) | RSS after imports | RSS after loading | peak RSS (VmHWM) | peak "
            "(ru_maxrss) "
            "| peak - imports | train s/epoch |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, r in rows.items():
            print(
                f"| {name} | {r['gib']:.2f} | {r['after_import_mib']:.0f} | {r['after_load_mib']:.0f} | "
                f"{r['vmhwm_mib']:.0f} | "
                f"{r['peak_mib']:.0f} | {r['vmhwm_mib'] - r['after_import_mib']:.0f} | {r['train_seconds']:.1f} |"
            )
        for kind in ("on disk", "in memory"):
            for suffix in ("", ", supervised"):
                if f"{kind} 10x{suffix}" not in rows:
                    continue
                a, b = rows[f"{kind} 1x{suffix}"], rows[f"{kind} 10x{suffix}"]
                print(
                    f"{kind}{suffix}: peak RSS 10x/1x = {b['vmhwm_mib'] / a['vmhwm_mib']:.2f}; above imports 10x/1x = "
                    f"{(b['vmhwm_mib'] - b['after_import_mib']) / (a['vmhwm_mib'] - a['after_import_mib']):.2f}"
                )

        root = base / "epochs"
        write_folder_dataset(root, args.epoch_rows, dim=args.dim)
        r = measure(root, base / "work", args.threads, epochs=args.long_epochs)
        e = r["epoch_rss_mib"]
        print(
            f"\n{args.long_epochs} epochs on {args.epoch_rows} train rows: RSS after epoch 1 {e[0]:.1f}, epoch 5 "
            f"{e[4]:.1f}, "
            f"epoch {len(e)} {e[-1]:.1f} MiB (epoch 50 / epoch 5 = {e[-1] / e[4]:.3f}); max over epochs 5-{len(e)} "
            f"{max(e[4:]):.1f}, peak (VmHWM) {r['vmhwm_mib']:.1f}"
        )
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
