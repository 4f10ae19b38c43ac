"""The order of a sweep's jobs: each starts as soon as the jobs it needs have ended, not phase by phase.

A trial needs the teacher of its tune seed. A final run needs the teachers of the final seeds and, for a tuned
setting, every trial of its method: the best setting is chosen from all of them (:func:`.plan.best_trials`: by
validation, the first of equals in trial order), so the choice is the same whatever order the trials end in. Hence
the final seeds' teachers train alongside the trials, the default and reference final runs start once those teachers
are trained, and with a grid or random search a method's tuned final run starts as soon as its own trials have
ended, while other methods' trials still run. With optuna, where each new trial is sampled from the ended ones, a
trial is drawn from the study only when a worker is free for it, and the tuned final runs wait for every trial.

Of the jobs ready to start, the first in this order runs: the tune seeds' teachers (every trial waits for them), the
final seeds' teachers (every final run waits for them), the final runs with a tuned setting (the longest jobs, and
those that wait for the most: started first, they leave the short trials to fill the workers at the end), the
trials (in :func:`.plan.static_trials` order, or as the study draws them), then the final runs at default settings
and the references.
"""

from __future__ import annotations

from pathlib import Path

from . import plan as plans
from .spec import SweepSpec
from .worker import read_record

KINDS = ("teacher", "trial", "final")
TUNE_TEACHER, FINAL_TEACHER, TUNED_FINAL, TRIAL, OTHER_FINAL = range(5)  # the order among ready jobs


class JobQueue:
    """A sweep's jobs for :func:`.executors.run_jobs`: :meth:`next_job` gives the first job ready to start (None when
    every job left waits for a running one, or none is left) and :meth:`ended` takes each job's record. A job with a
    finished record (an earlier run of a resumed sweep) is not run again. A teacher that fails stops the queue:
    no job starts after it (:attr:`failed_teacher`)."""

    def __init__(self, spec: SweepSpec, out: Path, search=None) -> None:
        self.spec, self.out, self.search = spec, out, search
        self.teachers = plans.teacher_jobs(spec, out)
        self.trials = plans.static_trials(spec, out) if search is None else []
        self.trials_of = {m: [job["folder"] for job in self.trials if job["method"] == m] for m in spec.methods}
        self.total = dict.fromkeys(KINDS, 0)  # jobs per kind, those finished before included
        self.before = dict.fromkeys(KINDS, 0)  # finished by an earlier run of the sweep
        self.waiting: list[dict] = []
        self.known: set[str] = set()  # folders of every job queued or finished
        self.done: set[str] = set()  # folders of the jobs ended as done or pruned, or finished before
        self.ended_jobs: set[str] = set()  # folders of the jobs ended, whatever their status
        self.drawn: set[str] = set()  # the optuna trials started and not ended
        self.search_done = search is None
        self.settled: set[str] = set()  # methods whose trials have all ended
        self.failed_teacher: dict | None = None
        for job in [*self.teachers, *self.trials]:
            self._add(job)
        self.total["teacher"], self.total["trial"] = len(self.teachers), len(self.trials) or getattr(search, "total", 0)
        self._settle(initial=True)

    def next_job(self) -> dict | None:
        """The first job ready to start, by rank, or None; an optuna trial is drawn only when it is the one to run."""
        if self.failed_teacher is not None:
            return None
        drawn = False
        for job in sorted(self.waiting, key=self._rank):
            if not drawn and self._rank(job) > TRIAL:
                drawn, trial = True, self._draw_trial()
                if trial is not None:
                    return trial
            if self._ready(job):
                self.waiting.remove(job)
                return job
        return None if drawn else self._draw_trial()

    def ended(self, job: dict, record: dict) -> None:
        """``job`` ended with ``record`` (done, pruned or failed): the jobs waiting for it may start."""
        folder = job["folder"]
        self.ended_jobs.add(folder)
        if record["status"] in plans.FINISHED:
            self.done.add(folder)
        if job["kind"] == "teacher" and record["status"] != "done":
            self.failed_teacher = record
        if job["kind"] == "trial":
            if self.search is not None:
                self.search.tell(job, record)
                self.drawn.discard(folder)
            self._settle()

    def left(self) -> list[str]:
        """The names of the jobs that never started (a failed teacher stopped the queue)."""
        return [job["name"] for job in self.waiting]

    def _add(self, job: dict) -> None:
        self.known.add(job["folder"])
        record = read_record(Path(job["folder"]))
        if record is not None and record.get("status") in plans.FINISHED:
            self.before[job["kind"]] += 1
            self.done.add(job["folder"])
            self.ended_jobs.add(job["folder"])
        else:
            self.waiting.append(job)

    def _rank(self, job: dict) -> int:
        if job["kind"] == "teacher":
            return TUNE_TEACHER if int(next(iter(job["configs"]))) in self.spec.tune_seeds else FINAL_TEACHER
        if job["kind"] == "trial":
            return TRIAL
        return TUNED_FINAL if job["params"] else OTHER_FINAL

    def _ready(self, job: dict) -> bool:
        return all(folder in self.done for folder in self._teachers_of(job))

    def _teachers_of(self, job: dict) -> list[str]:
        """The folders of the sweep's teachers that ``job``'s run configs name (every run of a seed with a teacher
        section: the no-KD runs too, whose configs keep the section unused)."""
        if job["kind"] == "teacher" or not self.teachers:
            return []
        return [self._teacher(int(seed)) for seed, cfg in job["configs"].items() if cfg.get("teacher") is not None]

    def _teacher(self, seed: int) -> str:
        return str(self.out / "teachers" / f"seed_{seed}")

    def _draw_trial(self) -> dict | None:
        """The study's next trial, once the tune seeds' teachers are trained; at the end of the search, the methods
        settle when the last drawn trial ends."""
        teachers = [self._teacher(seed) for seed in self.spec.tune_seeds] if self.teachers else []
        if self.search_done or not all(folder in self.done for folder in teachers):
            return None
        job = self.search.next_job()
        if job is None:
            self.search_done = True
            self._settle()
            return None
        self.drawn.add(job["folder"])
        return job

    def _settle(self, initial: bool = False) -> None:
        """Methods whose trials have all ended settle: their tuned final runs are known, and queued (``initial``:
        the final runs known from the start too, those at default settings)."""
        before = len(self.settled)
        for m in self.spec.methods:
            if self.search is None:
                if all(folder in self.ended_jobs for folder in self.trials_of[m]):
                    self.settled.add(m)
            elif self.search_done and not self.drawn:
                self.settled.add(m)
        if initial or len(self.settled) > before:
            self._queue_finals()

    def _queue_finals(self) -> None:
        """The final runs whose settings are known, queued once each; the planned number of final runs updated."""
        records = [r for r in plans.trial_records(self.out) if r["method"] in self.settled]
        best = plans.best_trials(self.spec, records)
        for job in plans.final_jobs(self.spec, self.out, best, self.settled)[0]:
            if job["folder"] not in self.known:
                self._add(job)
        self.total["final"] = plans.planned_finals(self.spec, best, self.settled)
