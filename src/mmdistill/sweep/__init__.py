"""Sweeps: methods and settings compared fairly on one data set, each tuned on validation and re-run on fresh seeds.

    from mmdistill.sweep import run_sweep
    run_sweep("sweep.yaml", "sweeps/mine", workers=2)

The file (:mod:`.spec`), the jobs (:mod:`.plan`), where they run (:mod:`.executors`), one job (:mod:`.worker`), the
optuna search (:mod:`.optuna_search`), the final table (:mod:`.table`) and the whole run (:mod:`.run`).
docs/sweeps.md shows a sweep from start to end.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SweepSpec", "load_sweep", "run_sweep"]


def __getattr__(name: str) -> Any:
    """``run_sweep``, ``load_sweep`` and ``SweepSpec`` import the engine at first use: ``mmdistill.sweep.layout`` stays
    light for the CLI's start-up."""
    if name == "run_sweep":
        from .run import run_sweep

        return run_sweep
    if name in ("load_sweep", "SweepSpec"):
        from . import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'mmdistill.sweep' has no attribute {name!r}")
