"""Time per training step on an image folder decoded by Pillow with DataLoader workers: mmdistill vs a hand loop.

The script writes ``--images`` PNG files (32x32 RGB, 4 classes) into a temp folder; ``__getitem__`` decodes one
with Pillow and, with augmentation, adds noise and a random horizontal flip. Both sides use the same DataLoader
settings (``--workers`` workers, batch ``--batch``), the same student and teacher CNNs (same initial weights), the
same loss ``(1 - lam) CE + lam T^2 KL(p_t || p_s)`` and the same Adam optimizer:

* ``fixed`` -- no augmentation: mmdistill reads the teacher's logits from its cache (the dataset has a
  ``fingerprint()``); the hand loop reads them from a precomputed tensor by example index;
* ``online`` -- random augmentation: the teacher runs on every augmented batch in both (eval mode, no grad).

Two figures per side: wall-clock time per training step (data loading + step; validation and checkpoints
excluded: mmdistill's ``RunResult.train_seconds`` / ``train_steps``), and CPU time per step of the whole call (this
process and its DataLoader workers, user + system; mmdistill's includes its validation on 64 images per epoch,
its final val/test and its checkpoints): on a shared machine the CPU time is the steadier one. Repeats
alternating hand loop / mmdistill. Ratio = mmdistill / hand loop, of the minima and the median of the ratios of
each repeat's back-to-back pair.

    python benchmarks/bench_dataloader.py [--threads 1] [--workers 2] [--images 1024] [--batch 64] [--repeats 3]

Two more measurements, each alone:

* ``--collate``: CPU time of mmdistill's collate (``collate_items``) against torch's ``default_collate`` for the same
  batch of ``--batch`` dict items (a 3x32x32 float image and a label each), rounds alternating, median; mmdistill's
  with its value checks (the first pass over items, every batch of random items) and without them (a later pass).
* ``--item-vs-column``: the same in-memory images as column data (``MultimodalDataset``) and as a torch Dataset of
  dict items (the item path: collate, checks, DataLoader; ``--workers 0``: in the training process),
  ``distill`` with KD from the teacher cache, ``--epochs`` epochs; CPU time of a training step including making its
  batch (the median over the run of the CPU time between the starts of consecutive steps; the steps after an
  epoch's validation are the few outliers the median leaves out), repeats alternating.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data.contracts.collate import collate_items
from mmdistill.engine.api import distill
from mmdistill.methods.kd import kd_loss

LAM, TEMP, EPOCHS, CLASSES = 0.5, 4.0, 2, 4


def write_images(folder: Path, n: int, seed: int) -> list[tuple[Path, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = int(rng.integers(CLASSES))
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        pixels[:, :, label % 3] //= 2  # a class signal in one channel
        path = folder / f"{i:05d}.png"
        Image.fromarray(pixels).save(path)
        rows.append((path, label))
    return rows


class ImageFolder(Dataset):
    modalities = ("image",)
    num_classes = CLASSES

    def __init__(self, rows: list[tuple[Path, int]], augment: bool) -> None:
        self.rows, self.random = rows, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        path, label = self.rows[i]
        with Image.open(path) as img:
            x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.random:
            x = x + 0.05 * torch.randn(x.shape)
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        return {"image": x, "label": torch.tensor(label)}

    def fingerprint(self) -> str:
        return f"{len(self.rows)}:{self.rows[0][0].parent}"


class CNN(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.modalities = ("image",)
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, CLASSES),
        )

    def forward(self, batch: dict) -> torch.Tensor:
        return self.body(batch["image"])


def models() -> tuple[CNN, CNN]:
    torch.manual_seed(0)
    teacher = CNN(32).eval()
    torch.manual_seed(1)
    return teacher, CNN(16)


def hand_loop(
    train: ImageFolder, teacher: CNN, student: CNN, workers: int, batch: int, table: torch.Tensor | None
) -> tuple[float, int]:
    """Seconds per step: DataLoader + KD step, the teacher from ``table`` (by index) or run online."""
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    indexed = IndexedItems(train)
    loader = DataLoader(
        indexed, batch_size=batch, shuffle=True, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )
    seconds, steps = 0.0, 0
    for _ in range(EPOCHS):
        start = time.perf_counter()
        for b in loader:
            if table is not None:
                t_logits = table[b["index"]]
            else:
                with torch.no_grad():
                    t_logits = teacher(b)
            logits = student(b)
            loss = (1 - LAM) * F.cross_entropy(logits, b["label"]) + LAM * kd_loss(logits, t_logits, TEMP)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        seconds += time.perf_counter() - start
    return seconds / steps, steps


class IndexedItems(Dataset):
    def __init__(self, ds: ImageFolder) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return {**self.ds[i], "index": torch.tensor(i)}


def mmdistill_run(train, val, teacher, student, workers, batch, out: Path, cache_dir: Path) -> tuple[float, int]:
    cfg = TrainerConfig(epochs=EPOCHS, batch_size=batch, num_workers=workers, optimizer={"name": "adam", "lr": 1e-3})
    r = distill(
        student,
        teacher,
        train=train,
        val=val,
        test=val,
        out_dir=out,
        method="kd",
        method_params={"temperature": TEMP, "lam": LAM},
        trainer=cfg,
        cache=CacheConfig(dir=cache_dir),
    )
    return r.train_seconds / r.train_steps, r.train_steps


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds per step, CPU seconds per step of the whole call: main process + workers)."""
    start = cpu_seconds()
    wall, steps = fn(*args)
    return wall, (cpu_seconds() - start) / steps


