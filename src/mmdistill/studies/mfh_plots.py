"""Figures of the MFH studies, in the style of the paper's Fig. 2 and 3 (matplotlib, Agg backend).

Each figure is written atomically (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")

    try:
        return atomic_write(path, write)
    finally:
        _pyplot().close(fig)


def plot_sweep(summary: Sequence[dict], x_key: str, path: Path, title: str, command: str = "") -> Path:
    """Left: teacher / no-KD / KD student accuracy (mean, band = 1 std) against ``x_key``.
    Right: delta = KD - no-KD (mean, band = 1 std), with the zero line."""
    plt = _pyplot()
    x = np.array([s[x_key] for s in summary])
    order = np.argsort(x)
    x = x[order]
    xlabel = "$\\" + x_key + "$"
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label, color, marker in (
        ("teacher", "teacher (x_a)", "tab:green", "s"),
        ("nokd", "student, no KD (x_b)", "tab:gray", "o"),
        ("kd", "student, KD (x_b)", "tab:red", "^"),
    ):
        mean = np.array([summary[i][f"{key}_mean"] for i in order])
        std = np.array([summary[i][f"{key}_std"] for i in order])
        left.plot(x, mean, marker=marker, color=color, label=label)
        left.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
    left.set_xlabel(xlabel)
    left.set_ylabel("test accuracy (%)")
    left.legend(loc="best", fontsize=8)
    left.grid(alpha=0.3)
    mean = np.array([summary[i]["delta_mean"] for i in order])
    std = np.array([summary[i]["delta_std"] for i in order])
    right.plot(x, mean, marker="o", color="tab:blue", label=r"$\Delta$ = KD $-$ no KD")
    right.fill_between(x, mean - std, mean + std, color="tab:blue", alpha=0.2, label="$\\pm$ 1 std over seeds")
    right.axhline(0.0, color="black", lw=0.8, ls="--")
    right.set_xlabel(xlabel)
    right.set_ylabel(r"$\Delta$ (accuracy points)")
    right.legend(loc="best", fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle(title)
    if command:
        fig.text(0.5, -0.02, command, ha="center", fontsize=7, family="monospace")
    return _save(fig, path)


def plot_plane(grid: Sequence[dict], path: Path, title: str, command: str = "") -> Path:
    """Heatmap of the mean KD gain over target (gamma, alpha); cells with gamma > 1 - alpha are blank."""
    plt = _pyplot()
    from matplotlib.colors import TwoSlopeNorm

    gammas = sorted({c["gamma_target"] for c in grid})
    alphas = sorted({c["alpha_target"] for c in grid})
    z = np.full((len(alphas), len(gammas)), np.nan)
    for c in grid:
        z[alphas.index(c["alpha_target"]), gammas.index(c["gamma_target"])] = c["delta_mean"]
    bound = max(float(np.nanmax(np.abs(z))), 1e-6)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    im = ax.imshow(z, origin="lower", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
    for i in range(len(alphas)):
        for j in range(len(gammas)):
            if not np.isnan(z[i, j]):
                ax.text(j, i, f"{z[i, j]:+.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(gammas)), [f"{g:.1f}" for g in gammas])
    ax.set_yticks(range(len(alphas)), [f"{a:.1f}" for a in alphas])
    ax.set_xlabel(r"$\gamma$ (shared share of decisive dims)")
    ax.set_ylabel(r"$\alpha$ (teacher-specific share)")
    fig.colorbar(im, ax=ax, label=r"$\Delta$ = KD $-$ no KD (points)")
    ax.set_title(title)
    if command:
        fig.text(0.5, -0.02, command, ha="center", fontsize=7, family="monospace")
    return _save(fig, path)
