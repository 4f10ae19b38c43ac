"""``logging`` in a sweep file: an MLflow run per run folder (config, per-epoch and final metrics, a file store in
the sweep folder by default) and TensorBoard's hparams entries for the trials."""

from __future__ import annotations

import json

import pytest
import yaml
from test_sweep_runs import SWEEP, write

from mmdistill.sweep import run_sweep

SMALL = {**SWEEP, "methods": ["kd"], "space": {"method.params.temperature": [1, 4]}, "seeds": {"tune": 1, "final": 1}}


@pytest.mark.slow  # about 20 s: MLflow's import and its SQLite store's set-up
def test_mlflow_records_each_run_with_its_config_and_its_epochs(tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    sweep = {**SMALL, "logging": {"mlflow": {}}}
    base = yaml.safe_load(write(tmp_path, sweep).with_name("base.yaml").read_text())
    base["trainer"]["epochs"] = 2
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    out = tmp_path / "sweep"
    run_sweep(tmp_path / "sweep.yaml", out, quiet=True)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mmdistill-sweep")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    # 2 teachers (seeds 0, 1), 2 trials, final runs kd-tuned, kd-default, supervised-default (one seed each)
    assert len(runs) == 7 and "kd-001/seed 0" in runs
    trial = runs["kd-001/seed 0"]
    assert trial.data.params["method.params.temperature"] == "4"
    assert trial.data.tags["mmdistill.run_folder"].endswith("trials/kd-001/s0")
    curve = client.get_metric_history(trial.info.run_id, "val/accuracy")
    assert [m.step for m in curve] == [1, 2]
    record = json.loads((out / "trials" / "kd-001" / "trial.json").read_text())
    assert trial.data.metrics["final/val/accuracy"] == pytest.approx(record["val"]["0"])


def test_tensorboard_holds_an_hparams_entry_per_finished_trial(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "sweep"
    run_sweep(write(tmp_path, {**SMALL, "logging": {"tensorboard": True}}), out, quiet=True)
    entries = sorted(p.name for p in (out / "tensorboard").iterdir() if p.is_dir())
    assert entries == ["kd-000", "kd-001"]
    events = EventAccumulator(str(out / "tensorboard" / "kd-001"))
    events.Reload()
    assert "hparam/val_accuracy" in events.Tags()["scalars"]
