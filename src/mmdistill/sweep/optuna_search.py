"""``search: {kind: optuna}``: one optuna study per method, TPE sampling and median pruning on the validation curve.

The studies live in ``study.db`` in the sweep folder (SQLite), so every worker reports its trial's curve to the same
database and a resumed sweep continues the studies: a trial that was running when the sweep died is run again with
its own settings (its run folders resume from their last checkpoint); ``trials`` counts every trial of a study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plan import trial_job
from .spec import Range, SweepSpec
from .worker import read_record

STARTUP_TRIALS = 4  # trials per study sampled at random before TPE, and finished before the pruner prunes any
# Median pruning: a trial stops when, at an epoch after the first, its validation metric is worse than the median of
# the earlier trials at that epoch. The workers build the same pruner (a study's pruner is not stored in its file).
PRUNER: dict[str, Any] = {"name": "MedianPruner", "params": {"n_startup_trials": STARTUP_TRIALS, "n_warmup_steps": 1}}


class OptunaSearch:
    def __init__(self, spec: SweepSpec, out: Path) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec, self.out, self.optuna = spec, out, optuna
        self.storage = f"sqlite:///{(out / 'study.db').resolve()}"
        self.studies = {m: self._study(m, i) for i, m in enumerate(spec.methods)}
        self.total = (spec.trials or 0) * len(spec.methods)
        self.requeued = [(m, t) for m, s in self.studies.items() for t in self._interrupted(m, s)]
        self.turn = 0

    def _study(self, method: str, index: int):
        optuna = self.optuna
        return optuna.create_study(
            study_name=method,
            storage=self.storage,
            direction="maximize" if self.spec.higher_is_better else "minimize",
            sampler=optuna.samplers.TPESampler(
                seed=self.spec.search_seed * 1000 + index, n_startup_trials=STARTUP_TRIALS
            ),
            pruner=getattr(optuna.pruners, PRUNER["name"])(**PRUNER["params"]),
            load_if_exists=True,
        )

    def _interrupted(self, method: str, study) -> list:
        """Trials left running by a killed sweep: told from their record when the job ended, else run again."""
        again = []
        for trial in study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.RUNNING,)):
            record = read_record(self.out / "trials" / f"{method}-{trial.number:03d}")
            if record is not None:
                self._tell(study, trial.number, record)
            else:
                again.append(trial)
        return again

    def distributions(self, method: str) -> dict[str, Any]:
        d = self.optuna.distributions
        out: dict[str, Any] = {}
        for key, values in self.spec.space[method].items():
            if isinstance(values, Range):
                kind = d.IntDistribution if values.integer else d.FloatDistribution
                bounds = (int(values.low), int(values.high)) if values.integer else (values.low, values.high)
                out[key] = kind(*bounds, log=values.log)
            else:
                out[key] = d.CategoricalDistribution(values)
        return out

    def next_job(self) -> dict | None:
        """The next trial: an interrupted one first, then a new one for the method with the fewest trials."""
        if self.requeued:
            method, trial = self.requeued.pop(0)
            return self._job(method, trial.params, trial.number, trial._trial_id)
        for _ in self.spec.methods:
            method = self.spec.methods[self.turn % len(self.spec.methods)]
            self.turn += 1
            study = self.studies[method]
            if len(study.get_trials(deepcopy=False)) < (self.spec.trials or 0):
                trial = study.ask(self.distributions(method))
                return self._job(method, trial.params, trial.number, trial._trial_id)
        return None

    def _job(self, method: str, params: dict, number: int, trial_id: int) -> dict:
        job = trial_job(self.spec, self.out, method, dict(params), number)
        job["optuna"] = {"storage": self.storage, "study": method, "trial_id": trial_id, "pruner": PRUNER}
        return job

    def tell(self, job: dict, record: dict) -> None:
        self._tell(self.studies[job["method"]], int(job["name"].rsplit("-", 1)[1]), record)

    def _tell(self, study, number: int, record: dict) -> None:
        state = self.optuna.trial.TrialState
        values = list(record.get("val", {}).values())
        if record["status"] == "done" and values:
            study.tell(number, sum(values) / len(values), skip_if_finished=True)
        elif record["status"] == "pruned":
            study.tell(number, state=state.PRUNED, skip_if_finished=True)
        else:
            study.tell(number, state=state.FAIL, skip_if_finished=True)
