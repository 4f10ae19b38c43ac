"""Pilot variants on the real development pairs only: does a pilot closer to the measuring protocol rank the gains?

    python benchmarks/advisor_pilot_variants.py --avmnist DIR [--variants lin200,mlp1000] [--round 3] [--all-parts]

For each development setting of ``benchmarks/advisor_real_pairs.py`` (never the held-out part), the advisor's inputs
(seed 0's training split, standardised), a seeded subset of at most ``rows`` training rows projected on its top
min(66, rows / 3) principal components, and :func:`mmdistill.advisor.pilot.pilot_gain` with each variant's students:

* ``lin200``: the shipped pilot (linear models, 200 rows, 100 epochs at lr 1.0, 4 repeats of 5 folds, KD weight 1);
* ``lin200acc``: the shipped pilot's accuracy difference (``gain_acc``) instead of its probability difference
  (``gain_prob``, what the advice reports);
* ``lin1000``: the same as ``lin200`` on 1,000 rows (2 repeats);
* ``mlp1000``: the measuring protocol's models, one hidden layer of 64, 300 epochs at lr 0.3, on 1,000 rows;
* ``mlp1000k``: as ``mlp1000`` with the protocol's KD weight k (the class count) instead of 1;
* ``lin200k``: the shipped pilot with the protocol's KD weight k.

``--all-parts`` reads the held-out parts too (after they were scored: exploratory, never a fit); ``--round 4`` has only
a held-out part.

Prints each setting's pilot estimates beside the measured gain, and per variant the Spearman, sign accuracy and
mean absolute residual against the measured gains, and its CPU seconds per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from advisor_real_pairs import RESULTS, ROUNDS, label

from mmdistill.advisor.inputs import load_advisor_inputs
from mmdistill.advisor.pilot import pilot_gain
from mmdistill.advisor.predict import _top_components
from mmdistill.stats import spearman

VARIANTS = {
    "lin200": {"rows": 200, "hidden": (), "epochs": 100, "lr": 1.0, "kd_weight_k": False, "repeats": 4},
    "lin200acc": {"rows": 200, "hidden": (), "epochs": 100, "lr": 1.0, "kd_weight_k": False, "repeats": 4, "acc": True},
    "lin1000": {"rows": 1000, "hidden": (), "epochs": 100, "lr": 1.0, "kd_weight_k": False, "repeats": 2},
    "mlp1000": {"rows": 1000, "hidden": (64,), "epochs": 300, "lr": 0.3, "kd_weight_k": False, "repeats": 2},
    "mlp1000k": {"rows": 1000, "hidden": (64,), "epochs": 300, "lr": 0.3, "kd_weight_k": True, "repeats": 2},
    "lin200k": {"rows": 200, "hidden": (), "epochs": 100, "lr": 1.0, "kd_weight_k": True, "repeats": 4},
}


def run_variant(xa: torch.Tensor, xb: torch.Tensor, y: torch.Tensor, k: int, v: dict) -> dict:
    za, zb = ((x - x.mean(0)) / x.std(0).clamp_min(1e-6) for x in (xa.double(), xb.double()))
    rows = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[: v["rows"]]
    width = min(66, len(rows) // 3)
    a, b = (_top_components(x[rows], width) for x in (za, zb))
    start = time.process_time()
    kd = (1.0, float(k) if v["kd_weight_k"] else 1.0)
    r = pilot_gain(
        a, b, y[rows], k, repeats=v["repeats"], epochs=v["epochs"], lr=v["lr"], hidden=v["hidden"], kd_weights=kd
    )
    if v.get("acc"):
        return {"gain": r.gain_acc, "se": r.gain_acc_se, "cpu_s": time.process_time() - start}
    return {"gain": r.gain_prob, "se": r.gain_prob_se, "cpu_s": time.process_time() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avmnist", required=True, help="folder of the AV-MNIST builds")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--round", type=int, choices=sorted(ROUNDS), default=3, help="whose development part and gains")
    ap.add_argument("--all-parts", action="store_true", help="the held-out part too (exploratory, after its scoring)")
    args = ap.parse_args()
    settings, measured_file, _ = ROUNDS[args.round]
    torch.set_num_threads(1)
    names = args.variants.split(",")
    measured = json.loads((RESULTS / measured_file).read_text())["rows"]
    found = {}
    for dataset, params, teacher, student, part in settings:
        if part != "dev" and not args.all_parts:
            continue
        name = label(dataset, params, teacher, student)
        if dataset == "avmnist":
            params = {**params, "root": os.path.join(args.avmnist, params["root"])}
        inputs = load_advisor_inputs(dataset, params, teacher, student, seed=0)
        found[name] = {v: run_variant(inputs.xa, inputs.xb, inputs.y, inputs.num_classes, VARIANTS[v]) for v in names}
        said = " ".join(f"{v} {found[name][v]['gain']:+.2f}" for v in names)
        print(f"{name}: measured {measured[name]['gain']:+.2f}; {said}", flush=True)
    gain = np.array([measured[n]["gain"] for n in found])
    for v in names:
        pilot = np.array([found[n][v]["gain"] for n in found])
        cpu = [found[n][v]["cpu_s"] for n in found]
        print(
            f"{v}: Spearman {spearman(pilot.tolist(), gain.tolist()):+.2f}, sign accuracy "
            f"{np.mean((pilot > 0) == (gain > 0)):.2f}, mean |gain - pilot| {np.abs(gain - pilot).mean():.2f}, "
            f"{min(cpu):.1f}-{max(cpu):.1f} CPU s a setting"
        )


if __name__ == "__main__":
    main()