def collate_cpu(batch: int, rounds: int) -> None:
    """``--collate``: median CPU microseconds per call of each collate over ``rounds`` alternating rounds."""
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.rand(3, 32, 32, generator=g), "label": torch.tensor(i % CLASSES)} for i in range(batch)]
    rows = list(range(batch))
    calls = {
        "torch default_collate": lambda: default_collate(items),
        "collate_items, value checks": lambda: collate_items(items, rows, ["image"], "classification", CLASSES),
    }
    if "check_values" in inspect.signature(collate_items).parameters:  # absent before the first-pass checks
        calls["collate_items, no value checks"] = lambda: collate_items(
            items, rows, ["image"], "classification", CLASSES, check_values=False
        )
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(50):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.process_time()
            for _ in range(300):
                call()
            times[name].append((time.process_time() - start) / 300)
    base = statistics.median(times["torch default_collate"])
    print(f"collate of {batch} items (3x32x32 float image + label), CPU us per call, median of {rounds} rounds:")
    for name, spent in times.items():
        print(f"  {name}: {1e6 * statistics.median(spent):.1f} us, x{statistics.median(spent) / base:.2f}")


class InMemoryItems(Dataset):
    """The rows of in-memory tensors as dict items (what a user's map-style Dataset returns)."""

    modalities = ("image",)
    num_classes = CLASSES

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.y[i]}

    def fingerprint(self) -> str:
        return f"in-memory:{len(self.y)}:{float(self.x[0, 0, 0, 0])}"


def step_cpu_seconds(run) -> float:
    """Median CPU seconds between the starts of consecutive training steps of ``run()`` (a step and its batch)."""
    from mmdistill.engine import trainer as trainer_module

    starts: list[float] = []
    real = trainer_module._Training.train_step

    def timed_step(self, *args, **kwargs):
        starts.append(time.process_time())
        return real(self, *args, **kwargs)

    trainer_module._Training.train_step = timed_step
    try:
        run()
    finally:
        trainer_module._Training.train_step = real
    return statistics.median(b - a for a, b in zip(starts, starts[1:]))


