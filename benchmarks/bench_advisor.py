"""Validate ``mmdistill advise`` on modality Venn diagrams against the measured KD gain; writes docs/advisor.md.

    python benchmarks/bench_advisor.py [--seeds 5] [--out docs/advisor.md]

For every generator configuration (structure s0/sa/sb, sample size, dimensions, mixing on/off) and
seed: the advisor runs on the training sample alone (x_a, x_b, y), and the KD gain is measured as
in the paper's protocol (linear teacher on x_a, no-KD and KD students on x_b, 1000 full-batch
epochs, test accuracy of KD minus no-KD; :func:`mmdistill.mfh.studies.crossmodal_kd_sweep`).
Reported: Spearman correlation of each advisor signal with the measured gain (config means over
seeds), sign accuracy, the least-squares calibration ``gain ~ a + b * gamma_hat`` with its
leave-one-out error, and the cost of advising against the cost of distilling.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from mmdistill.io import write_text
from mmdistill.mfh.advisor import CALIBRATION, advise
from mmdistill.mfh.ensemble import Run, fit_sequential
from mmdistill.mfh.studies import _official_inits, crossmodal_kd_sweep
from mmdistill.mfh.venn import VennSpec, draw

TRIPLES = [(2, 9, 9), (4, 8, 8), (6, 7, 7), (8, 6, 6), (10, 5, 5), (14, 3, 3), (18, 1, 1), (10, 10, 0), (10, 0, 10),
           (4, 16, 0), (4, 0, 16), (16, 4, 0)]


def configurations() -> list[tuple[str, VennSpec, int]]:
    """(label, spec, n_train): 12 structures x {plain, mixed} at n = 200, 50/50 dims, then sample size and dims."""
    out = []
    for s0, sa, sb in TRIPLES:
        for mix in (False, True):
            out.append((f"s{s0}/{sa}/{sb} n200 d50/50{' mix' if mix else ''}", VennSpec(s0=s0, sa=sa, sb=sb, dim_a=50, dim_b=50, mix=mix), 200))
    for s0, sa, sb in TRIPLES[::2]:
        for n in (100, 1000):
            out.append((f"s{s0}/{sa}/{sb} n{n} d50/50", VennSpec(s0=s0, sa=sa, sb=sb, dim_a=50, dim_b=50), n))
        out.append((f"s{s0}/{sa}/{sb} n200 d25/100", VennSpec(s0=s0, sa=sa, sb=sb, dim_a=25, dim_b=100), 200))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default="docs/advisor.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    configs = configurations()
    # measured KD gain, one batched sweep per sample size
    measured, distil_s = {}, 0.0
    for n in sorted({c[2] for c in configs}):
        cells = [(label, spec) for label, spec, nn in configs if nn == n]
        res = crossmodal_kd_sweep(cells, seeds, n_train=n)
        distil_s += res.seconds
        for r in res.rows:
            measured.setdefault(r["setting"], []).append(100 * (r["kd_acc"] - r["nokd_acc"]))
    # the advisor on each training sample
    adv, advise_s = {}, []
    for label, spec, n in configs:
        for seed in seeds:
            d = draw(spec, seed, n_train=n)
            a = advise(d.train.xa, d.train.xb, d.train.y, num_classes=spec.num_classes, seed=seed)
            advise_s.append(a.seconds)
            adv.setdefault(label, []).append(a)
    # one configuration distilled the plain way (teacher + 2 students, autograd, one at a time)
    d = draw(configs[0][1], 0)
    t, kd, nokd = _official_inits(1, (50, 50, 50), (), 2)
    start = time.perf_counter()
    fit_sequential([Run(t, d.train.xa, d.train.y)], lr=0.1, epochs=1000)
    soft = torch.softmax(t(d.train.xa), -1).detach()
    fit_sequential([Run(nokd, d.train.xb, d.train.y), Run(kd, d.train.xb, d.train.y, soft, 1.0, 1.0)], lr=0.1, epochs=1000)
    sequential_s = time.perf_counter() - start

    labels = [c[0] for c in configs]
    gain = np.array([np.mean(measured[lb]) for lb in labels])
    gain_sd = np.array([np.std(measured[lb], ddof=1) / np.sqrt(len(seeds)) for lb in labels])
    true_gamma = np.array([c[1].gamma for c in configs])
    sig = {
        "gamma_hat": np.array([np.mean([a.gamma for a in adv[lb]]) for lb in labels]),
        "CCH margin I(T;S) - I(S;Y)": np.array([np.mean([a.cch_margin for a in adv[lb]]) for lb in labels]),
        "R2 teacher <- student modality": np.array([np.mean([a.r2_teacher_from_student for a in adv[lb]]) for lb in labels]),
        "generator gamma (oracle, not available to the advisor)": true_gamma,
    }
    per_seed_rho = spearmanr([a.gamma for lb in labels for a in adv[lb]], [g for lb in labels for g in measured[lb]]).statistic
    g_hat = sig["gamma_hat"]
    design = np.stack([np.ones_like(g_hat), g_hat], 1)
    coef = np.linalg.lstsq(design, gain, rcond=None)[0]
    loo = []
    for i in range(len(gain)):
        keep = np.arange(len(gain)) != i
        c = np.linalg.lstsq(design[keep], gain[keep], rcond=None)[0]
        loo.append(design[i] @ c - gain[i])
    pred = CALIBRATION[0] + CALIBRATION[1] * g_hat
    clear = np.abs(gain) > 2 * gain_sd  # configurations whose measured sign is clear of seed noise

    lines = ["# Will crossmodal KD help? Validating `mmdistill advise`", "",
             "Docs: [architecture](architecture.md) · [reproductions](reproductions.md) · [benchmarks](benchmarks.md) · "
             "[datasets](datasets.md) · **advisor** · [README](../README.md)", "",
             "Command: `python benchmarks/bench_advisor.py --seeds %d`" % args.seeds, "",
             f"Machine: {platform.machine()}, torch {torch.__version__}, 1 thread. {len(configs)} modality-Venn configurations x "
             f"{len(seeds)} seeds: 12 structures (s0/sa/sb) x {{plain, orthogonally mixed}} at n_train = 200, 50/50 dims; 6 of them at "
             "n_train = 100 and 1000; 6 with dims 25/100. Measured gain: KD student minus no-KD student, test accuracy (points), "
             "paper protocol (linear models, 1000 full-batch epochs, T = 1); the advisor sees only the training sample.", "",
             "## How the advisor's signals track the measured KD gain", "",
             "| signal | Spearman vs gain (config means) |", "|---|---|"]
    for name, v in sig.items():
        lines.append(f"| {name} | {spearmanr(v, gain).statistic:+.3f} |")
    lines += ["", f"Per (configuration, seed) pairs, gamma_hat vs that seed's gain: Spearman {per_seed_rho:+.3f} "
              f"({len(configs) * len(seeds)} pairs; single-seed gains are noisy).", "",
              "## Sign of the gain", "",
              f"Configurations with a positive mean gain: {int((gain > 0).sum())} of {len(gain)}; with a sign clear of seed noise "
              f"(|mean| > 2 standard errors): {int(clear.sum())}.", "",
              "| predictor of 'KD helps' | sign accuracy, all | sign accuracy, clear-sign configs |", "|---|---|---|"]
    loo_pred = gain + np.array(loo)
    for name, p in (("calibrated gain > 0 (shipped calibration, fitted on these configs)", pred > 0),
                    ("calibrated gain > 0, leave-one-out fit (honest)", loo_pred > 0),
                    ("CCH: I(T;S) > I(S;Y)", sig["CCH margin I(T;S) - I(S;Y)"] > 0),
                    ("always 'helps'", np.ones_like(gain, bool)),
                    ("always 'does not help'", np.zeros_like(gain, bool))):
        acc_all = float(np.mean(p == (gain > 0)))
        acc_clear = float(np.mean(p[clear] == (gain[clear] > 0))) if clear.any() else float("nan")
        lines.append(f"| {name} | {acc_all:.2f} | {acc_clear:.2f} |")
    lines += ["", "## How much: the calibration", "",
              f"Least squares on these configurations: gain ~ {coef[0]:+.2f} + {coef[1]:.2f} * gamma_hat points; leave-one-out "
              f"mean absolute error {np.mean(np.abs(loo)):.2f} points (the measured gains span {gain.min():+.2f} .. {gain.max():+.2f}). "
              f"Shipped in `mmdistill.mfh.advisor.CALIBRATION`: {CALIBRATION}. It is fitted on this synthetic family; "
              "on real data read it as an order of magnitude only.", "",
              "## Cost", "",
              f"Advising: {1e3 * np.mean(advise_s):.0f} ms per training sample (mean; {1e3 * np.max(advise_s):.0f} ms max; "
              "2-fold cross-fitted ridge models, 50 bootstrap resamples). "
              f"Distilling to measure the gain: {sequential_s:.2f} s for one configuration and seed the plain way (teacher + no-KD "
              f"+ KD student, autograd, one model at a time), {distil_s / (len(configs) * len(seeds)):.3f} s amortised in the "
              f"batched ensemble ({distil_s:.1f} s for all {len(configs) * len(seeds)}). Advising costs "
              f"{sequential_s / np.mean(advise_s):.0f}x less than one plain distillation run, but more than one run amortised in the "
              "batched ensemble of these tiny linear models; the advisor's cost grows with n and d only through a few ridge "
              "solves, a distillation's with the student's size and epochs.", "",
              "## Per configuration", "",
              "| configuration | gamma | measured gain (mean ± s.e.) | gamma_hat | CCH margin | predicted gain |", "|---|---|---|---|---|---|"]
    for i, lb in enumerate(labels):
        lines.append(f"| {lb} | {true_gamma[i]:.2f} | {gain[i]:+.2f} ± {gain_sd[i]:.2f} | {g_hat[i]:.3f} | "
                     f"{sig['CCH margin I(T;S) - I(S;Y)'][i]:+.3f} | {pred[i]:+.2f} |")
    lines += ["", "The MI estimator (Gaussian / canonical correlations) is checked against the closed form on jointly Gaussian "
              "data in `tests/test_advisor.py`.", ""]
    write_text(Path(args.out), "\n".join(lines))
    print("\n".join(lines[:40]))


if __name__ == "__main__":
    main()
