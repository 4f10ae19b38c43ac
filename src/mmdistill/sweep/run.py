"""``run_sweep``: a sweep file run into a sweep folder, from the teachers to the final table.

    from mmdistill.sweep import run_sweep
    result = run_sweep("sweep.yaml", "sweeps/kd-vs-dkd", workers=2)

In order: the file is checked (:func:`.spec.load_sweep`) and, on ``resume``, compared with the one the folder was
started with; the folder is claimed (kind ``sweep``: marker, lock); the teacher of every seed is trained once; the
trials run (grid, random or optuna) on the tune seeds, each selected by its validation metric only; per method the
best setting and the defaults run on the final seeds, with the no-KD and KD references; then ``final.csv``,
``trials.csv`` and ``summary.md``. A failed trial is recorded and the sweep goes on; a resumed sweep runs only the
jobs without a finished record.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from ..engine.system import runfolder
from ..errors import ConfigError, TrainingError
from ..io import write_json
from . import fork_server
from . import plan as plans
from .executors import make_executor, run_jobs
from .layout import SOURCE
from .schedule import KINDS, JobQueue
from .spec import SweepSpec, load_sweep
from .table import final_rows, write_tables
from .worker import read_record


def run_sweep(
    sweep_file: str | Path,
    out: str | Path,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict:
    """Run the sweep of ``sweep_file`` into ``out``; returns ``{"final": rows of final.csv, "trials": records}``.

    ``workers``: jobs in parallel (local processes, at most the CPUs; or Ray tasks); ``executor``: ``local`` or
    ``ray`` (``ray_address``: a cluster; none: a local Ray started for the sweep). Everything the file and the
    options can get wrong is refused before any run starts."""
    try:
        spec = _checked(sweep_file, out, resume, overwrite)
        gpus = 1.0 if spec.base["trainer"]["accelerator"] in ("gpu", "cuda") else 0.0  # a Ray task's GPU share
        runner = make_executor(executor, workers, ray_address, gpus)
    except BaseException:
        fork_server.stop()  # the CLI starts it early (mmdistill.commands.sweep); nothing runs
        raise
    try:
        folder = runfolder.claim(out, "sweep", "summary.md", overwrite, resume, info={"workers": workers})
    except BaseException:
        runner.close()
        raise
    progress = Progress(spec, quiet)
    try:
        if not (folder.path / SOURCE).is_file():
            write_json(folder.path / SOURCE, spec.source)
        return _run(spec, folder.path, runner, progress)
    except BaseException:
        if not any(folder.path.rglob("*.safetensors")):
            folder.discard()
        raise
    finally:
        progress.close()
        runner.close()
        folder.release()


def _checked(sweep_file: str | Path, out: str | Path, resume: bool, overwrite: bool) -> SweepSpec:
    """The sweep file, checked with the options and against the folder (a resumed sweep keeps its file)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: give one of them (continue the sweep, or replace it)")
    spec = load_sweep(sweep_file)
    checked = runfolder.check(out, "sweep", "summary.md", overwrite, resume)
    if checked.action == "resume":
        check_same_sweep(spec, checked.path)
    _check_extras(spec)
    plans.needs_teachers(spec)  # a distilling sweep without a teacher section: refused now
    return spec


def check_same_sweep(spec: SweepSpec, out: Path) -> None:
    """A resumed sweep keeps its file: any changed key is refused, listed as ``key: old -> new``."""
    from ..engine.run_checks import config_changes

    try:
        saved = json.loads((out / SOURCE).read_text())
    except (OSError, ValueError):
        return  # claimed, then stopped before the file was recorded: nothing ran
    changes = config_changes(saved, json.loads(json.dumps(spec.source)))
    if changes:
        shown = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in changes[:10])
        more = f" (and {len(changes) - 10} more)" if len(changes) > 10 else ""
        raise ConfigError(
            f"--resume: the sweep file differs from the sweep in {out}: {shown}{more}; a resumed sweep keeps its "
            "file (start a new sweep with another --out, or pass --overwrite to replace this one)"
        )


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_extras(spec: SweepSpec) -> None:
    for needed, module, extra in (
        (spec.kind == "optuna", "optuna", "sweep"),
        ("mlflow" in spec.logging, "mlflow", "mlflow"),
    ):
        if needed:
            try:
                __import__(module)
            except ImportError:
                raise ConfigError(
                    f"{'search.kind: optuna' if module == 'optuna' else 'logging.mlflow'} needs {module}, which is "
                    f"not installed: pip install 'mmdistill[{extra}]'"
                ) from None