def item_vs_column(args, tmp: Path) -> None:
    """``--item-vs-column``: CPU per training step on the same images held as columns and as dict items."""
    from mmdistill.data.contracts.dataset import MultimodalDataset

    g = torch.Generator().manual_seed(0)
    y = torch.randint(CLASSES, (args.images + 64,), generator=g)
    x = torch.rand(args.images + 64, 3, 32, 32, generator=g)
    x[torch.arange(len(y)), y % 3] *= 0.5  # a class signal in one channel
    parts = {"train": slice(0, args.images), "val": slice(args.images, None)}
    column = {k: MultimodalDataset({"image": x[r]}, y[r], CLASSES, k) for k, r in parts.items()}
    item = {k: InMemoryItems(x[r], y[r]) for k, r in parts.items()}
    cfg = TrainerConfig(
        epochs=args.epochs, batch_size=args.batch, num_workers=args.workers, optimizer={"name": "adam", "lr": 1e-3}
    )
    times: dict[str, list[float]] = {"column": [], "item": []}
    for rep in range(args.repeats):
        for kind, data in (("column", column), ("item", item)):
            teacher, student = models()

            def run(data=data, teacher=teacher, student=student, out=tmp / f"{kind}{rep}") -> None:
                distill(
                    student,
                    teacher,
                    train=data["train"],
                    val=data["val"],
                    test=data["val"],
                    out_dir=out,
                    method="kd",
                    method_params={"temperature": TEMP, "lam": LAM},
                    trainer=cfg,
                    cache=CacheConfig(dir=tmp / "cache"),
                )

            times[kind].append(step_cpu_seconds(run))
    col, itm = min(times["column"]), min(times["item"])
    paired = sorted(b / a for a, b in zip(times["column"], times["item"]))
    print(
        f"CPU ms per training step (its batch included), {args.images} images 3x32x32, batch {args.batch}, "
        f"{args.workers} workers, {args.epochs} epochs: column {1e3 * col:.3f}, item {1e3 * itm:.3f}, ratio of minima "
        f"{itm / col:.3f}, median of paired ratios {paired[len(paired) // 2]:.3f} (all: column "
        f"{[round(1e3 * t, 3) for t in times['column']]}, item {[round(1e3 * t, 3) for t in times['item']]})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--collate", action="store_true", help="time the collate alone (see above)")
    ap.add_argument("--item-vs-column", action="store_true", help="CPU per step, item data against column data")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of --item-vs-column")
    ap.add_argument("--rounds", type=int, default=9, help="rounds of --collate")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.collate:
        collate_cpu(args.batch, args.rounds)
        return
    if args.item_vs_column:
        with tempfile.TemporaryDirectory() as tmp:
            item_vs_column(args, Path(tmp))
        return
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} thread(s), {args.workers} workers, {args.images} PNGs 32x32, batch {args.batch}, "
        f"{EPOCHS} epochs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "png").mkdir()
        rows = write_images(tmp / "png", args.images + 64, seed=0)
        for mode in ("fixed", "online"):
            train, val = ImageFolder(rows[: args.images], mode == "online"), ImageFolder(rows[args.images :], False)
            # val (= test here): 64 images, so that mmdistill's per-epoch validation weighs little in its CPU time
            teacher, _ = models()
            table = None
            if mode == "fixed":  # the hand loop's precomputed logits (mmdistill builds its cache in its first run)
                with torch.no_grad():
                    table = torch.cat(
                        [
                            teacher(
                                {"image": torch.stack([train[i]["image"] for i in range(s, min(s + 256, len(train)))])}
                            )
                            for s in range(0, len(train), 256)
                        ]
                    )
            hand, ours = [], []
            for rep in range(args.repeats):
                teacher, student = models()
                hand.append(timed(hand_loop, train, teacher, student, args.workers, args.batch, table))
                teacher, student = models()
                ours.append(
                    timed(
                        mmdistill_run,
                        train,
                        val,
                        teacher,
                        student,
                        args.workers,
                        args.batch,
                        tmp / f"{mode}{rep}",
                        tmp / "cache",
                    )
                )
            for k, what in ((0, "wall ms/step"), (1, "CPU ms/step")):
                h, o = min(x[k] for x in hand), min(x[k] for x in ours)
                paired = sorted(b[k] / a[k] for a, b in zip(hand, ours))
                print(
                    f"{mode:6s} {what}: hand loop {1e3 * h:.2f}, mmdistill {1e3 * o:.2f}, ratio of minima "
                    f"{o / h:.3f}, median of paired ratios {paired[len(paired) // 2]:.3f} (all: hand "
                    f"{[round(1e3 * x[k], 1) for x in hand]}, mmdistill {[round(1e3 * x[k], 1) for x in ours]})"
                )


if __name__ == "__main__":
    main()
