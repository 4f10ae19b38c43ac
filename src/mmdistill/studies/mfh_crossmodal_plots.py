"""Figures of the crossmodal tools: Algorithm 1's sorted scores, Table 2, feature removal (matplotlib, Agg).

Written atomically through :func:`mmdistill.studies.mfh_plots._save`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .mfh_plots import _pyplot, _save


def plot_sorted_scores(scores: torch.Tensor, path: Path, title: str, shared: set | None = None) -> Path:
    """Bars of the channel scores in decreasing order; truly shared channels in red where known."""
    plt = _pyplot()
    s = scores.detach().cpu().numpy()
    order = np.argsort(-s, kind="stable")
    fig, ax = plt.subplots(figsize=(max(6, min(16, len(s) * 0.12)), 3.5))
    colors = ["tab:red" if shared is not None and int(c) in shared else "tab:blue" for c in order]
    ax.bar(np.arange(len(s)), s[order], color=colors, width=0.85)
    if shared is not None:
        from matplotlib.patches import Patch

        ax.legend(
            handles=[
                Patch(color="tab:red", label="truly shared channel"),
                Patch(color="tab:blue", label="other channel"),
            ],
            fontsize=8,
        )
    ax.set_xlabel("channels, sorted by score")
    ax.set_ylabel("Algorithm 1 score (min-max)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_table2(summary: Sequence[dict], path: Path, title: str) -> Path:
    """Left: teacher accuracy per selection against gamma. Right: KD gain (kd - no KD) per selection."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    selections = list(dict.fromkeys(r["selection"] for r in summary))
    for sel, color in zip(selections, ("tab:gray", "tab:orange", "tab:green", "tab:red", "tab:purple")):
        rows = sorted((r for r in summary if r["selection"] == sel), key=lambda r: r["gamma"])
        g = [r["gamma"] for r in rows]
        left.plot(g, [r["teacher_mean"] for r in rows], marker="o", color=color, label=sel)
        gain = np.array([r["gain_mean"] for r in rows])
        half = np.array([r["gain_half"] for r in rows])
        right.plot(g, gain, marker="o", color=color, label=sel)
        right.fill_between(g, gain - half, gain + half, color=color, alpha=0.12)
    left.set_xlabel("$\\gamma$")
    left.set_ylabel("teacher test accuracy (%)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.axhline(0, color="black", lw=0.8)
    right.set_xlabel("$\\gamma$")
    right.set_ylabel("student KD gain over no KD (points, 95% CI)")
    right.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_removal(summary: Sequence[dict], path: Path, title: str) -> Path:
    """Per teacher->student pair: teacher accuracy after removal and student gain over no KD (95% CI)."""
    plt = _pyplot()
    pairs = list(dict.fromkeys(r["pair"] for r in summary))
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 3.2 * len(pairs)), squeeze=False)
    for (left, right), pair in zip(axes, pairs):
        rows = [r for r in summary if r["pair"] == pair]
        names = [r["mode"] for r in rows]
        x = np.arange(len(rows))
        left.bar(x, [r["teacher_mean"] for r in rows], color="tab:green")
        left.set_xticks(x, names, fontsize=8)
        left.set_ylabel("teacher acc. (%)")
        lo = min(r["teacher_mean"] for r in rows)
        left.set_ylim(max(0, lo - 10), 100)
        left.set_title(f"{pair}: teacher", fontsize=9)
        gains = np.array([r["gain_mean"] for r in rows])
        half = np.array([r["gain_half"] for r in rows])
        right.bar(x, gains, yerr=half, color="tab:red", capsize=3)
        right.axhline(0, color="black", lw=0.8)
        right.set_xticks(x, names, fontsize=8)
        right.set_ylabel("student - no KD (points)")
        right.set_title(f"{pair}: student gain (paired, 95% CI)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
