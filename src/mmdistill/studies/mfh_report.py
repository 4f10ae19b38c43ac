"""Writing a study's outputs: ``results.csv``, ``summary.md`` and its figure, each atomically."""

from __future__ import annotations

from pathlib import Path

from ..io import csv_text, write_text
from ..stats import spearman
from .mfh_synthetic import ROW_FIELDS, StudyResult

TITLES = {
    "mfh-gamma": "MFH, vary gamma (paper Fig. 2)",
    "mfh-alpha": "MFH, vary alpha: the failure case (paper Fig. 3)",
    "mfh-plane": "MFH, KD gain over the modality Venn plane (beyond the paper)",
}
X_KEYS = {"mfh-gamma": "gamma", "mfh-alpha": "alpha"}

PLANE_FIELDS = [
    "setting",
    "gamma_target",
    "alpha_target",
    "s0",
    "sa",
    "sb",
    "gamma",
    "alpha",
    "beta",
    "seeds",
    "teacher_mean",
    "nokd_mean",
    "kd_mean",
    "delta_mean",
    "delta_std",
]


def summary_markdown(result: StudyResult, command: str = "") -> str:
    """Means and population std over seeds (accuracy points), and delta = KD - no-KD."""
    p = result.protocol
    seeds = p.get("seeds", [])
    seed_text = (
        f"{seeds[0]}..{seeds[-1]}" if seeds and list(seeds) == list(range(seeds[0], seeds[-1] + 1)) else str(seeds)
    )
    lines = [f"# {TITLES.get(result.name, result.name)}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    model = "linear" if not p.get("hidden") else f"MLP {p['hidden']}"
    lines += [
        f"Seeds {seed_text} ({len(seeds)}); n_train {p.get('n_train')}, n_test {p.get('n_test')} (test drawn with "
        "seed+1); "
        f"{model} models; full-batch SGD lr {p.get('lr')}, {p.get('epochs')} epochs; "
        f"KD = {p['kd_weights'][0]:g} CE + {p['kd_weights'][1]:g} KL(t || s), T = 1. "
        f"{result.runs} models trained as two batched ensembles in {result.seconds:.2f} s.",
        "",
        "Accuracies in %, mean ± std over seeds (population std, as the official script); delta = KD - no-KD.",
        "",
        "| setting | gamma | alpha | beta | teacher | no-KD student | KD student | delta |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = result.summary()
    for s in summary:
        lines.append(
            f"| {s['setting']} | {s['gamma']:.2f} | {s['alpha']:.2f} | {s['beta']:.2f} "
            f"| {s['teacher_mean']:.2f} ± {s['teacher_std']:.2f} | {s['nokd_mean']:.2f} ± {s['nokd_std']:.2f} "
            f"| {s['kd_mean']:.2f} ± {s['kd_std']:.2f} | {s['delta_mean']:+.2f} ± {s['delta_std']:.2f} |"
        )
    lines.append("")
    if result.name == "mfh-gamma" and len(summary) > 1:
        rho = spearman([s["gamma"] for s in summary], [s["delta_mean"] for s in summary])
        lines += [f"Spearman correlation of gamma and mean delta over the {len(summary)} settings: {rho:.3f}.", ""]
    if result.name == "mfh-alpha" and len(summary) > 1:
        first, last = summary[0], summary[-1]
        worst = max(abs(s["delta_mean"]) for s in summary)
        lines += [
            f"Teacher gain from alpha {first['alpha']:.2f} to {last['alpha']:.2f}: "
            f"{last['teacher_mean'] - first['teacher_mean']:+.2f} points; largest |KD - no-KD| of a setting mean: "
            f"{worst:.2f} points.",
            "",
        ]
    return "\n".join(lines)


def write_study(result: StudyResult, out: Path, command: str = "") -> list[Path]:
    """Write the figure (and plane.csv for the plane), summary.md and, last, results.csv into ``out``."""
    from .mfh_plots import plot_plane, plot_sweep

    out = Path(out)
    title = TITLES.get(result.name, result.name)
    written = []
    if result.name == "mfh-plane":
        grid = result.extra["grid"]
        written.append(write_text(out / "plane.csv", csv_text(grid, PLANE_FIELDS, ".6g")))
        written.append(plot_plane(grid, out / "plane.png", title, command))
    else:
        written.append(
            plot_sweep(result.summary(), X_KEYS.get(result.name, "gamma"), out / f"{result.name}.png", title, command)
        )
    written.append(write_text(out / "summary.md", summary_markdown(result, command) + "\n"))
    # last, so that a results.csv marks a finished run
    written.append(write_text(out / "results.csv", csv_text(result.rows, ROW_FIELDS, ".6g")))
    return written
