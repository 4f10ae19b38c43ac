"""Parameter counts and forward+backward time per batch of the reference models for raw inputs (docs/models.md).

    python benchmarks/bench_reference_models.py --threads 1 --repeats 10 [--json out.json]

Each model runs in training mode on one fixed random batch: forward, cross-entropy (per pixel for segmentation),
backward (no optimiser step). Two warm-up passes, then ``--repeats`` timed passes; median and minimum in ms.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.models.av_classifier import build_av_classifier
from mmdistill.models.resnet import resnet_encoder
from mmdistill.models.segmentation import build_segmentation_net
from mmdistill.models.spectrogram_cnn import spectrogram_encoder


class WithHead(nn.Module):
    """An encoder and a linear classifier, so the encoders are timed as a classifier would use them."""

    def __init__(self, encoder: nn.Module, key: str, classes: int) -> None:
        super().__init__()
        self.modalities, self.key = (key,), key
        self.encoder, self.head = encoder, nn.Linear(encoder.out_dim, classes)

    def forward(self, batch):
        return self.head(self.encoder(batch[self.key]))


def cases(batch: int, seg_batch: int, seg_hw: tuple[int, int]):
    """(name, input description, model, batch dict) for every model benchmarked."""
    g = torch.Generator().manual_seed(0)
    h, w = seg_hw
    img = torch.randn(batch, 3, 64, 64, generator=g)
    mfcc = torch.randn(batch, 40, 256, generator=g)
    stft = torch.randn(batch, 513, 94, generator=g)
    rgbd = {"rgb": torch.randn(seg_batch, 3, h, w, generator=g), "depth": torch.randn(seg_batch, 1, h, w, generator=g)}
    seg_label = torch.randint(0, 13, (seg_batch, h, w), generator=g)
    cls_label = torch.randint(0, 8, (batch,), generator=g)
    ch = {"rgb": 3, "depth": 1}
    return [
        (
            "resnet + linear",
            f"{batch} x (3, 64, 64)",
            WithHead(resnet_encoder((3, 64, 64)), "image", 8),
            {"image": img, "label": cls_label},
        ),
        (
            "spec_cnn + linear",
            f"{batch} x (40, 256)",
            WithHead(spectrogram_encoder((40, 256)), "audio", 8),
            {"audio": mfcc, "label": cls_label},
        ),
        (
            "spec_cnn + linear",
            f"{batch} x (513, 94)",
            WithHead(spectrogram_encoder((513, 94)), "audio", 8),
            {"audio": stft, "label": cls_label},
        ),
        (
            "av_classifier (concat)",
            f"{batch} x image (3, 64, 64) + audio (40, 256)",
            build_av_classifier(8, image_shape=[3, 64, 64], audio_shape=[40, 256]),
            {"image": img, "audio": mfcc, "label": cls_label},
        ),
        (
            "segmentation rgb+depth (sum)",
            f"{seg_batch} x rgb (3, {h}, {w}) + depth (1, {h}, {w})",
            build_segmentation_net(["rgb", "depth"], ch, 13),
            {**rgbd, "label": seg_label},
        ),
        (
            "segmentation rgb+depth (concat)",
            f"{seg_batch} x rgb (3, {h}, {w}) + depth (1, {h}, {w})",
            build_segmentation_net(["rgb", "depth"], ch, 13, fusion="concat"),
            {**rgbd, "label": seg_label},
        ),
        (
            "segmentation rgb+depth (sum, bilinear)",
            f"{seg_batch} x rgb (3, {h}, {w}) + depth (1, {h}, {w})",
            build_segmentation_net(["rgb", "depth"], ch, 13, upsample="bilinear"),
            {**rgbd, "label": seg_label},
        ),
        (
            "segmentation rgb only",
            f"{seg_batch} x rgb (3, {h}, {w})",
            build_segmentation_net(["rgb"], ch, 13),
            {**rgbd, "label": seg_label},
        ),
    ]


def time_forward_backward(model: nn.Module, batch: dict, repeats: int) -> list[float]:
    model.train()
    times = []
    for i in range(repeats + 2):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        F.cross_entropy(model(batch), batch["label"]).backward()
        if i >= 2:
            times.append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32, help="batch size of the classifiers")
    parser.add_argument("--seg-batch", type=int, default=8, help="batch size of the segmentation nets")
    parser.add_argument("--seg-size", type=int, nargs=2, default=[120, 160], metavar=("H", "W"))
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
        f"{args.repeats} repeats"
    )
    print("| model | batch | parameters | fwd+bwd ms/batch (median) | min |")
    print("|---|---|---|---|---|")
    rows = []
    for name, what, model, batch in cases(args.batch, args.seg_batch, tuple(args.seg_size)):
        params = sum(p.numel() for p in model.parameters())
        times = time_forward_backward(model, batch, args.repeats)
        rows.append(
            {
                "model": name,
                "batch": what,
                "parameters": params,
                "median_ms": statistics.median(times),
                "min_ms": min(times),
            }
        )
        print(f"| {name} | {what} | {params:,} | {rows[-1]['median_ms']:.1f} | {rows[-1]['min_ms']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
