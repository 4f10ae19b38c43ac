"""Reference accuracy of per-modality and fused models on the bundled real datasets.

For each dataset, each modality set and each seed: build the seeded split, train a reference
model (mmdistill.models.build_model) with Adam and cross-entropy, keep the epoch with the best
validation accuracy, and report test accuracy and macro-F1 as mean +- std over seeds.

    python benchmarks/bench_data_reference.py --dataset av-digits --seeds 5
    python benchmarks/bench_data_reference.py --dataset mfeat --seeds 5

Prints a Markdown table (the one in docs/datasets.md).
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from mmdistill.data import build_splits
from mmdistill.evaluation.robustness import evaluate_metrics
from mmdistill.models import EncoderConfig, ModelConfig, build_model

MFEAT_SETS = [
    ["pix"],
    ["fou"],
    ["kar"],
    ["zer"],
    ["mor"],
    ["fac"],
    ["fou", "zer", "mor"],
    ["pix", "fou", "kar", "zer", "mor", "fac"],
]
AV_SETS = [["image"], ["audio"], ["image", "audio"]]


def reference_config(dataset: str, modalities: list[str]) -> ModelConfig:
    """The reference model: MLP encoders, except a 1-D CNN over time for AV-Digits audio (mel bands as channels)."""
    encoders = {}
    if dataset == "av-digits" and "audio" in modalities:
        encoders["audio"] = EncoderConfig(type="cnn1d", channels=[64, 64], kernel_size=5, out_dim=64, dropout=0.0)
    return ModelConfig(
        modalities=modalities, encoder=EncoderConfig(hidden=[128], out_dim=64), encoders=encoders, dropout=0.2
    )


def train_reference(
    splits,
    cfg: ModelConfig,
    seed: int,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
) -> torch.nn.Module:
    """Adam + cross-entropy; returns the model at the epoch with the best validation accuracy."""
    torch.manual_seed(seed)
    model = build_model(cfg, splits.train.specs(), splits.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    best, best_state = -1.0, None
    n = len(splits.train)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(n, generator=g).split(batch_size):
            batch = splits.train.__getitems__(idx.tolist())
            loss = F.cross_entropy(model(batch), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = evaluate_metrics(model, splits.val)["accuracy"]
        if acc > best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["av-digits", "mfeat"], required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = AV_SETS if args.dataset == "av-digits" else MFEAT_SETS
    rows: dict[str, list[tuple[float, float]]] = {"+".join(s): [] for s in sets}
    t0 = time.time()
    for seed in range(args.seeds):
        params = {} if args.dataset == "av-digits" else {"views": sorted({v for s in sets for v in s})}
        splits = build_splits(args.dataset, params, seed=seed)
        for mods in sets:
            model = train_reference(splits, reference_config(args.dataset, mods), seed, epochs=args.epochs)
            m = evaluate_metrics(model, splits.test)
            rows["+".join(mods)].append((m["accuracy"], m["f1_macro"]))
    print(f"| {args.dataset} modalities | test accuracy (%) | test macro-F1 (%) |")
    print("|---|---|---|")
    for name, vals in rows.items():
        acc, f1 = np.array(vals).T * 100
        print(
            f"| {name} | {acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.2f} | "
            f"{f1.mean():.2f} ± {f1.std(ddof=1) if len(f1) > 1 else 0:.2f} |"
        )
    print(f"\n{args.seeds} seeds, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
