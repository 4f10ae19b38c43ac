"""Missing-modality table and noise curves of the fused AV-Digits reference model.

    python benchmarks/bench_data_robustness.py --out docs/figures/av_digits_noise.png

Trains the image+audio reference model of bench_data_reference.py (split seed 0), then prints
the missing-modality table (zeros and train-mean masking) and the noise-robustness table, and
writes the noise curves as a PNG.
"""

from __future__ import annotations

import argparse

import torch
from bench_data_reference import reference_config, train_reference

from mmdistill.data import build_splits
from mmdistill.evaluation import format_rows, missing_modality_table, noise_curves, plot_noise_curves
from mmdistill.masking import Masker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/figures/av_digits_noise.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = build_splits("av-digits", {}, seed=args.seed)
    model = train_reference(splits, reference_config("av-digits", ["image", "audio"]), args.seed)
    for strategy in ("zeros", "mean"):
        masker = Masker(splits.train.specs(), strategy).fit(splits.train.feature_mean())
        print(f"\nmissing modalities, masking '{strategy}':\n")
        print(
            format_rows(
                missing_modality_table(model, splits.test, masker), ["present", "removed", "accuracy", "macro_f1"]
            )
        )
    rows = noise_curves(model, splits.test, levels=[0.0, 0.25, 0.5, 1.0, 2.0], kinds=("gaussian",), seed=args.seed)
    rows += noise_curves(model, splits.test, levels=[0.0, 0.1, 0.3, 0.6, 0.9], kinds=("dropout",), seed=args.seed)
    print("\nnoise (one modality corrupted at a time):\n")
    print(
        format_rows(
            sorted(rows, key=lambda r: (r["kind"], r["modality"], r["level"])),
            ["modality", "kind", "level", "accuracy"],
        )
    )
    print("\nwrote", plot_noise_curves(rows, args.out, title="AV-Digits, fused reference model (test, seed 0)"))


if __name__ == "__main__":
    main()
