"""``search: {kind: optuna}``: the study in the sweep folder's SQLite file holds every trial and its curve; a pruned
trial stops at the end of an epoch, resumable."""

from __future__ import annotations

import json

import pytest
from test_sweep_runs import SWEEP, write

from mmdistill.sweep import run_sweep
from mmdistill.sweep.plan import teacher_jobs, trial_job
from mmdistill.sweep.spec import load_sweep
from mmdistill.sweep.worker import run_job

optuna = pytest.importorskip("optuna", reason="the sweep extra (optuna) is not installed")

OPTUNA_SWEEP = {
    **SWEEP,
    "methods": ["kd"],
    "space": {
        "method.params.temperature": {"low": 1.0, "high": 8.0, "log": True},
        "trainer.optimizer.lr": [0.003, 0.01],
    },
    "search": {"kind": "optuna", "trials": 5, "seed": 1},
    "seeds": {"tune": 1, "final": 1},
}


def test_the_sqlite_study_holds_every_trial_with_its_validation_curve(tmp_path):
    out = tmp_path / "sweep"
    result = run_sweep(write(tmp_path, OPTUNA_SWEEP), out, quiet=True)
    study = optuna.load_study(study_name="kd", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        record = json.loads((out / "trials" / f"kd-{t.number:03d}" / "trial.json").read_text())
        assert t.value == pytest.approx(record["val"]["0"])
        assert sorted(t.intermediate_values) == [1]  # one epoch: one point of the curve
        assert 1.0 <= t.params["method.params.temperature"] <= 8.0
    tuned = next(r for r in result["final"] if r["variant"] == "tuned")
    assert json.loads(tuned["params"]) == study.best_trial.params


def test_a_trial_left_running_by_a_killed_sweep_runs_again_on_resume(tmp_path):
    out = tmp_path / "sweep"
    path = write(tmp_path, {**OPTUNA_SWEEP, "search": {"kind": "optuna", "trials": 2}})
    run_sweep(path, out, quiet=True)
    study = optuna.load_study(study_name="kd", storage=f"sqlite:///{out / 'study.db'}")
    left = study.ask({"method.params.temperature": optuna.distributions.FloatDistribution(1.0, 8.0, log=True)})
    run_sweep(path, out, resume=True, quiet=True)
    study = optuna.load_study(study_name="kd", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[left.number].state == optuna.trial.TrialState.COMPLETE
    assert (out / "trials" / f"kd-{left.number:03d}" / "trial.json").is_file()


def test_a_pruned_trial_stops_after_an_epoch_and_is_recorded(tmp_path):
    spec = load_sweep(write(tmp_path, {**OPTUNA_SWEEP, "space": {"method.params.temperature": [2.0]}}))
    spec.base["trainer"]["epochs"] = 3
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # a pruner that prunes every trial: the accuracy (in percent) never reaches 101
    study = optuna.create_study(
        study_name="kd", storage=storage, direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=101.0)
    )
    trial = study.ask({"method.params.temperature": optuna.distributions.CategoricalDistribution([2.0])})
    assert run_job(teacher_jobs(spec, tmp_path)[0])["status"] == "done"  # seed 0's teacher
    job = trial_job(spec, tmp_path, "kd", {"method.params.temperature": 2.0}, 0)
    pruner = {"name": "ThresholdPruner", "params": {"lower": 101.0}}
    job["optuna"] = {"storage": storage, "study": "kd", "trial_id": trial._trial_id, "pruner": pruner}
    record = run_job(job)
    assert record["status"] == "pruned"
    assert len(record["curve"]) == 1  # stopped after the first of 3 epochs
    frozen = optuna.load_study(study_name="kd", storage=storage).trials[0]
    assert list(frozen.intermediate_values) == [1]
    run = tmp_path / "trials" / "kd-000" / "s0"
    assert (run / "seed_0" / "student" / "checkpoints" / "last.safetensors").is_file()  # resumable
    assert not (run / "metrics.json").exists()