def _run(spec: SweepSpec, out: Path, runner, progress: Progress) -> dict:
    tracking = plans.mlflow_settings(spec, out)
    if tracking is not None:
        from .tracking import prepare_mlflow

        prepare_mlflow(tracking)
    (out / "cache").mkdir(exist_ok=True)  # the sweep's own teacher cache (plan.run_configs): no note from each run
    search = None
    if spec.kind == "optuna":
        from .optuna_search import OptunaSearch

        search = OptunaSearch(spec, out)
    queue = JobQueue(spec, out, search)
    if spec.trials is not None and spec.kind == "grid" and len(queue.trials) > spec.trials * len(spec.methods):
        progress.note(f"search.trials: {spec.trials} per method, but the grid has more settings; the whole grid runs")
    progress.track(queue.total, queue.before)

    def ended(job: dict, record: dict, running: int) -> None:
        queue.ended(job, record)  # first: a method's trials all ended puts its final runs into the totals
        progress.finished(job, record, running)

    run_jobs(queue.next_job, runner, ended)
    if queue.failed_teacher is not None:
        failed = queue.failed_teacher
        raise TrainingError(
            f"the teacher of {failed['name']} failed ({failed.get('error')}); the sweep stopped, and no run that "
            f"needs that teacher started ({len(queue.left())} jobs not run; --resume runs them)"
        )
    records = plans.trial_records(out)
    best = plans.best_trials(spec, records)
    finals, holder = plans.final_jobs(spec, out, best)
    final_records = {
        j["name"]: read_record(Path(j["folder"])) or {"status": "failed", "error": "no record"} for j in finals
    }
    rows = final_rows(spec, final_records, holder, best)
    notes = _notes(spec, out, queue.teachers, holder)
    write_tables(spec, out, rows, records, notes)
    if spec.logging.get("tensorboard"):
        from .tracking import write_hparams

        write_hparams(out / "tensorboard", spec, records)
    progress.close()
    progress.note(f"wrote {out / 'summary.md'} and {out / 'final.csv'}")
    return {"final": rows, "trials": records, "teachers_trained": len(queue.teachers)}


def _notes(spec: SweepSpec, out: Path, teachers: list, holder: dict) -> list[str]:
    kd = "KD tuned (a method of this sweep)" if "kd" in spec.methods else "KD at its defaults"
    nokd = "tuned" if "supervised" in spec.methods else "at the base config's settings"
    taught = (
        f"{len(teachers)} teachers trained, one per seed, shared by every run of that seed (teachers/)"
        if teachers
        else "the teacher: the base config's teacher.checkpoint, or none needed"
    )
    return [
        f"References: no-KD = the student trained without distillation ({nokd}); KD = {kd}.",
        taught + "; each trial and final run is a `mmdistill train` folder (trials/, final/).",
        "ms/step: training time per optimizer step of the final runs (no validation, no I/O).",
    ]


LABELS = {"teacher": "teachers", "trial": "trials", "final": "final runs"}


