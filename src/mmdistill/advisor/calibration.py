"""Calibration of the advisor's KD-gain prediction: kernel ridge regression on the advisor's signals.

    gain_hat = b + sum_i alpha_i exp(-g ||z - z_i||^2),   z = clip((f - mean) / sd, -4, 4)

over the standardised signals f (:data:`FEATURES`) of the Venn development suite's settings z_i. Fitted,
with (g, lambda) chosen by 5-fold cross-validation, by ``python benchmarks/advisor_validation.py --suite dev
--fit``, which writes ``calibration.json`` beside this file; docs/advisor.md has the validation.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TypedDict

import numpy as np

FEATURES = [
    "r2_b_from_a",
    "pilot_gain",
    "pilot_se",
    "teacher_acc",
    "student_acc",
    "d_a_per_n",
    "d_b_per_n",
    "shared_rank",
    "redundancy_b",
]


class PilotSettings(TypedDict):
    """The pilot run's settings (the calibration suites were measured with them)."""

    epochs: int
    lr: float
    folds: int
    max_rows: int


PILOT: PilotSettings = {"epochs": 100, "lr": 1.0, "folds": 5, "max_rows": 200}
PATH = Path(__file__).with_name("calibration.json")


@lru_cache(maxsize=1)
def load() -> dict:
    """The shipped calibration, arrays as numpy (read once)."""
    c = json.loads(PATH.read_text())
    if c["features"] != FEATURES:
        raise RuntimeError(f"{PATH}: fitted on features {c['features']}, the advisor computes {FEATURES}; refit it")
    return {k: np.asarray(v, dtype=float) if isinstance(v, list) and k != "features" else v for k, v in c.items()}
