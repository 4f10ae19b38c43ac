"""A ViT-Base-sized Hugging Face teacher (random weights, loaded through ``type: hf``) on the CPU: online against
cached KD, and the cache's build against the teacher's own forward passes.

The teacher: ViT with ViT-Base's width and depth (768 wide, 12 blocks, 12 heads, 3072 MLP; 85.8M parameters) on
16 x 16 images in 8 x 8 patches (5 tokens, to keep a CPU run short), saved with ``save_pretrained`` and loaded by the
``hf`` encoder. The student: a small CNN. The data: an item dataset of random images, 4 classes, with a fingerprint
(deterministic: the cache applies). Each repeat times every figure, in an order that changes from repeat to repeat;
the script prints each figure's median and, for each ratio, the median of the repeats' own ratios with every repeat's:

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
  (``cache.enabled = false``; ``--online-epochs`` epochs in ``--online-repeats`` repeats, scaled to the others' steps).

    python benchmarks/bench_hf_teacher.py [--rows 256] [--batch 32] [--epochs 4] [--repeats 2] [--threads 2]
        [--online-epochs 1] [--online-repeats 1]
"""

from __future__ import annotations

import argparse
import statistics
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
    parser.add_argument("--online-epochs", type=int, default=1, help="epochs of the online KD run (the teacher runs)")
    parser.add_argument("--online-repeats", type=int, default=1, help="repeats of the online KD run")
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

    def build(r: int) -> float:
        return timed(lambda: cached_table(
            teacher, split, TeacherRequest(), None, root / f"cache-{r}", args.batch, torch.device("cpu")))  # fmt: skip

    def bare(read_items: bool) -> float:
        _, fresh = models(root / "vit", split.specs())
        return timed(lambda: [bare_kd_epoch(fresh, logits, train, args.batch, read_items) for _ in range(args.epochs)])

    def run(name: str, r: int, epochs: int) -> float:
        """``distill()``'s training steps (its trainer's own timing), scaled to ``steps`` steps."""
        method, cache = {
            "cached": ("kd", CacheConfig(dir=root / f"cache-{r}")),
            "online": ("kd", CacheConfig(enabled=False)),
            "supervised": ("supervised", CacheConfig(enabled=False)),
        }[name]
        _, fresh = models(root / "vit", split.specs())
        result = distill(
            fresh, teacher if method == "kd" else None, out_dir=root / f"{name}-{r}", method=method, quiet=True,
            train=train, val=val, test=test, trainer=trainer.model_copy(update={"epochs": epochs}),
            cache=cache)  # fmt: skip
        return result.train_seconds / result.train_steps * steps

    training = {
        "bare": lambda r: bare(False),
        "bare_items": lambda r: bare(True),
        "cached": lambda r: run("cached", r, args.epochs),
        "supervised": lambda r: run("supervised", r, args.epochs),
    }

    def forward() -> float:
        return timed(lambda: bare_forward(teacher, train, args.batch))

    for r in range(args.repeats):  # each repeat in another order, so that drift over the run cancels
        for name in ("forward", "build") if r % 2 == 0 else ("build", "forward"):
            figures[name].append(build(r) if name == "build" else forward())
        table, _ = cached_table(teacher, split, TeacherRequest(), None, root / f"cache-{r}", args.batch,
                                torch.device("cpu"))  # fmt: skip
        figures["lookup"].append(timed(lambda table=table: lookups(table, args.rows, args.batch, args.epochs)))
        names = list(training)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            figures[name].append(training[name](r))
        if r < args.online_repeats:
            figures["online"].append(run("online", r, args.online_epochs))
    med = {k: statistics.median(v) for k, v in figures.items() if v}

    def paired(a: str, b: str) -> str:
        ratios = [x / y for x, y in zip(figures[a], figures[b], strict=True)]
        return f"{statistics.median(ratios):.2f}x (each repeat: {', '.join(f'{x:.2f}' for x in ratios)})"

    print(f"medians of {args.repeats} repeats; ratios: the median of each repeat's ratio")
    print(f"teacher forward passes over train: {med['forward']:.2f} s; cache build: {med['build']:.2f} s; "
          f"build / forward {paired('build', 'forward')}")  # fmt: skip
    print(
        f"training steps of {args.epochs} epochs ({steps} steps, the trainer's own timing): bare KD loop on "
        f"precomputed logits {med['bare']:.2f} s, reading items as a DataLoader does {med['bare_items']:.2f} s; "
        f"distill() supervised (student alone) {med['supervised']:.2f} s, KD cached {med['cached']:.2f} s"
    )
    print(f"KD cached / the bare loop reading items: {paired('cached', 'bare_items')}")
    print(f"KD cached / the bare loop slicing tensors: {paired('cached', 'bare')}")
    print(f"student alone / the bare loop reading items: {paired('supervised', 'bare_items')}")
    print(
        f"KD online ({args.online_epochs} epoch(s), scaled to {steps} steps): {med['online']:.2f} s "
        f"({med['online'] / med['cached']:.1f}x KD cached); the cache's lookups of the cached run's steps "
        f"{med['lookup'] * 1000:.1f} ms ({100 * med['lookup'] / med['cached']:.1f}%)"
    )


if __name__ == "__main__":
    main()
