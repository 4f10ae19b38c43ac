"""What a small CNN gets from RGB, depth and both on the procedural RGB-D scenes (test mIoU per seed).

For each seed and input set: generate the default scene set (300 scenes of 64x64, 180/60/60), train a
small fully convolutional network (4 dilated 3x3 conv layers, 32 channels, per-pixel cross-entropy with
ignore_index 255, AdamW) for a few epochs on the training scenes, keep the epoch of best validation mIoU
and report test mIoU (%). Shows that an RGB + depth teacher has information an RGB student cannot get
from these scenes (the near and far boxes), beyond what a per-pixel probe shows.

    python benchmarks/bench_rgbd_scenes.py --seeds 3 --epochs 15

Prints a Markdown table (the one in docs/datasets.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.data.generated.rgbd_scenes import CLASSES, IGNORE_INDEX, rgbd_scene_splits

INPUTS = {"rgb": ("rgb",), "depth": ("depth",), "rgb+depth": ("rgb", "depth")}


def fcn(in_channels: int, classes: int, width: int = 32) -> nn.Module:
    layers, c = [], in_channels
    for dilation in (1, 2, 4, 8):  # receptive field 31 pixels: an object and its surroundings
        layers += [nn.Conv2d(c, width, 3, padding=dilation, dilation=dilation), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.Conv2d(width, classes, 1))


def stacked(split, keys: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    items = [split[i] for i in range(len(split))]
    x = torch.stack([torch.cat([it[k] for k in keys]) for it in items])
    return x, torch.stack([it["label"] for it in items])


def miou(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 64]).argmax(1) for i in range(0, len(x), 64)])
    valid = y != IGNORE_INDEX
    ious = []
    for c in range(len(CLASSES)):
        p, t = (pred == c) & valid, y == c
        union = (p | t).sum().item()
        if union:
            ious.append((p & t).sum().item() / union)
    return 100.0 * float(np.mean(ious))


def run(seed: int, keys: tuple[str, ...], epochs: int, batch: int = 16) -> float:
    splits = rgbd_scene_splits(seed=seed)
    (xtr, ytr), (xva, yva), (xte, yte) = (stacked(s, keys) for s in splits)
    mu, sd = xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True)
    xtr, xva, xte = ((x - mu) / sd for x in (xtr, xva, xte))
    torch.manual_seed(seed)
    model = fcn(xtr.shape[1], len(CLASSES))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    best_val, best_test = -1.0, 0.0
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xtr)).split(batch):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx], ignore_index=IGNORE_INDEX)
            opt.zero_grad()
            loss.backward()
            opt.step()
        val = miou(model, xva, yva)
        if val > best_val:
            best_val, best_test = val, miou(model, xte, yte)
    return best_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    print("| inputs | test mIoU (%), mean ± std | per seed |\n|---|---|---|")
    for name, keys in INPUTS.items():
        scores = [run(seed, keys, args.epochs) for seed in range(args.seeds)]
        print(
            f"| {name} | {np.mean(scores):.2f} ± {np.std(scores, ddof=1) if len(scores) > 1 else 0:.2f} | "
            f"{', '.join(f'{s:.2f}' for s in scores)} |",
            flush=True,
        )
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
