"""The demo's "will crossmodal KD help?" step: the advisor's prediction next to the measured KD gain.

For each (dataset, teacher modality : student modality) pair: ``advise`` on the training split
(no student is distilled; :mod:`mmdistill.advisor.predict`), then the measured gain of a KD student
over the same student trained alone, paired over seeds (the regular-KD and no-KD students of
:func:`mmdistill.studies.mfh_removal.feature_removal`, which trains them as batched ensembles). The
advice's cost is set against one full distillation run of the pair by that protocol (a teacher
and a KD student, one-hidden-layer MLPs, 300 full-batch epochs, timed alone: :func:`one_run_seconds`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..advisor.predict import advise_dataset
from ..io import atomic_write, write_csv, write_text
from ..stats import paired_difference, spearman
from .mfh_removal import feature_removal

PAIRS = [
    ("mfeat", "pix:zer"),
    ("mfeat", "kar:fou"),
    ("mfeat", "fou:kar"),
    ("mfeat", "zer:mor"),
    ("mfeat", "fac:pix"),
    ("av-digits", "image:audio"),
    ("av-digits", "audio:image"),
]
FIELDS = [
    "dataset",
    "pair",
    "gamma",
    "gamma_low",
    "gamma_high",
    "cch_margin",
    "abstained",
    "predicted_gain",
    "predicted_low",
    "predicted_high",
    "recommendation",
    "advice_seconds",
    "measured_gain",
    "measured_low",
    "measured_high",
    "seeds",
    "distill_seconds",
    "run_seconds",
]


def one_run_seconds(
    dataset: str, pair: str, seed: int = 0, hidden: int = 64, epochs: int = 300, lr: float = 0.3
) -> float:
    """Wall-clock seconds of one full distillation run of the pair by the measuring protocol: a teacher, then a KD
    student (``CE + k KL``, T = 1), one-hidden-layer MLPs, full-batch SGD, each trained alone by the batched trainer."""
    from ..mfh.ensemble import Run, make_mlp, train_runs
    from ..mfh.pairs import DEFAULT_PCA, load_pairs

    teacher, student = pair.split(":")
    data = load_pairs(dataset, {}, teacher, student, seed=seed, pca=DEFAULT_PCA.get(dataset))
    k = data.num_classes
    torch.manual_seed(seed)
    t_net, s_net = make_mlp(data.train.xa.shape[1], (hidden,), k), make_mlp(data.train.xb.shape[1], (hidden,), k)
    start = time.perf_counter()
    trained = train_runs([Run(t_net, data.train.xa, data.train.y)], lr=lr, epochs=epochs)
    soft = torch.softmax(trained.logits([data.train.xa])[0], -1)
    train_runs(
        [Run(s_net, data.train.xb, data.train.y, soft_targets=soft, ce_weight=1.0, kd_weight=float(k))],
        lr=lr,
        epochs=epochs,
    )
    return time.perf_counter() - start


def advice_vs_measured(
    pairs: Sequence[tuple[str, str]] = PAIRS, seeds: Sequence[int] = range(3), time_run: bool = True
) -> list[dict]:
    rows = []
    for dataset, pair in pairs:
        teacher, student = pair.split(":")
        advice = advise_dataset(dataset, {}, teacher, student, seed=0)
        start = time.perf_counter()
        result = feature_removal(dataset, pairs=[pair], seeds=seeds)
        runs = sorted((r for r in result.rows if r["mode"] == "regular"), key=lambda r: r["seed"])
        gain = paired_difference([r["student_acc"] for r in runs], [r["nokd_acc"] for r in runs])
        rows.append(
            {
                "dataset": dataset,
                "pair": pair,
                "gamma": advice.gamma,
                "gamma_low": (advice.gamma_interval or (None, None))[0],
                "gamma_high": (advice.gamma_interval or (None, None))[1],
                "cch_margin": advice.cch_margin,
                "abstained": advice.abstained,
                "predicted_gain": advice.predicted_gain,  # None where the advice abstains
                "predicted_low": (advice.predicted_gain_interval or (None, None))[0],
                "predicted_high": (advice.predicted_gain_interval or (None, None))[1],
                "recommendation": advice.recommendation.split(":")[0].split(".")[0],
                "advice_seconds": advice.seconds,
                "measured_gain": 100 * gain["mean"],
                "measured_low": 100 * gain["ci_low"],
                "measured_high": 100 * gain["ci_high"],
                "seeds": len(runs),
                "distill_seconds": time.perf_counter() - start,
                "run_seconds": one_run_seconds(dataset, pair) if time_run else float("nan"),
            }
        )
    return rows


def summary_markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# Will crossmodal KD help? The advisor against the measured gain",
        "",
        f"Command: `{command}`. Advice: estimated gamma (share of decisive information both modalities hold) with a "
        "bootstrap interval, the CCH margin I(T;S) - I(S;Y) in nats, and the predicted KD gain (points) with its 80% "
        "interval (calibrated on synthetic Venn suites; see docs/advisor.md). Measured: KD student - no-KD student, "
        f"mean [95% t-CI] over {rows[0]['seeds']} seeds (MLP students, the mfh-removal protocol's regular KD). "
        "Cost: the advice against one full distillation run of the pair (teacher + KD student, same protocol).",
        "",
        "| dataset | teacher:student | gamma | CCH margin | predicted gain [80%] | measured gain [95% CI] | advice s | "
        "one run s | advice / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        said = (
            "abstains"
            if r["abstained"]
            else (f"{r['predicted_gain']:+.1f} [{r['predicted_low']:+.1f}, {r['predicted_high']:+.1f}]")
        )
        lines.append(
            f"| {r['dataset']} | {r['pair']} | {r['gamma']:.2f} [{r['gamma_low']:.2f}, {r['gamma_high']:.2f}] | "
            f"{r['cch_margin']:+.3f} | {said} | "
            f"{r['measured_gain']:+.2f} [{r['measured_low']:+.2f}, {r['measured_high']:+.2f}] | "
            f"{r['advice_seconds']:.2f} | {r['run_seconds']:.2f} | "
            f"{100 * r['advice_seconds'] / r['run_seconds']:.0f}% |"
        )
    lines += ["", _agreement(rows)]
    return "\n".join(lines) + "\n"


def _agreement(rows: list[dict]) -> str:
    """How the predictions agree with the measured gains, over the pairs the advice did not abstain on."""
    told = [r for r in rows if not r["abstained"]]
    abstained = f"The advice abstains on {len(rows) - len(told)} of {len(rows)} pairs (outside its calibrated domain)."
    if len(told) < 3:
        return (
            abstained + " Too few predictions to compare with the measured gains; docs/advisor.md has the validation."
        )
    rho = spearman([r["predicted_gain"] for r in told], [r["measured_gain"] for r in told])
    signs = sum((r["predicted_gain"] > 0) == (r["measured_gain"] > 0) for r in told)
    inside = sum(r["predicted_low"] <= r["measured_gain"] <= r["predicted_high"] for r in told)
    return (
        f"{abstained} Over the other {len(told)}: Spearman(predicted, measured) = {rho:+.2f}; the sign agrees on "
        f"{signs}; the measured gain is inside the 80% interval for {inside}. Few pairs, and a calibration fitted on "
        "synthetic data: read this as an illustration; the validation is in docs/advisor.md."
    )


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        if r["abstained"]:  # no prediction to place
            continue
        ax.errorbar(
            r["predicted_gain"],
            r["measured_gain"],
            yerr=[[r["measured_gain"] - r["measured_low"]], [r["measured_high"] - r["measured_gain"]]],
            fmt="o",
            capsize=3,
        )
        ax.annotate(
            f"{r['dataset']} {r['pair']}",
            (r["predicted_gain"], r["measured_gain"]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("predicted KD gain (points, advisor)")
    ax.set_ylabel("measured KD gain (points, 95% CI)")
    ax.set_title("advice before distilling vs the measured gain", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def write(rows: list[dict], out: Path, command: str) -> None:
    plot(rows, out / "advice.png")
    write_text(out / "summary.md", summary_markdown(rows, command))
    write_csv(out / "results.csv", rows, FIELDS)
