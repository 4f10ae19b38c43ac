"""A ViT-Base-sized Hugging Face teacher (random weights, loaded through ``type: hf``) on the CPU: online against
cached KD, and the cache's build against the teacher's own forward passes.

The teacher: ViT with ViT-Base's width and depth (768 wide, 12 blocks, 12 heads, 3072 MLP; 85.8M parameters) on
16 x 16 images in 8 x 8 patches (5 tokens, to keep a CPU run short), saved with ``save_pretrained`` and loaded by the
``hf`` encoder. The student: a small CNN. The data: an item dataset of random images, 4 classes, with a fingerprint
(deterministic: the cache applies). Figures, each the minimum over ``--repeats``:

* ``forward``: the teacher's bare forward passes over the training split (``no_grad``, batches of ``--batch``);
* ``build``: building the teacher cache (``engine.teacher.cached_table`` on an empty folder: item reads, forward
  passes, the file written);
* ``bare``: a hand-written loop training the student with KD on precomputed teacher logits (``--epochs``), slicing
  the images from the dataset's tensor;
* ``bare_items``: the same loop reading the batches as a ``DataLoader`` without workers does (``dataset[i]`` per
  item, ``default_collate``): the work any loop over this item ``Dataset`` pays;
* ``lookup``: the cache's own share of the cached run's steps: ``TeacherTable.lookup`` of every training batch of
  ``--epochs`` epochs on the built cache (a hit);
* ``supervised`` / ``cached`` / ``online``: ``distill()``'s training steps of ``--epochs`` epochs, as its trainer
  times them (``RunResult.train_seconds``: data, teacher outputs, forward, losses, backward, step), of the student alone
  (``supervised``), with KD from the built cache (a hit), and with KD from the teacher run every step
  (``cache.enabled = false``).

    python benchmarks/bench_hf_teacher.py [--rows 256] [--batch 32] [--epochs 4] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate


class RandomImages(torch.utils.data.Dataset):
    num_classes = 4

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.images = torch.rand(n, 3, 16, 16, generator=g) + 0.3 * self.labels.view(-1, 1, 1, 1)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i]}

    def fingerprint(self) -> str:
        return f"random-images-{len(self)}-{self.seed}"


def save_teacher(folder: Path) -> None:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072)  # fmt: skip
    ViTModel(config).save_pretrained(folder)


def models(folder: Path, specs):
    from mmdistill.models import build_model

    torch.manual_seed(0)
    teacher = build_model(
        {"modalities": ["image"], "encoders": {"image": {"type": "hf", "path": str(folder), "pooling": "cls"}}},
        specs,
        4,
    )
    student = build_model(
        {"modalities": ["image"], "encoders": {"image": {"type": "cnn2d", "channels": [16, 32], "out_dim": 32}}},
        specs,
        4,
    )
    return teacher.eval(), student


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_forward(teacher, train, batch: int) -> None:
    with torch.no_grad():
        for start in range(0, len(train), batch):
            teacher({"image": train.images[start : start + batch]})


def bare_kd_epoch(student, logits, train, batch: int, read_items: bool = False) -> None:
    """One epoch of KD on precomputed ``logits``: each batch sliced from the dataset's tensors, or with ``read_items``
    read as a ``DataLoader`` without workers does (``train[i]`` per item, ``default_collate``)."""
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    for rows in order.split(batch):
        if read_items:
            items = default_collate([train[i] for i in rows.tolist()])
        else:
            items = {"image": train.images[rows], "label": train.labels[rows]}
        out = student({"image": items["image"]})
        kl = F.kl_div(F.log_softmax(out / 4, 1), F.softmax(logits[rows] / 4, 1), reduction="batchmean") * 16
        loss = 0.5 * F.cross_entropy(out, items["label"]) + 0.5 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()


def lookups(table, rows: int, batch: int, epochs: int) -> None:
    for epoch in range(1, epochs + 1):
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(epoch))
        for idx in order.split(batch):
            table.lookup({"index": idx}, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each training run (the cache is built once)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.data.contracts.item_dataset import ItemDataset
    from mmdistill.engine.api import distill
    from mmdistill.engine.teacher import cached_table
    from mmdistill.methods.base import TeacherRequest

    root = Path(tempfile.mkdtemp(prefix="bench-hf-"))
    save_teacher(root / "vit")
    train, val, test = RandomImages(args.rows, 0), RandomImages(64, 1), RandomImages(64, 2)
    split = ItemDataset(train, "train")
    teacher, student = models(root / "vit", split.specs())
    print(f"teacher {sum(p.numel() for p in teacher.parameters()):,} parameters; {args.rows} rows, batch {args.batch}, "
          f"{args.threads} threads")  # fmt: skip
    with torch.no_grad():
        logits = torch.cat([teacher({"image": train.images[s : s + 256]}) for s in range(0, len(train), 256)])
    figures: dict[str, list[float]] = {
        k: [] for k in ("forward", "build", "lookup", "bare", "bare_items", "cached", "online", "supervised")
    }
    trainer = TrainerConfig(epochs=args.epochs, batch_size=args.batch, num_threads=args.threads)
    steps = -(-args.rows // args.batch) * args.epochs  # training steps of a run
    _, warm = models(root / "vit", split.specs())  # the first run pays the imports (torchmetrics ...): not timed
    distill(warm, None, out_dir=root / "warm-up", method="supervised", quiet=True, train=train, val=val, test=test,
            trainer=trainer, cache=CacheConfig(enabled=False))  # fmt: skip
    for r in range(args.repeats):
        figures["forward"].append(timed(lambda: bare_forward(teacher, train, args.batch)))
        cache_dir = root / f"cache-{r}"
        figures["build"].append(timed(lambda cache_dir=cache_dir: cached_table(
            teacher, split, TeacherRequest(), None, cache_dir, args.batch, torch.device("cpu"))))  # fmt: skip
        table, _ = cached_table(teacher, split, TeacherRequest(), None, cache_dir, args.batch, torch.device("cpu"))
        figures["lookup"].append(timed(lambda table=table: lookups(table, args.rows, args.batch, args.epochs)))
        _, fresh = models(root / "vit", split.specs())
        figures["bare"].append(
            timed(lambda fresh=fresh: [bare_kd_epoch(fresh, logits, train, args.batch) for _ in range(args.epochs)])
        )
        _, fresh = models(root / "vit", split.specs())
        figures["bare_items"].append(
            timed(lambda f=fresh: [bare_kd_epoch(f, logits, train, args.batch, True) for _ in range(args.epochs)])
        )
        for name, method, cache in (
            ("cached", "kd", CacheConfig(dir=cache_dir)),
            ("online", "kd", CacheConfig(enabled=False)),
            ("supervised", "supervised", CacheConfig(enabled=False)),
        ):
            _, fresh = models(root / "vit", split.specs())
            result = distill(
                fresh, teacher if method == "kd" else None, out_dir=root / f"{name}-{r}", method=method, quiet=True,
                train=train, val=val, test=test, trainer=trainer, cache=cache)  # fmt: skip
            figures[name].append(result.train_seconds / result.train_steps * steps)
    best = {k: min(v) for k, v in figures.items()}
    print(f"teacher forward passes over train: {best['forward']:.2f} s; cache build: {best['build']:.2f} s "
          f"({best['build'] / best['forward']:.2f}x the forward passes)")  # fmt: skip
    print(
        f"training steps of {args.epochs} epochs ({steps} steps, the trainer's own timing): bare KD loop on "
        f"precomputed logits {best['bare']:.2f} s, reading items as a DataLoader does {best['bare_items']:.2f} s; "
        f"distill() supervised (student alone) {best['supervised']:.2f} s, KD cached {best['cached']:.2f} s "
        f"({best['cached'] / best['bare']:.2f}x the bare loop, {best['cached'] / best['bare_items']:.2f}x the one "
        f"reading items), KD online {best['online']:.2f} s ({best['online'] / best['bare']:.2f}x); the cache's "
        f"lookups of those steps {best['lookup'] * 1000:.1f} ms ({100 * best['lookup'] / best['cached']:.1f}% of the "
        "cached run's steps)"
    )


if __name__ == "__main__":
    main()
