"""Experiment tracking for sweeps: an MLflow run per run folder, and TensorBoard's hparams view of the trials.

``logging: {mlflow: {tracking_uri: URI, experiment: NAME}}`` in a sweep file records, for every trial and final run,
its config (as flat ``key.sub`` parameters), its epochs (``train/*``, ``val/*``, ``lr`` per step = epoch) and its
final validation and test metrics. The default store is the SQLite file ``mlflow.db`` in the sweep folder
(``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db``): MLflow no longer takes new runs into a plain-file store.
``logging: {tensorboard: true}`` writes one hparams entry per finished trial into ``DIR/tensorboard``
(``tensorboard --logdir DIR/tensorboard``, HPARAMS tab).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MAX_PARAM_CHARS = 500  # MLflow's limit is larger; long values (model sections) are cut, the config file holds all


@contextmanager
def mlflow_run(job: dict, cfg, run_dir: Path) -> Iterator[None]:
    """An MLflow run around one seed of ``job``: parameters first, one metrics row per epoch, the final metrics."""
    import mlflow

    from ..engine.epoch_listeners import listening
    from ..engine.run_checks import flatten

    settings = job["mlflow"]
    mlflow.set_tracking_uri(settings["tracking_uri"])
    mlflow.set_experiment(settings["experiment"])  # made by prepare_mlflow, before any worker started
    seed = run_dir.name.removeprefix("s")
    with mlflow.start_run(run_name=f"{job['name']}/seed {seed}"):
        params = {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(cfg.model_dump(mode="json")).items()}
        mlflow.log_params(params)
        mlflow.set_tags(
            {
                "mmdistill.job": job["name"],
                "mmdistill.method": job["method"],
                "mmdistill.run_folder": str(run_dir),
                "mmdistill.seed": seed,
            }
        )

        def log_epoch(report) -> None:
            finite = {k: float(v) for k, v in report.values.items() if math.isfinite(v)}
            mlflow.log_metrics(finite, step=report.epoch)

        with listening(log_epoch):
            yield
        result = json.loads((run_dir / f"seed_{seed}" / "student" / "result.json").read_text())
        final = {f"final/{split}/{k}": float(v) for split in ("val", "test") for k, v in result[split].items()}
        mlflow.log_metrics({k: v for k, v in final.items() if math.isfinite(v)})


def prepare_mlflow(settings: dict) -> None:
    """The experiment, created once by the sweep (with its artifact folder) before the workers log into it."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=settings["tracking_uri"])
    if client.get_experiment_by_name(settings["experiment"]) is None:
        client.create_experiment(settings["experiment"], artifact_location=settings["artifacts"])


def write_hparams(folder: Path, spec, records: list[dict]) -> None:
    """TensorBoard's hparams view: one entry per finished trial, its settings against its validation metric."""
    from torch.utils.tensorboard import SummaryWriter

    from .plan import mean_val

    with SummaryWriter(log_dir=str(folder)) as writer:
        for record in records:
            if record["status"] != "done":
                continue
            hparams = {"method": record["method"], **{k: _plain(v) for k, v in record["params"].items()}}
            metrics = {f"hparam/val_{spec.metric}": mean_val(record)}
            writer.add_hparams(hparams, metrics, run_name=record["name"])


def _plain(value):
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
