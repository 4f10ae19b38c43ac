"""The multi-seed protocol: what ``mmdistill train`` runs, and its Python entry point.

    from mmdistill.engine.protocol import run_config
    metrics = run_config(load_config("run.yaml"), out="runs/kd", seeds=[0, 1, 2])

Per seed it trains (or loads) the teacher, the distilled student and, for comparison, the same student
without distillation (each one run of :mod:`~mmdistill.engine.assembly`), then writes ``metrics.json`` with the
seed statistics and the paired difference student - no-KD, and ``summary.md``. The folder it writes is the one
every other command reads (:mod:`mmdistill.evaluation.runs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from ..config import RunConfig, dump_config
from ..data import DataSplits
from ..data.contracts.item_dataset import load_data
from ..errors import CheckpointError, ConfigError
from ..io import write_json, write_text
from ..masking import missing_fractions
from ..registry import METHODS
from ..stats import paired_difference, summarize
from ..tasks import DEFAULT_TASK, PERCENT, UNITS_KEY, get_task, stored_in_percent
from .assembly import (
    RunResult,
    build_run,
    build_run_model,
    build_run_teacher,
    part_spec,
    run_trainer,
    train_run,
)
from .metrics import evaluate
from .parts import named_teachers, run_task, start_fabric
from .run_checks import check_cache_dir, check_resume
from .system import run_outputs, runfolder  # noqa: F401  (declares what a train run writes to the run-folder code)
from .system.checkpoint import load_tensors
from .system.launch import SingleCPUProcess
from .teacher import TeacherGroup, default_cache_dir
from .trainer import eval_batches

if TYPE_CHECKING:
    from lightning_fabric import Fabric


def _load_finished(out_dir: Path, model: nn.Module, task=None) -> RunResult | None:
    """The result of a part of the run that already finished (for ``--resume``); ``task``'s percent metrics in
    percent, also from a ``result.json`` that an older mmdistill wrote in fractions."""
    import json

    result_path = out_dir / "result.json"
    if not (result_path.is_file() and (out_dir / "student.safetensors").is_file()):
        return None
    tensors, _ = load_tensors(out_dir / "student.safetensors")
    try:
        model.load_state_dict(tensors)
        r = json.loads(result_path.read_text())
        if not stored_in_percent(r):
            r["test"], r["val"] = (get_task(task).for_people(r[k]) for k in ("test", "val"))
        return RunResult(
            r["test"], r["val"], r["best_epoch"], r["epochs_run"], r["stopped_early"], r["test_checkpoint"], model
        )
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"--resume: the finished part in {out_dir} does not fit this run or is damaged "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); replace the run with "
            f"--overwrite"
        ) from None


def run_config(
    cfg: RunConfig,
    out: str | Path,
    seeds: list[int] | None = None,
    baseline: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    evaluate_test: bool = True,
) -> dict:
    """Everything ``mmdistill train`` does. Returns the content of ``out/metrics.json``.

    ``evaluate_test=False``: the test split is never read (no test metrics; a sweep's tuning trials, which are
    chosen on validation only).

    The output folder is claimed and locked through :mod:`.runfolder` (marker file, lock held for
    the whole run, foreign files never touched). A bad input found before any model is saved
    (config, data, checkpoint, a changed config on ``--resume``) leaves no output folder behind; a
    failure later (e.g. a non-finite loss, Ctrl-C) keeps the checkpoints written so far, to resume.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: give one of them (continue the run, or replace it)")
    seeds = list(seeds or [cfg.seed])
    protect = [t.checkpoint for t in cfg.teacher_sections().values() if t.checkpoint is not None]
    uses_teacher = METHODS.get(cfg.method.name).needs_teacher
    if runfolder.launching_process():  # before anything starts: refuse a busy, foreign, finished or changed run at once
        plan = runfolder.check(out, "train", "metrics.json", overwrite, resume, protect)
        if plan.action == "resume":
            check_resume(cfg, plan.path, seeds, plan.marker)
        if uses_teacher and cfg.cache.enabled:
            check_cache_dir(Path(cfg.cache.dir) if cfg.cache.dir else default_cache_dir())
    out = runfolder.resolve_out(out)
    fabric = start_fabric(cfg.trainer)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    data = load_data(cfg.data)
    run_task(cfg.task, data)  # the data hold the config's task's targets (and take its ignore_index)
    if uses_teacher and not cfg.teacher_sections():
        raise ConfigError(
            f"method {cfg.method.name!r} needs a teacher: add a 'teacher' section (model, and checkpoint or none "
            "to train one)"
        )
    preflight(cfg, data)
    folder = None
    if fabric.is_global_zero:
        info = {"seeds": seeds, "baseline": baseline}
        folder = runfolder.claim(out, "train", "metrics.json", overwrite, resume, protect, info)
    try:
        if folder is not None:
            marker = folder.plan.marker  # a folder to resume holds its marker (runfolder.check)
            if folder.plan.action == "resume" and marker is not None:
                check_resume(cfg, out, seeds, marker)  # again, under the lock
                folder.update_marker(seeds=sorted(set(seeds) | set(marker.get("seeds") or [])))
            if not (out / "config.yaml").is_file():  # never rewritten on resume
                write_text(out / "config.yaml", dump_config(cfg))
        fabric.barrier()
        options = {"fabric": fabric, "resume": resume, "quiet": quiet, "evaluate_test": evaluate_test}
        runs = [_run_seed(cfg, data, out / f"seed_{seed}", seed, baseline, **options) for seed in seeds]
        metrics = summarize_runs(runs, cfg.method.name, cfg.trainer.test_checkpoint, cfg.task.name)
        if not evaluate_test:
            metrics["reporting"] = NO_TEST
        if missing_fractions(data.train):  # partly paired training data (measured once, when the run was assembled)
            metrics["train_missing"] = missing_fractions(data.train)
        if folder is not None:
            write_json(out / "metrics.json", metrics)
            write_text(out / "summary.md", summary_markdown(metrics))
    except BaseException:
        if folder is not None and not any(out.rglob("*.safetensors")):
            folder.discard()  # nothing worth keeping: remove what this run wrote, and its folder if it made it
        raise
    finally:
        if folder is not None:
            folder.release()
    return metrics


