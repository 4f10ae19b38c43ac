"""Sweeps: methods and settings compared fairly on one data set, each tuned on validation and re-run on fresh seeds.

    from mmdistill.sweep import run_sweep
    run_sweep("sweep.yaml", "sweeps/mine", workers=2)

The file (:mod:`.spec`), the jobs (:mod:`.plan`), where they run (:mod:`.executors`), one job (:mod:`.worker`), the
optuna search (:mod:`.optuna_search`), the final table (:mod:`.table`) and the whole run (:mod:`.run`).
docs/sweeps.md shows a sweep from start to end.
"""

from __future__ import annotations

from .run import run_sweep
from .spec import SweepSpec, load_sweep

__all__ = ["SweepSpec", "load_sweep", "run_sweep"]
