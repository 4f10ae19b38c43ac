"""Evaluation beyond one test accuracy: missing-modality tables and noise-robustness curves."""

from .robustness import (
    NOISE_KINDS,
    corrupt,
    evaluate_metrics,
    format_rows,
    missing_modality_table,
    modality_subsets,
    noise_curves,
    plot_noise_curves,
    predict,
)

__all__ = [
    "NOISE_KINDS",
    "corrupt",
    "evaluate_metrics",
    "format_rows",
    "missing_modality_table",
    "modality_subsets",
    "noise_curves",
    "plot_noise_curves",
    "predict",
]
