"""What a sweep runs, as jobs: the teachers (one per seed), the trials (searched settings on the tune seeds) and the
final runs (the chosen and the default settings on the final seeds, and the references: no-KD and KD).

A job is a plain mapping a worker process or a Ray task can take (:func:`.worker.run_job`): its kind (``teacher``,
``trial`` or ``final``), name and folder, a run config per seed (the shared teacher's weights and the sweep's teacher
cache filled in), the selection metric, and, for an optuna trial, the study to report its validation curve to. Every
trial of a seed distils from that seed's one teacher, trained once (or the base config's ``teacher.checkpoint`` for
every seed). In what order the jobs run: :mod:`.schedule`.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..registry import METHODS
from .spec import KD, NO_KD, Range, SweepSpec, configured
from .worker import read_record

FINISHED = ("done", "pruned")  # a job with one of these records is not run again


def needs_teachers(spec: SweepSpec) -> bool:
    """Whether the sweep trains a teacher per seed: some method (or the KD reference) distils, and the base config
    gives no ``teacher.checkpoint``."""
    distils = any(METHODS.get(m).needs_teacher for m in [*spec.methods, KD])
    if distils and spec.base.get("teachers") is not None:
        raise ConfigError(
            "base.teachers: a sweep compares every method with KD from one teacher per seed, so it takes one teacher; "
            "give the base config a teacher section instead of teachers"
        )
    if distils and (spec.base.get("teacher") or {}).get("trainable") is True:
        raise ConfigError(
            "base.teacher.trainable: a sweep trains one frozen teacher per seed and shares its cached outputs with "
            "every trial; a teacher that learns alongside belongs to a single run (mmdistill train)"
        )
    if distils and spec.base.get("teacher") is None:
        raise ConfigError(
            f"base: methods {spec.methods} (and the KD reference) need a teacher; add a teacher section to the base "
            "config (a model, and a checkpoint or none to train one per seed)"
        )
    return distils and spec.base["teacher"].get("checkpoint") is None


def teacher_weights(out: Path, seed: int) -> Path:
    return out / "teachers" / f"seed_{seed}" / f"s{seed}" / f"seed_{seed}" / "student" / "student.safetensors"


def teacher_jobs(spec: SweepSpec, out: Path) -> list[dict]:
    """One supervised run of the teacher model per seed (tune and final seeds), with the teacher's trainer."""
    if not needs_teachers(spec):
        return []
    base, teacher = spec.base, spec.base["teacher"]
    raw = {**copy.deepcopy(base), "student": {"model": teacher["model"]}, "teacher": None}
    raw["trainer"] = copy.deepcopy(teacher.get("trainer") or base["trainer"])
    raw = configured(raw, NO_KD, {})
    jobs = []
    for seed in sorted(set(spec.tune_seeds) | set(spec.final_seeds)):
        jobs.append(_job(spec, "teacher", f"seed_{seed}", out / "teachers" / f"seed_{seed}", NO_KD, {}, {seed: raw}))
    return jobs


def _job(
    spec: SweepSpec, kind: str, name: str, folder: Path, method: str, params: dict, configs: dict[int, dict]
) -> dict:
    return {
        "kind": kind,
        "name": name,
        "folder": str(folder),
        "method": method,
        "params": params,
        "configs": {str(seed): cfg for seed, cfg in configs.items()},
        "metric": spec.metric,
        "optuna": None,
        "mlflow": _mlflow(spec, folder),
        "read_test": False,
    }


def _mlflow(spec: SweepSpec, folder: Path) -> dict | None:
    return mlflow_settings(spec, folder.parents[1])


def mlflow_settings(spec: SweepSpec, out: Path) -> dict | None:
    """Where the runs are logged: ``logging.mlflow.tracking_uri`` or ``mlflow.db`` in the sweep folder ``out``."""
    settings = spec.logging.get("mlflow")
    if settings is None:
        return None
    settings = settings or {}
    uri = settings.get("tracking_uri") or f"sqlite:///{(out / 'mlflow.db').resolve()}"
    artifacts = (out / "mlartifacts").resolve().as_uri()
    return {"tracking_uri": uri, "experiment": settings.get("experiment", "mmdistill-sweep"), "artifacts": artifacts}


def run_configs(spec: SweepSpec, out: Path, method: str, setting: dict, seeds: list[int]) -> dict[int, dict]:
    """The run config of ``method`` with ``setting`` per seed: that seed's shared teacher, the sweep's cache."""
    trained = needs_teachers(spec)
    configs = {}
    for seed in seeds:
        raw = spec.config(method, setting)
        if trained and raw.get("teacher") is not None:
            raw["teacher"]["checkpoint"] = str(teacher_weights(out, seed))
        if raw["cache"].get("dir") is None:
            raw["cache"]["dir"] = str(out / "cache")
        configs[seed] = raw
    return configs


def trial_job(spec: SweepSpec, out: Path, method: str, setting: dict, number: int) -> dict:
    name = f"{method}-{number:03d}"
    configs = run_configs(spec, out, method, setting, spec.tune_seeds)
    return _job(spec, "trial", name, out / "trials" / name, method, setting, configs)