def preflight(cfg: RunConfig, data: DataSplits) -> None:
    """Find configuration errors before anything is trained or written: the trainer settings, the models' sizes and
    outputs, the teacher checkpoint, and the run of the distilled student assembled on the CPU (:func:`build_run`:
    masker, method, the models against the data and the task, the method's set-up) with one loss on a few examples."""
    from ..models.custom import check_outputs
    from ..models.multimodal import check_model_size

    task = run_task(cfg.task, data)
    specs, n_cls = data.train.specs(), data.num_classes
    data.check_classes()
    run_trainer(cfg.trainer, task, n_cls, "trainer")
    for key, section in cfg.teacher_sections().items():
        if section.trainer is not None:
            run_trainer(section.trainer, task, n_cls, f"{key}.trainer")
    check_model_size("student.model", cfg.student.model, specs, n_cls)
    for key, section in cfg.teacher_sections().items():
        check_model_size(f"{key}.model", section.model, specs, n_cls)
    teacher = build_run_teacher(cfg, data)
    spec = part_spec(cfg, "student", data, cfg.seed, Path("."), teacher)
    sample = data.train.__getitems__(range(min(8, len(data.train))))
    for key, model in [("student", spec.student), *named_teachers(teacher)]:
        check_outputs(model, sample, n_cls, f"{key}.model")
    build_run(spec, cast("Fabric", SingleCPUProcess())).check_one_loss()  # a stand-in for a Fabric (start_fabric)


def _run_seed(cfg: RunConfig, data: DataSplits, seed_dir: Path, seed: int, baseline: bool, **options) -> dict:
    """One seed: the teacher (trained, loaded, or resumed), the distilled student and the no-KD student.
    ``options``: ``fabric``, ``resume``, ``quiet``, ``evaluate_test`` (:func:`~mmdistill.engine.assembly.train_run`)."""
    fabric, resume = options["fabric"], options["resume"]
    row: dict[str, Any] = {"seed": seed}
    teacher = None
    if METHODS.get(cfg.method.name).needs_teacher:
        teachers = {
            key: _seed_teacher(cfg, data, key, seed_dir, seed, row, **options) for key in cfg.teacher_sections()
        }
        teacher = teachers["teacher"] if cfg.teachers is None else TeacherGroup({k[9:]: t for k, t in teachers.items()})
    parts = ["student"]
    if baseline and cfg.method.name != "supervised":
        parts.append("nokd")
    for part in parts:
        fabric.seed_everything(seed, verbose=False)
        spec = part_spec(cfg, part, data, seed, seed_dir / part, teacher)
        done = _load_finished(seed_dir / part, spec.student, cfg.task) if resume else None
        if done is None:
            done = train_run(spec, desc=f"seed {seed} {part}", **options)
        row[part] = done.test
        row[f"{part}_best_epoch"] = done.best_epoch
        row[f"{part}_test_checkpoint"] = done.test_checkpoint
    return row


NO_TEST = "no test metrics: the test split was not evaluated (a sweep's tuning trial, chosen on validation only)"


