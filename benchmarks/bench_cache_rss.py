"""Peak RSS of the teacher cache as the rows grow (1x / 4x / 16x): its build, and a KD epoch reading it from disk.

The data: an item dataset whose items are made from their index (64 float32 features each; nothing grows in memory
with the rows but what mmdistill holds), ``--classes`` classes, with a fingerprint (so the cache applies). The
teacher and the student: small MLPs (the teacher's logits are the table: rows x classes float32). Each measurement
runs in a fresh Python process (the parent never imports torch), which reports its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its RSS before the measured work (after the imports and the
models), so the difference is what the work added:

* ``build``: ``engine.teacher.cached_table`` on an empty folder (the teacher's pass over every row, the file written);
* ``epoch``: ``distill()`` with KD for one epoch from that cache, a hit read per batch from the file
  (``MMDISTILL_CACHE_MEMORY_MB=--memory-mb``, default 0: no table held in memory).

    python benchmarks/bench_cache_rss.py [--rows 4096] [--classes 1000] [--scales 1 4 16] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FEATURES = 64


def child(kind: str, rows: int, classes: int, batch: int, cache_dir: str, out_dir: str) -> dict:
    """In a fresh process: the RSS before and the peak after ``kind`` (build or epoch), in MiB."""
    import resource

    import torch

    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.data.contracts.item_dataset import ItemDataset
    from mmdistill.engine.api import distill
    from mmdistill.engine.teacher import cached_table
    from mmdistill.methods.base import TeacherRequest
    from mmdistill.models import build_model

    torch.set_num_threads(1)

    class Generated(torch.utils.data.Dataset):
        """Item i: 64 features drawn from a generator seeded by i, label i mod classes; nothing held per row."""

        num_classes = classes

        def __init__(self, n: int, tag: int) -> None:
            self.n, self.tag = n, tag

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> dict:
            g = torch.Generator().manual_seed(self.tag * 1_000_003 + i)
            return {"x": torch.randn(FEATURES, generator=g), "label": torch.tensor(i % classes)}

        def fingerprint(self) -> str:
            return f"generated-{self.n}-{self.tag}"

    train, val, test = Generated(rows, 0), Generated(256, 1), Generated(256, 2)
    split = ItemDataset(train, "train")
    torch.manual_seed(0)
    mlp = {"modalities": ["x"], "encoder": {"hidden": [128], "out_dim": 64}}
    teacher, student = build_model(mlp, split.specs(), classes), build_model(mlp, split.specs(), classes)

    def rss_now() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    before = rss_now()
    if kind == "build":
        cached_table(teacher, split, TeacherRequest(), None, Path(cache_dir), batch, torch.device("cpu"))
    else:
        trainer = TrainerConfig(epochs=1, batch_size=batch, num_threads=1)
        distill(student, teacher, train=train, val=val, test=test, out_dir=out_dir, quiet=True, trainer=trainer,
                cache=CacheConfig(dir=cache_dir))  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"before": before, "peak": peak, "added": peak - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="rows at scale 1")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--memory-mb", default="0", help="MMDISTILL_CACHE_MEMORY_MB for the epoch (0: read per batch)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rows, cache_dir, out_dir, _ = args.child
        print(json.dumps(child(kind, int(rows), args.classes, args.batch, cache_dir, out_dir)))
        return
    root = Path(tempfile.mkdtemp(prefix="bench-cache-rss-"))
    env = {**os.environ, "MMDISTILL_CACHE_MEMORY_MB": args.memory_mb, "OMP_NUM_THREADS": "1"}
    print(f"{args.classes} classes, batch {args.batch}, MMDISTILL_CACHE_MEMORY_MB={args.memory_mb}; MiB")
    print("| scale | rows | table (MiB) | build: before | build: peak | build: added | epoch: before | epoch: peak "
          "| epoch: added |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for scale in args.scales:
        rows = args.rows * scale
        cache_dir, figures = root / f"cache-{scale}", {}
        for kind in ("build", "epoch"):
            command = [sys.executable, __file__, "--classes", str(args.classes), "--batch", str(args.batch),
                       "--child", kind, str(rows), str(cache_dir), str(root / f"run-{scale}"), "-"]  # fmt: skip
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            figures[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        table = rows * args.classes * 4 / (1 << 20)
        b, e = figures["build"], figures["epoch"]
        print(f"| {scale}x | {rows:,} | {table:.0f} | {b['before']:.0f} | {b['peak']:.0f} | {b['added']:.0f} "
              f"| {e['before']:.0f} | {e['peak']:.0f} | {e['added']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
