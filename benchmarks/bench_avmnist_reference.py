"""Reference accuracies of MultiBench's AV-MNIST models on our MNIST + FSDD build (docs/datasets.md).

    python benchmarks/bench_avmnist_reference.py --data DIR --models image audio fused --seeds 5 \
        --train-rows 55000 --epochs 5 [--out results.json]

``DIR``: a folder made by ``mmdistill data build av-mnist``. Each model is MultiBench's (LeNet
encoders, concatenation, MLP head with 100 hidden units; :func:`mmdistill.studies.mfh_table1.reference_model`)
trained with MultiBench's optimiser (SGD, lr ``--lr``, weight decay 1e-4, batch 40) on the first
``--train-rows`` of a fixed random order of the 55,000 training rows, selected on 1,000 validation
rows and tested on all 10,000 test rows; mean and 95% CI over seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmdistill.data import build_splits
from mmdistill.data.contracts.dataset import DataSplits
from mmdistill.engine.api import distill
from mmdistill.models.multimodal import build_model
from mmdistill.stats import summarize
from mmdistill.studies.mfh_table1 import multibench_trainer, reference_model, subsets

MODELS = {"image": ["image"], "audio": ["audio"], "fused": ["image", "audio"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-rows", type=int, default=55000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--lr", type=float, default=0.1, help="SGD learning rate (MultiBench: 0.1 audio/fused, 0.01 image)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = build_splits("avmnist", {"root": args.data})
    order, held = subsets(splits, args.train_rows, 1000, len(splits.test))
    data = DataSplits(
        splits.train.subset(torch.from_numpy(np.sort(order[: args.train_rows]))), held["val"], held["test"]
    )
    results = {}
    for name in args.models:
        accs, start = [], time.perf_counter()
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = build_model(reference_model(MODELS[name]), splits.train.specs(), 10)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = multibench_trainer(args.epochs)
                trainer.optimizer.lr = args.lr
                res = distill(model, None, data, tmp, method="supervised", trainer=trainer, seed=seed)
            accs.append(res.test["accuracy"])  # in percent
            print(f"{name} seed {seed}: test {accs[-1]:.2f}", flush=True)
        s = summarize(accs)
        results[name] = {"accuracies": accs, **s, "seconds": time.perf_counter() - start}
        print(
            f"{name}: {s['mean']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}] over {args.seeds} seeds, "
            f"{results[name]['seconds']:.0f} s",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
