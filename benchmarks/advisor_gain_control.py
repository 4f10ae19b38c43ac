"""Is the real-pair suite's KD gain knowledge from the teacher, or the KD term's extra loss weight?

    python benchmarks/advisor_gain_control.py --round 3 --seeds 10 --avmnist AVM   # the 60 settings of round 3
    python benchmarks/advisor_gain_control.py --round 4 --seeds 10 --avmnist AVM   # the 60 settings of round 4
    python benchmarks/advisor_gain_control.py --suite test-3        # a modality-Venn suite, by its own protocol

The suite's KD student (``advisor_real_pairs.py``) minimises ``CE + k KL(teacher || student)`` at T = 1, the KL in
``KLDivLoss``'s 'mean' reduction (divided by the k classes), i.e. CE + the per-example KL, by full-batch SGD at the
no-KD student's learning rate: its loss has twice the no-KD student's weight. Where the teacher's outputs on the
training rows are nearly one-hot, the KL is nearly the CE on the teacher's labels, so the KD student may gain from the
larger step alone. This script trains, beside the suite's teacher, no-KD and KD students (same protocol, same seeds), a
**control student** without a teacher whose loss is ``2 CE``: the KD student's loss weight, no teacher. Per setting and
seed: KD - no-KD (the suite's gain), control - no-KD (what the loss weight alone gives) and KD - control (what the
teacher adds beyond it), in test accuracy points; and how one-hot the teacher's training outputs are (the mean of their
largest probability). Writes ``docs/results/advisor/gain_control_round<R>.json`` and prints a table and the correlations
across settings.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from advisor_real_pairs import PROTOCOL, RESULTS, ROUNDS, label, measured_gain

from mmdistill.io import write_text
from mmdistill.mfh.ensemble import Run, train_runs
from mmdistill.stats import paired_difference, spearman


def synthetic(suite: str) -> tuple[dict, float]:
    """The same three students on a modality-Venn suite of ``advisor_validation.py`` by its protocol (linear teacher
    and students, 1,000 full-batch epochs at lr 0.1, KD = CE + KL in 'mean' reduction, i.e. CE + KL / k), its 10 seeds
    per setting; the control's loss (1 + 1 / k) CE, the KD student's weight. The control starts from the no-KD
    student's initialisation (the suite's KD student does too)."""
    import copy

    from advisor_validation import SUITES, make_suite, setting_data

    from mmdistill.studies.mfh_synthetic import _official_inits

    start, found = time.perf_counter(), {}
    settings = make_suite(*SUITES[suite])
    for n, k in sorted({(s.n, s.spec.num_classes) for s in settings}):  # one batch per shape, as the suite measures
        jobs = []
        for s in (s for s in settings if (s.n, s.spec.num_classes) == (n, k)):
            for seed in s.seeds:
                nets = _official_inits(seed + 1, (s.spec.dim_a, s.spec.dim_b, s.spec.dim_b), (), s.spec.num_classes)
                jobs.append((s, setting_data(s, seed), nets))
        teachers = train_runs([Run(t, d["xa"], d["y"]) for _, d, (t, _, _) in jobs], lr=0.1, epochs=1000)
        probs = torch.softmax(teachers.logits([d["xa"] for _, d, _ in jobs]), -1)
        runs = []
        for (_, d, (_, kd, nokd)), p in zip(jobs, probs):
            runs += [
                Run(nokd, d["xb"], d["y"]),
                Run(kd, d["xb"], d["y"], p, 1.0, 1.0),
                Run(copy.deepcopy(nokd), d["xb"], d["y"], None, 1.0 + 1.0 / k, 0.0),
            ]
        students = train_runs(runs, lr=0.1, epochs=1000)
        acc = 100 * students.accuracy(
            [d["xb_test"] for _, d, _ in jobs for _ in range(3)], [d["y_test"] for _, d, _ in jobs for _ in range(3)]
        )
        for i, (s, _, _) in enumerate(jobs):
            r = found.setdefault(s.label, {"nokd": [], "kd": [], "control": []})
            for j, key in enumerate(("nokd", "kd", "control")):
                r[key].append(float(acc[3 * i + j]))
    return {name: {**r, **summary(r)} for name, r in found.items()}, time.perf_counter() - start


def summary(row: dict) -> dict:
    out = {}
    for name, a, b in (
        ("kd_gain", "kd", "nokd"),
        ("control_gain", "control", "nokd"),
        ("kd_over_control", "kd", "control"),
    ):
        diff = paired_difference(row[a], row[b])
        out[name], out[name + "_low"], out[name + "_high"] = diff["mean"], diff["ci_low"], diff["ci_high"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--round", type=int, choices=(3, 4))
    ap.add_argument("--suite", help="a modality-Venn suite of advisor_validation.py instead (e.g. test-3)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--avmnist", help="folder of the AV-MNIST builds (see advisor_real_pairs.py)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.suite:
        rows, seconds = synthetic(args.suite)
        write_text(
            RESULTS / f"gain_control_{args.suite}.json", json.dumps({"seconds": seconds, "rows": rows}, indent=1)
        )
        report(rows, f"suite {args.suite}: {len(rows)} settings x 10 seeds, {seconds:.0f} s wall")
        return
    if args.round is None or not args.avmnist:
        raise SystemExit("give --round and --avmnist, or --suite")
    path = RESULTS / f"gain_control_round{args.round}.json"
    cached = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    start = time.perf_counter()
    for dataset, params, teacher, student, _ in ROUNDS[args.round][0]:
        name = label(dataset, params, teacher, student)
        if name in cached["rows"]:
            continue
        if dataset == "avmnist":
            params = {**params, "root": os.path.join(args.avmnist, params["root"])}
        t0 = time.perf_counter()
        found = measured_gain(dataset, params, teacher, student, range(args.seeds), control=True)
        row = {key: found[key] for key in ("nokd", "kd", "control", "teacher_max_prob", "teacher_train_acc")}
        cached["rows"][name] = {**row, **summary(row), "seeds": args.seeds, "seconds": time.perf_counter() - t0}
        cached["protocol"] = {**PROTOCOL, "control": "2 CE, no teacher"}
        write_text(path, json.dumps(cached, indent=1))
    rows = cached["rows"]
    report(
        rows, f"round {args.round}: {len(rows)} settings x {args.seeds} seeds, {time.perf_counter() - start:.0f} s wall"
    )


def report(rows: dict, title: str) -> None:
    print(title + "\n")
    print("| setting | KD - no-KD | control - no-KD | KD - control | teacher's mean max. probability (train) |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['kd_gain']:+.2f} | {r['control_gain']:+.2f} [{r['control_gain_low']:+.2f}, "
            f"{r['control_gain_high']:+.2f}] | {r['kd_over_control']:+.2f} [{r['kd_over_control_low']:+.2f}, "
            f"{r['kd_over_control_high']:+.2f}] | {r.get('teacher_max_prob', float('nan')):.3f} |"
        )
    kd, ctrl, over = (np.array([r[k] for r in rows.values()]) for k in ("kd_gain", "control_gain", "kd_over_control"))
    print(
        f"\nmeans over settings: KD - no-KD {kd.mean():+.2f}, control - no-KD {ctrl.mean():+.2f}, KD - control "
        f"{over.mean():+.2f} points; KD above no-KD on {int((kd > 0).sum())} of {len(kd)}, control above no-KD on "
        f"{int((ctrl > 0).sum())}, KD above control on {int((over > 0).sum())}"
    )
    print(
        f"across settings, Spearman of KD - no-KD with control - no-KD {spearman(kd.tolist(), ctrl.tolist()):+.2f}, "
        f"with KD - control {spearman(kd.tolist(), over.tolist()):+.2f}"
    )


if __name__ == "__main__":
    main()
