"""A finished (or half-finished) run folder as models and metrics: what ``evaluate``, ``analyze``, ``report`` and
the advisor read. The folder layout is the one :func:`mmdistill.engine.protocol.run_protocol` writes:
``config.yaml`` and ``seed_<s>/<part>/student.safetensors`` for part in teacher, nokd, student.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..io import write_csv

PARTS = ("teacher", "nokd", "student")


def load_run_models(run_dir: Path, data_source: str | None = None):
    """(config, data splits, {"seed_0/student": model, ...}) of a run folder, or of a ``distill()`` folder
    (engine/system/run_record.py) read as a one-seed run: ``seed_<s>/student`` and, when it had one,
    ``seed_<s>/teacher``.

    ``data_source``: ``"pkg.mod:factory"`` (the ``--data`` option), the data to use instead of the recorded ones;
    needed for a ``distill()`` folder whose datasets were given in Python
    (:mod:`mmdistill.data.contracts.python_data`)."""
    from ..data.contracts.item_dataset import load_data
    from ..engine.api import run_task

    run_dir = Path(run_dir)
    distill_seed = _distill_folder_seed(run_dir)
    cfg = _run_config(run_dir, data_source)
    if data_source is None:
        data = load_data(cfg.data)
    else:
        try:
            data = load_data(cfg.data)
        except ConfigError as err:
            raise ConfigError(f"--data {data_source}: {err}") from None
    run_task(cfg.task, data)  # the data take the run's task's settings (e.g. ignore_index), as in training
    if distill_seed is None:
        files = {f"{d.name}/{p}": d / p / "student.safetensors" for d in sorted(run_dir.glob("seed_*")) for p in PARTS}
    else:
        from ..engine.system.run_record import TEACHER_WEIGHTS

        files = {
            f"{distill_seed}/teacher": run_dir / TEACHER_WEIGHTS,
            f"{distill_seed}/student": run_dir / "student.safetensors",
        }
    models = {key: _saved_model(cfg, key, weights, data) for key, weights in files.items() if weights.is_file()}
    if not models:
        raise ConfigError(f"{run_dir}: no saved model found (expected seed_*/<part>/student.safetensors)")
    return cfg, data, models


def _run_config(run_dir: Path, data_source: str | None):
    """The run's config, its data section replaced by ``{dataset: data_source}`` when one is given."""
    from ..config import DataConfig, load_config, validate
    from ..data.contracts.python_data import SOURCE, WHAT_TO_PASS

    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml", check_machine=False)
    if data_source is not None:
        return cfg.model_copy(update={"data": validate(DataConfig, {"dataset": data_source}, prefix="--data: ")})
    if cfg.data.dataset == SOURCE:
        raise ConfigError(f"{run_dir}: the run's datasets were given to distill() in Python; {WHAT_TO_PASS}")
    return cfg


def _saved_model(cfg, key: str, weights: Path, data):
    """The model saved as ``weights`` (``key``: ``seed_<s>/<part>``), built from the run's config and data."""
    from ..engine.assembly import build_run_model
    from ..engine.system.checkpoint import load_tensors
    from ..errors import CheckpointError

    model = build_run_model(cfg, "teacher" if key.endswith("/teacher") else "student", data, load_checkpoint=False)
    try:
        model.load_state_dict(load_tensors(weights)[0])
    except RuntimeError as err:  # missing, unexpected or differently shaped tensors
        raise CheckpointError(
            f"{weights}: the saved weights do not fit the model that config.yaml and the data describe "
            f"({str(err).splitlines()[0][:200]}); the folder's files do not belong together, or the data differ"
        ) from None
    return model.eval()


def _distill_folder_seed(run_dir: Path) -> str | None:
    """``seed_<s>`` of a ``distill()`` folder (``student.safetensors`` at the top), None for any other folder; a
    distill() folder without ``config.yaml`` is refused with the reason ``distill()`` recorded."""
    if not (run_dir / "student.safetensors").is_file():
        return None
    result = _distill_result(run_dir / "result.json")
    if not (run_dir / "config.yaml").is_file():
        why = result.get("not_a_run_folder") or "it has no config.yaml (written by an older mmdistill, or not finished)"
        raise ConfigError(
            f"{run_dir}: a distill() folder that mmdistill cannot read back: {why}. Build the models with "
            "mmdistill.models.build_model (a built-in model config or CustomModelConfig(factory='pkg.mod:fn', "
            "params=...)) and the data with mmdistill.data.build_splits or load_data, or run the whole protocol "
            "with mmdistill.engine.protocol.run_config (docs/tutorial_own_models.md)"
        )
    return f"seed_{result.get('seed', 0)}"