def _seed_teacher(cfg: RunConfig, data: DataSplits, key: str, seed_dir: Path, seed: int, row: dict, **options):
    """One teacher of a seed (``key``: ``teacher`` or ``teachers.<name>``): loaded from its checkpoint, or trained
    (or resumed) in ``seed_dir/teacher`` (``teacher_<name>`` for one of several); its test metrics go into ``row``
    under that folder's name."""
    part = key.replace("teachers.", "teacher_", 1)
    options["fabric"].seed_everything(seed, verbose=False)
    if cfg.teacher_sections()[key].checkpoint is not None:
        teacher = build_run_model(cfg, key, data)
        row[part] = {}
        if options["evaluate_test"]:
            task = get_task(cfg.task)
            row[part] = task.for_people(evaluate(teacher, eval_batches(data.test, 256), data.num_classes, task=task))
        return teacher
    spec = part_spec(cfg, key, data, seed, seed_dir / part)
    done = _load_finished(seed_dir / part, spec.student, cfg.task) if options["resume"] else None
    row[part] = (done or train_run(spec, desc=f"seed {seed} {part}", **options)).test
    return spec.student


def reporting(runs: list[dict], test_checkpoint: str) -> str:
    """Which weights the test metrics come from, naming each part whose trainer fell back to other weights (no
    epoch with a finite monitored metric: the last weights)."""
    said = f"test metrics of the {'best-validation' if test_checkpoint == 'best' else 'last'}-epoch weights"
    other = [
        f"seed {r['seed']} {key.removesuffix('_test_checkpoint')}: {used}"
        for r in runs
        for key, used in r.items()
        if key.endswith("_test_checkpoint") and used != test_checkpoint
    ]
    return said + (f", except {'; '.join(other)}" if other else "")


def summarize_runs(runs: list[dict], method: str, test_checkpoint: str, task: str = DEFAULT_TASK) -> dict:
    summary: dict[str, dict] = {}
    several = [k for k, v in runs[0].items() if k.startswith("teacher_") and isinstance(v, dict)]  # teachers: rows
    for part in ("teacher", *several, "student", "nokd"):
        if all(part in r for r in runs):
            for metric in runs[0][part]:
                summary[f"{part}.{metric}"] = summarize([r[part][metric] for r in runs])
    paired = {}
    if all("nokd" in r for r in runs):
        for metric in runs[0]["student"]:
            paired[f"student-nokd.{metric}"] = paired_difference(
                [r["student"][metric] for r in runs], [r["nokd"][metric] for r in runs]
            )
    return {
        "method": method,
        "task": task,
        UNITS_KEY: PERCENT,  # the task's percent metrics in percent (summary_columns reads older files too)
        "seeds": [r["seed"] for r in runs],
        "test_checkpoint": test_checkpoint,
        "reporting": reporting(runs, test_checkpoint),
        "runs": runs,
        "summary": summary,
        "paired": paired,
    }


def summary_markdown(metrics: dict) -> str:
    """summary.md: the task's summary columns (``Task.summary_columns``) of each part over the seeds, and the
    paired difference student - no-KD."""
    from ..stats import few_seeds_caution, format_summary

    task = get_task(metrics.get("task", DEFAULT_TASK))
    columns = summary_columns(task, metrics)
    units = task.units_note()
    lines = [
        f"# {metrics['method']}: test metrics over seeds {metrics['seeds']}",
        "",
        f"Reporting: {metrics['reporting']}. Mean ± std [95% t-CI], {units}.",
        "",
    ]
    caution = few_seeds_caution(len(metrics["seeds"]))
    if caution:
        lines += [caution, ""]
    if metrics.get("train_missing"):
        shares = ", ".join(f"modality {m} is missing in {100 * f:.1f}%" for m, f in metrics["train_missing"].items())
        lines += [
            f"Partly paired data: {shares} of the training rows; the distillation terms use the rows that hold the "
            "teacher's modalities, the student's own loss every row.",
            "",
        ]
    lines += ["| model | " + " | ".join(c[1] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    s = metrics["summary"]
    several = sorted({k.split(".")[0] for k in s if k.startswith("teacher_")})  # one row per teacher of several
    for part in ("teacher", *several, "nokd", "student"):
        if f"{part}.{columns[0][0]}" in s:
            cells = [
                format_summary(s[f"{part}.{key}"], scale, digits, bounds) for key, _, scale, digits, bounds in columns
            ]
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    if metrics["paired"]:
        p = metrics["paired"]
        diffs = [
            f"{title} {format_summary(p[f'student-nokd.{key}'], scale, digits)}"
            for key, title, scale, digits, _ in columns
        ]
        lines += ["", f"Paired difference student - nokd (same seeds): {', '.join(diffs)}."]
    return "\n".join(lines) + "\n"


def summary_columns(task, metrics: dict) -> list[tuple[str, str, float, int, tuple[float, float] | None]]:
    """(key, title, scale, digits, bounds in stored units) of ``task``'s summary columns for ``metrics`` (a
    metrics.json: percent metrics stored in percent, or as fractions by an older mmdistill: then scaled x 100)."""
    from ..tasks import stored_in_percent

    columns = []
    for key, spec in task.summary_columns():
        scale = 100.0 if spec.percent and not stored_in_percent(metrics) else 1.0
        bounds = None if spec.bounds is None else (spec.bounds[0] / scale, spec.bounds[1] / scale)
        columns.append((key, spec.title, scale, spec.digits, bounds))
    return columns