def drawn_settings(spec: SweepSpec, method: str) -> list[dict]:
    """The settings a grid or random search tries for ``method``: the whole grid (in order), or ``trials`` draws
    from a generator seeded by ``search.seed`` and the method's place in ``methods``."""
    if spec.kind == "grid":
        return spec.grid(method)
    rng = random.Random(spec.search_seed * 1000 + spec.methods.index(method))
    return [{k: _draw(rng, v) for k, v in spec.space[method].items()} for _ in range(spec.trials or 0)]


def _draw(rng: random.Random, values: Any) -> Any:
    if isinstance(values, list):
        return values[rng.randrange(len(values))]
    assert isinstance(values, Range)
    if values.log:
        x = math.exp(rng.uniform(math.log(values.low), math.log(values.high)))
    else:
        x = rng.uniform(values.low, values.high)
    return int(round(x)) if values.integer else x


def static_trials(spec: SweepSpec, out: Path) -> list[dict]:
    """The trials of a grid or random search, the methods interleaved (each method's first trial, then the
    second, ...) so that a sweep stopped early has tried every method."""
    per_method = {
        m: [trial_job(spec, out, m, s, i) for i, s in enumerate(drawn_settings(spec, m))] for m in spec.methods
    }
    longest = max(len(jobs) for jobs in per_method.values())
    return [jobs[i] for i in range(longest) for jobs in per_method.values() if i < len(jobs)]


def trial_records(out: Path) -> list[dict]:
    """Every trial's record in ``out/trials`` (the finished, pruned and failed ones), by name."""
    folder = out / "trials"
    records = [read_record(p) for p in sorted(folder.iterdir())] if folder.is_dir() else []
    return [r for r in records if r is not None]


def mean_val(record: dict) -> float:
    values = list(record.get("val", {}).values())
    return sum(values) / len(values) if values else math.nan


def best_trials(spec: SweepSpec, records: list[dict]) -> dict[str, dict]:
    """Per method, the finished trial with the best mean validation metric over the tune seeds (the first of equals)."""
    best: dict[str, dict] = {}
    for r in records:
        value = mean_val(r)
        if r["status"] != "done" or math.isnan(value):
            continue
        current = best.get(r["method"])
        if current is None or _better(value, mean_val(current), spec.higher_is_better):
            best[r["method"]] = r
    return best


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def final_wants(spec: SweepSpec, best: dict[str, dict], settled: set[str] | None = None) -> list[tuple]:
    """``(who, variant, method to run, setting)`` of every final run whose setting is known: variants ``tuned`` (the
    best trial's setting) and ``default`` (the method's own defaults), and the references ``nokd`` (``supervised``:
    tuned when it is one of the methods) and ``kd`` (likewise). A tuned setting is known once its method is
    ``settled`` (every trial of it ended; None: every method is); ``best``: per settled method, its best trial."""

    def known(method: str) -> bool:
        return settled is None or method in settled or method not in spec.methods

    wanted: list[tuple] = []
    for m in spec.methods:
        if known(m) and m in best:
            wanted.append((m, "tuned", m, best[m]["params"]))
        wanted.append((m, "default", m, {}))
    for ref, method in (("nokd", NO_KD), ("kd", KD)):
        if known(method):
            wanted.append((ref, "reference", method, best[method]["params"] if method in best else {}))
    return wanted


def final_jobs(
    spec: SweepSpec, out: Path, best: dict[str, dict], settled: set[str] | None = None
) -> tuple[list[dict], dict[tuple[str, str], str]]:
    """The final runs on the final seeds whose settings are known (:func:`final_wants`), and which job holds each
    (who, variant). Identical configurations run once."""
    jobs: dict[str, dict] = {}
    holder: dict[tuple[str, str], str] = {}
    for who, variant, method, setting in final_wants(spec, best, settled):
        key = json.dumps([method, setting], sort_keys=True)
        if key not in jobs:
            name = f"{method}-{'default' if not setting else 'tuned'}"
            configs = run_configs(spec, out, method, setting, spec.final_seeds)
            jobs[key] = {**_job(spec, "final", name, out / "final" / name, method, setting, configs), "read_test": True}
        holder[(who, variant)] = jobs[key]["name"]
    return list(jobs.values()), holder


def planned_finals(spec: SweepSpec, best: dict[str, dict], settled: set[str]) -> int:
    """How many final jobs the sweep runs: those of the ``settled`` methods as ``best`` decides, and one tuned job
    for every other method with a search space (none for a method whose trials all fail)."""
    expected = {m: {"params": {"(tuned)": m}} for m in spec.methods if m not in settled and spec.space.get(m)}
    wants = final_wants(spec, {**best, **expected})
    return len({json.dumps([method, setting], sort_keys=True) for _, _, method, setting in wants})


def unfinished(jobs: list[dict]) -> Iterator[dict]:
    for job in jobs:
        record = read_record(Path(job["folder"]))
        if record is None or record.get("status") not in FINISHED:
            yield job