def _distill_result(path: Path) -> dict:
    """A ``distill()`` folder's ``result.json`` ({} when there is none); a damaged one is a ConfigError naming it."""
    import json

    if not path.exists():
        return {}
    if not path.is_file():  # a folder, a FIFO (reading it would block)
        raise ConfigError(f"{path}: not a regular file; distill() writes its result there")
    try:
        result = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON
        raise ConfigError(
            f"{path}: not a readable result file of distill() ({str(err)[:120]}); it is damaged"
        ) from None
    seed = result.get("seed", 0) if isinstance(result, dict) else None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(
            f"{path}: expected distill()'s result, a JSON object whose 'seed' is a non-negative integer; the file "
            "is damaged"
        )
    return result


def missing_models(run_dir: Path, cfg, models: dict) -> list[str]:
    """The models a run of ``cfg`` in ``run_dir`` should have saved but has not (unfinished), e.g. ``seed_1/nokd``.

    The seeds come from the run's marker (or its ``seed_*`` folders); a teacher is expected when the run trained one
    (no ``teacher.checkpoint``), the no-KD student unless the run was started with ``--no-baseline``.
    """
    from ..engine.system.runfolder import read_marker
    from ..registry import METHODS

    marker = read_marker(run_dir) or {}
    if marker.get("command") == "distill":  # one distill() call: its student (and teacher) or nothing
        return []
    seeds = set(marker.get("seeds") or []) | {int(p.name[5:]) for p in run_dir.glob("seed_*") if p.name[5:].isdigit()}
    parts = ["student"]
    if METHODS.get(cfg.method.name).needs_teacher and cfg.teacher is not None and cfg.teacher.checkpoint is None:
        parts.insert(0, "teacher")
    if marker.get("baseline", True) and cfg.method.name != "supervised":
        parts.append("nokd")
    return [f"seed_{s}/{p}" for s in sorted(seeds) for p in parts if f"seed_{s}/{p}" not in models]


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    missing: bool = False,
    noise: bool = False,
    levels: tuple[float, ...] = (0.0, 0.5, 1.0),
    data_source: str | None = None,
) -> dict:
    """Metrics of every saved model on ``split``; with ``missing`` / ``noise`` the robustness tables too (written
    under ``run_dir/robustness``). ``data_source``: as for :func:`load_run_models`."""
    from ..engine.metrics import evaluate
    from ..engine.trainer import eval_batches
    from ..masking import fit_masker
    from ..tasks import PERCENT, UNITS_KEY, get_task

    if noise and not all(0.0 <= float(v) <= 1.0 for v in levels):  # NaN fails too
        raise ConfigError(
            f"--levels: noise levels must lie in [0, 1] (dropout probability; Gaussian std in units "
            f"of the feature std), got {list(levels)}"
        )
    cfg, data, models = load_run_models(run_dir, data_source)
    dataset = data.split(split)
    task = get_task(cfg.task)
    out: dict = {  # the task's percent metrics in percent, here and in the robustness tables
        "metrics": {
            k: task.for_people(evaluate(m, eval_batches(dataset, 256), data.num_classes, task=task))
            for k, m in models.items()
        },
        "missing_models": missing_models(run_dir, cfg, models),
        "task": task.name,
        UNITS_KEY: PERCENT,
    }
    if missing or noise:
        from .robustness import missing_modality_table, noise_curves, plot_noise_curves

        robust_dir = run_dir / "robustness"
        if missing:
            masker = fit_masker(cfg.masking, data.train)
            rows = [
                {"model": k, **r}
                for k, m in models.items()
                for r in missing_modality_table(m, dataset, masker, task=task)
            ]
            write_csv(robust_dir / "missing.csv", rows)
            out["missing"] = rows
        if noise:
            rows = []
            for k, m in models.items():
                curves = noise_curves(m, dataset, list(levels), task=task)
                plot_noise_curves(curves, robust_dir / f"noise_{k.replace('/', '_')}.png", title=k)
                rows += [{"model": k, **r} for r in curves]
            write_csv(robust_dir / "noise.csv", rows)
            out["noise"] = rows
    return out