class Progress:
    """The sweep's progress on stderr, by the conventions of :mod:`mmdistill.commands.progress`: on a terminal one
    line redrawn in place (jobs ended / total per kind: teachers, trials, final runs, which run side by side; done,
    running and failed; the best validation score so far; the elapsed time and a rough ETA); when stderr is not a
    terminal one line per finished job with the same figures; with ``quiet`` nothing. ETA = seconds per run ended so
    far x runs left, a run being one seed of a job (a final job runs every final seed); jobs finished by an earlier
    run of a resumed sweep count as ended, not in the rate."""

    def __init__(self, spec: SweepSpec, quiet: bool) -> None:
        self.spec, self.quiet = spec, quiet
        self.live = not quiet and sys.stderr.isatty()
        self.best: tuple[float, str] | None = None
        self.start = time.perf_counter()
        self.bar: Any = None
        self.total = dict.fromkeys(KINDS, 0)
        self.before = dict(self.total)
        self.ended = dict(self.total)  # per kind, in this run
        self.counts = {"done": 0, "pruned": 0, "failed": 0}
        self.runs = {"teacher": 1, "trial": len(spec.tune_seeds), "final": len(spec.final_seeds)}  # runs per job

    def note(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(f"mmdistill sweep: {text}", file=sys.stderr)  # above the live line
        else:
            print(f"mmdistill sweep: {text}", file=sys.stderr, flush=True)

    def track(self, total: dict[str, int], before: dict[str, int]) -> None:
        """Follow the jobs per kind: ``total`` (finished before included) and ``before`` (finished by an earlier run),
        mappings the job queue keeps up to date; one note per kind with jobs."""
        self.total, self.before = total, before
        for kind, label in LABELS.items():
            if total[kind]:
                again = f" ({before[kind]} finished before)" if before[kind] else ""
                self.note(f"{label}: {total[kind]} to run{again}")
        if self.live and sum(total.values()) > sum(before.values()):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=sum(total.values()), bar_format="{desc}", file=sys.stderr)
            self.bar.set_description_str("sweep " + self._overall(""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finished(self, job: dict, record: dict, running: int) -> None:
        kind, status = job.get("kind", "trial"), record["status"]
        self.ended[kind] += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        value = plans.mean_val(record)
        done = kind == "trial" and status == "done" and not math.isnan(value)
        if done and (self.best is None or plans._better(value, self.best[0], self.spec.higher_is_better)):
            self.best = (value, job["name"])
        tally = f"{self.counts['done']} done, {running} running, {self.counts['failed']} failed{self._best()}"
        what = f"val {self.spec.metric} {value:.2f}" if status == "done" else status
        if status == "failed":
            what += f": {record.get('error', '')}"
        if self.bar is None:
            self.note(
                f"{self._kind(kind)}: {job['name']} {what} ({record.get('wall_s', 0):.1f} s); {tally}{self._time()}"
            )
            return
        if status == "failed":
            self.note(f"{self._kind(kind)}: {job['name']} {what}")
        self.bar.set_description_str("sweep " + self._overall(f": {tally}"), refresh=False)
        self.bar.update(1)

    def _kind(self, kind: str) -> str:
        """``trials 3/8``: the kind's jobs ended (finished before included) / its total."""
        return f"{LABELS[kind]} {self.before[kind] + self.ended[kind]}/{self.total[kind]}"

    def _overall(self, middle: str) -> str:
        """``teachers 3/3, trials 3/8, final runs 0/5<middle> [41 s, ETA ~1 min]``: every kind with jobs."""
        kinds = ", ".join(self._kind(kind) for kind in KINDS if self.total[kind])
        return f"{kinds}{middle}{self._time()}"

    def _time(self) -> str:
        """`` [41 s, ETA ~1 min]``: the time since the start, and a rough time left while jobs are left."""
        return f" [{_duration(time.perf_counter() - self.start)}{self._eta()}]"

    def _best(self) -> str:
        if self.best is None:
            return ""
        return f"; best {self.best[1]} (val {self.spec.metric} {self.best[0]:.2f})"

    def _eta(self) -> str:
        ended = sum(self.ended[k] * self.runs[k] for k in KINDS)
        left = sum(max(0, self.total[k] - self.before[k] - self.ended[k]) * self.runs[k] for k in KINDS)
        if left <= 0 or not ended:
            return ""
        return f", ETA ~{_duration((time.perf_counter() - self.start) / ended * left)}"


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``: a rough time for people."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
