"""What a sweep writes into its folder, declared to the run-folder code (imports nothing heavy: the CLI reads it at
start-up, e.g. for a ``reproduce`` folder that holds sweeps)."""

from __future__ import annotations

from ..engine.system import runfolder

SOURCE = "sweep.json"  # the sweep file as started (the base config resolved): a resumed sweep must match it
FINISHED = "summary.md"
JOB: runfolder.Layout = {"s*": runfolder.RunOf("train"), "trial.json": None}  # a job: a train folder per seed
LAYOUT: runfolder.Layout = {
    SOURCE: runfolder.PREPARED,
    "teachers": {"seed_*": JOB},
    "trials": {"*": JOB},
    "final": {"*": JOB},
    "cache": runfolder.ALL,
    "mlflow.db": None,
    "mlartifacts": runfolder.ALL,
    "tensorboard": runfolder.ALL,
    "study.db": None,
    "study.db-*": None,
    "trials.csv": None,
    "final.csv": None,
    FINISHED: None,
}
runfolder.register_layout("sweep", LAYOUT, resumable=True, finished=FINISHED)
