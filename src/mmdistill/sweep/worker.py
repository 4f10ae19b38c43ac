"""One job of a sweep, as a worker process (or a Ray task) runs it: a configuration on one or more seeds.

Each seed is a normal ``mmdistill train`` run folder (``JOB/s<seed>``, one seed, no no-KD student), so
``evaluate``, ``analyze`` and ``report`` read it; an interrupted one is resumed, a finished one read back. Only the
final runs (``read_test``) evaluate the test split: a tuning trial and a shared teacher never read it. The job's
record (``JOB/trial.json``: status, the selection metric on validation per seed, the test metrics, the training
time and steps, when it started and ended, or the error) is written when it ends, so a resumed sweep knows what is
done.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

RECORD = "trial.json"


class TrialPruned(Exception):
    """Raised at the end of an epoch when the study's pruner stops the trial (its validation curve is poor)."""


def read_record(folder: Path) -> dict | None:
    import json

    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def start_worker(threads: int, sweep: int) -> None:
    """A pool worker's set-up: ``threads`` compute threads (the cores split between workers), and an exit as soon as
    the sweep (process ``sweep``) that started it dies: its run is left interrupted, and ``--resume`` continues it.
    The worker's parent is the sweep, or the fork server that forked it, which exits with the sweep."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(), sweep), daemon=True).start()


def _exit_when_orphaned(parent: int, sweep: int, every: float = 0.5) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            print(f"mmdistill sweep: the sweep (pid {sweep}) has died; this worker stops", file=sys.stderr, flush=True)
            os._exit(3)


def run_job(job: dict) -> dict:
    """Run ``job`` (see :mod:`.plan`) and return its record; a failure is recorded with its error, never raised."""
    from ..io import write_json

    folder = Path(job["folder"])
    start, started_at = time.perf_counter(), time.time()
    if job.get("threads"):  # a Ray task: its share of the node's cores
        import torch

        torch.set_num_threads(job["threads"])
    tally: dict[str, Any] = {"seconds": 0.0, "steps": 0, "curve": []}
    record: dict[str, Any] = {"name": job["name"], "method": job["method"], "params": job["params"]}
    try:
        runs = {}
        for i, (seed, cfg) in enumerate(job["configs"].items()):
            runs[seed] = _run_seed(job, cfg, folder / f"s{seed}", int(seed), tally, first=i == 0)
        record.update(status="done", val={s: r["val"] for s, r in runs.items()})
        record["test"] = {s: r["test"] for s, r in runs.items()} if job.get("read_test") else {}
    except TrialPruned:
        record.update(status="pruned", val={}, test={})
    except Exception as err:  # noqa: BLE001  a failed trial is recorded and the sweep goes on
        record.update(status="failed", error=_one_line(err), traceback=traceback.format_exc()[-3000:])
    record.update(
        seconds=tally["seconds"], steps=tally["steps"], curve=tally["curve"], wall_s=time.perf_counter() - start
    )
    record.update(started_at=started_at, ended_at=time.time())  # Unix times: which jobs ran side by side
    record["worker"] = f"{socket.gethostname()}:{os.getpid()}"  # where it ran (a Ray node, a local worker)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RECORD, record)
    return record


def _one_line(err: BaseException) -> str:
    from ..errors import MMDistillError

    text = str(err).strip().splitlines()[0][:400] if str(err).strip() else ""
    return text if isinstance(err, MMDistillError) else f"{type(err).__name__}: {text}"


def _run_seed(job: dict, raw: dict, run_dir: Path, seed: int, tally: dict, first: bool) -> dict:
    """One seed of the job as a ``train`` run folder; returns ``{"val": metric on val, "test": test metrics}``."""
    import json

    from ..config import RunConfig, check_resources, validate
    from ..engine.epoch_listeners import listening
    from ..engine.protocol import run_config
    from ..engine.system.runfolder import read_marker

    cfg = validate(RunConfig, raw)
    assert isinstance(cfg, RunConfig)
    check_resources(cfg.trainer)
    result_path = run_dir / f"seed_{seed}" / "student" / "result.json"
    if not (run_dir / "metrics.json").is_file():
        listener = _listener(job, cfg, f"seed {seed} student", tally, first)
        with listening(listener), _tracked(job, cfg, run_dir):
            resume = read_marker(run_dir) is not None
            test = bool(job.get("read_test"))  # only the final runs read the test split
            run_config(cfg, run_dir, [seed], baseline=False, resume=resume, quiet=True, evaluate_test=test)
    result = json.loads(result_path.read_text())
    return {"val": result["val"][job["metric"]], "test": result["test"] if job.get("read_test") else {}}


def _listener(job: dict, cfg, desc: str, tally: dict, first: bool):
    """Counts the student's training time and steps; for an optuna trial, reports the validation curve of the
    first seed to the study and stops the run when the pruner says so."""
    from ..tasks import get_task

    task, metric = get_task(cfg.task), job["metric"]
    trial = _optuna_trial(job["optuna"]) if job.get("optuna") and first else None

    def listen(report) -> None:
        if report.desc != desc:
            return  # the teacher's epochs, when the trial trains one
        tally["seconds"] += report.seconds
        tally["steps"] += report.steps
        value = task.for_people({metric: report.values[f"val/{metric}"]})[metric]
        if first:
            tally["curve"].append(value)
        if trial is not None:
            trial.report(value, report.epoch)
            if trial.should_prune():
                raise TrialPruned(f"pruned at epoch {report.epoch}")

    return listen


def _optuna_trial(info: dict):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = getattr(optuna.pruners, info["pruner"]["name"])(**info["pruner"]["params"])  # not kept in the study
    study = optuna.load_study(study_name=info["study"], storage=info["storage"], pruner=pruner)
    return optuna.trial.Trial(study, info["trial_id"])


def _tracked(job: dict, cfg, run_dir: Path):
    """An MLflow run around the job's seed when the sweep logs to MLflow (:mod:`.tracking`), else nothing."""
    from contextlib import nullcontext

    if not job.get("mlflow"):
        return nullcontext()
    from .tracking import mlflow_run

    return mlflow_run(job, cfg, run_dir)
