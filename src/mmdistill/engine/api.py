"""Python API: distil a teacher into a student, from modules or from a :class:`RunConfig`.

    from mmdistill.engine.api import distill
    result = distill(student, teacher, splits, method="kd", method_params={"temperature": 4}, out_dir="runs/kd")

``run_config`` is what ``mmdistill train`` calls: per seed it trains (or loads) the teacher,
the distilled student and, for comparison, the same student without distillation, then
writes ``metrics.json`` with the seed statistics and the paired difference.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import CacheConfig, MaskingConfig, RunConfig, TrainerConfig, check_resources, dump_config, validate
from ..data import DataSplits, build_splits
from ..data.item_dataset import ItemDataset, ItemSplits, as_splits
from ..errors import CheckpointError, ConfigError, MachineError
from ..io import write_json, write_text
from ..masking import Masker
from ..methods.base import Method
from ..models.multimodal import build_model, model_modalities
from ..registry import METHODS
from ..stats import paired_difference, summarize
from .checkpoint import load_tensors, load_weights, save_tensors
from .metrics import evaluate
from .teacher import cached_table, default_cache_dir, teacher_outputs
from . import runfolder
from .launch import launch, make_fabric, scoped_determinism
from .run_checks import check_cache_dir, check_resume
from .batches import eval_batches
from .trainer import DistillationModule, fit

if TYPE_CHECKING:
    from lightning_fabric import Fabric


@dataclass
class RunResult:
    test: dict[str, float]
    val: dict[str, float]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    test_checkpoint: str
    student: nn.Module
    train_seconds: float = 0.0
    train_steps: int = 0


def build_method(name: str, params: dict[str, Any] | None, masker: Masker) -> Method:
    cls = METHODS.get(name)
    p = validate(cls.Params, dict(params or {}), prefix="method.params.")
    return cls(p, masker)


def _check_pair(student: nn.Module, teacher: nn.Module | None, data: DataSplits | ItemSplits) -> None:
    specs = {s.name: s for s in data.train.specs()}
    for who, model in (("student", student), ("teacher", teacher)):
        if model is None:
            continue
        for m in model_modalities(model):
            if m not in specs:
                raise ConfigError(f"{who} reads modality {m!r}, which the dataset does not have; available: {', '.join(specs)}")
    if teacher is not None:
        sample = data.train.__getitems__(range(min(2, len(data.train))))
        with torch.no_grad():
            c_t, c_s = teacher.eval()(sample).shape[-1], student.eval()(sample).shape[-1]
        if c_t != c_s:
            raise ConfigError(f"teacher predicts {c_t} classes but the student predicts {c_s}; they must agree")
        if c_s != data.num_classes:
            raise ConfigError(f"models predict {c_s} classes but the dataset has {data.num_classes}")


def _teacher_mode(cache: CacheConfig, train) -> str:
    """"cache" or "online": online when the training data are random (augmentation: an example's input differs
    every epoch, so a cached output would belong to another input) or have no fingerprint to key a cache by.
    An explicit ``cache.enabled=True`` on such data is refused, saying why."""
    if not cache.enabled:
        return "online"
    random, keyless = getattr(train, "random", False), isinstance(train, ItemDataset) and not train.cacheable
    if not (random or keyless):
        return "cache"
    why = ("the training data are random (a transform or dataset.random=True): an example's input changes every "
           "epoch, so a cached teacher output would belong to another input" if random else
           "the training dataset has no fingerprint() to key a cache by (a string that changes when the data change)")
    if "enabled" in cache.model_fields_set:
        raise ConfigError(f"cache.enabled: cannot cache the teacher's outputs: {why}; set cache.enabled=false (the "
                          "teacher then runs online on each training batch, in eval mode, without gradients)")
    print(f"mmdistill: the teacher runs online on each training batch (no cache): {why}", file=sys.stderr)
    return "online"


@scoped_determinism
def distill(student: nn.Module, teacher: nn.Module | None, data: DataSplits | Any = None,
            out_dir: str | Path | None = None, method: str = "kd", method_params: dict | None = None,
            masking: MaskingConfig | None = None, trainer: TrainerConfig | None = None, cache: CacheConfig | None = None,
            seed: int = 0, resume: bool = False, quiet: bool = True, fabric: Fabric | None = None, desc: str = "train",
            *, train: Dataset | None = None, val: Dataset | None = None, test: Dataset | None = None) -> RunResult:
    """Train ``student`` with ``method`` (distilling from the frozen ``teacher`` if the method needs one).

    Data: ``data`` (a :class:`DataSplits`, or any object / dict with ``train``, ``val``, ``test``) or
    ``train=, val=, test=``: :class:`MultimodalDataset` columns (fast path) or any map-style torch Dataset of
    dict items (:mod:`mmdistill.data.item_dataset`; loaded per ``trainer.num_workers`` etc.). With random
    training data the teacher runs online on each augmented batch instead of from the cache.
    Writes checkpoints, ``metrics.csv``, TensorBoard logs and ``student.safetensors`` (the
    weights used for test) to ``out_dir``. Returns test and validation metrics.
    """
    if out_dir is None:
        raise ConfigError("distill: out_dir is required (the folder for checkpoints, metrics and the student)")
    data = as_splits(data, train, val, test)
    trainer = trainer or TrainerConfig()
    masking = masking or MaskingConfig()
    cache = cache or CacheConfig()
    out_dir = Path(out_dir)
    if fabric is None:
        fabric = start_fabric(trainer)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    masker = Masker(data.train.specs(), masking.strategy, masking.per_modality).fit(data.train.feature_mean())
    algo = build_method(method, method_params, masker)
    if algo.needs_teacher and teacher is None:
        raise ConfigError(f"method {method!r} needs a teacher; give teacher (a model or teacher.checkpoint)")
    teacher = teacher if algo.needs_teacher else None
    _check_pair(student, teacher, data)
    sample = data.train.__getitems__(range(min(8, len(data.train))))
    algo.setup(sample, student, teacher)
    module = DistillationModule(student, algo)

    source = None
    if teacher is not None:
        teacher = fabric.to_device(teacher.eval())
        for p in teacher.parameters():
            p.requires_grad_(False)
    train = algo.prepare(data.train, teacher, fabric.device)
    if teacher is not None:
        request = algo.teacher_request()
        learned_null = any(masker.strategy[m] == "learned" for v in request.views for m in masker.strategy if m not in v)
        online = _teacher_mode(cache, train) == "online"
        if cache.enabled and not online and learned_null:
            raise ConfigError("cache.enabled: the teacher's modality views use learned null tokens, which change during "
                              "training, so they cannot be cached; set cache.enabled=false or another masking strategy")
        if not online:
            cache_dir = Path(cache.dir) if cache.dir else default_cache_dir()
            if fabric.is_global_zero:
                cached_table(teacher, train, request, masker, cache_dir, trainer.batch_size * 4, fabric.device)
            fabric.barrier()
            table, _ = cached_table(teacher, train, request, masker, cache_dir, trainer.batch_size * 4, fabric.device, build=False)
            source = lambda batch: table.lookup(batch, fabric.device)  # noqa: E731
        else:
            source = lambda batch: teacher_outputs(teacher, batch, request, masker)  # noqa: E731

    if fabric.is_global_zero:  # after every check, before the first write: never into files mmdistill did not create
        runfolder.guard_model_folder(out_dir)
    fabric.barrier()
    fitted = fit(fabric, module, train, data.val, trainer, seed, out_dir, source, resume=resume, quiet=quiet, desc=desc)
    world, rank = fabric.world_size, fabric.global_rank
    bs = trainer.batch_size
    val = evaluate(student, eval_batches(data.val, bs, rank, world, trainer, fabric.device), data.num_classes,
                   fabric.device)
    test = evaluate(student, eval_batches(data.test, bs, rank, world, trainer, fabric.device), data.num_classes,
                    fabric.device)
    if fabric.is_global_zero:
        save_tensors(out_dir / "student.safetensors", student.state_dict(), {"checkpoint": fitted.test_checkpoint})
        write_json(out_dir / "result.json", {"test": test, "val": val, "best_epoch": fitted.best_epoch,
                                             "epochs_run": fitted.epochs_run, "stopped_early": fitted.stopped_early,
                                             "test_checkpoint": fitted.test_checkpoint, "seed": seed, "method": method})
    fabric.barrier()
    return RunResult(test, val, fitted.best_epoch, fitted.epochs_run, fitted.stopped_early, fitted.test_checkpoint, student,
                     fitted.train_seconds, fitted.train_steps)


def _load_finished(out_dir: Path, model: nn.Module) -> RunResult | None:
    """The result of a part of the run that already finished (for ``--resume``)."""
    import json

    result_path = out_dir / "result.json"
    if not (result_path.is_file() and (out_dir / "student.safetensors").is_file()):
        return None
    tensors, _ = load_tensors(out_dir / "student.safetensors")
    try:
        model.load_state_dict(tensors)
        r = json.loads(result_path.read_text())
        return RunResult(r["test"], r["val"], r["best_epoch"], r["epochs_run"], r["stopped_early"],
                         r["test_checkpoint"], model)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"--resume: the finished part in {out_dir} does not fit this run or is damaged "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); replace the run with "
                              f"--overwrite") from None


def start_fabric(trainer: TrainerConfig) -> Fabric:
    """``make_fabric`` + ``launch``, with set-up failures as one message (no GPU, a strategy that cannot start)."""
    if trainer.strategy == "ddp_spawn":
        raise ConfigError("trainer.strategy: 'ddp_spawn' cannot run mmdistill's training loop (Fabric needs a launch "
                          "function); use trainer.strategy=ddp, which starts the worker processes itself")
    check_resources(trainer)  # the Python API gets the same machine checks as a config file (devices, threads, GPU)
    try:
        fabric = make_fabric(trainer)
        launch(fabric)
    except (RuntimeError, ValueError, TypeError, ImportError) as err:  # MisconfigurationException is a ValueError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise MachineError(f"trainer.accelerator={trainer.accelerator}, trainer.devices={trainer.devices}, "
                           f"trainer.strategy={trainer.strategy}: this machine cannot start the run ({first}); "
                           f"use trainer.accelerator=cpu or settings this machine has") from None
    return fabric


def run_config(cfg: RunConfig, out: str | Path, seeds: list[int] | None = None, baseline: bool = True,
               resume: bool = False, overwrite: bool = False, quiet: bool = False) -> dict:
    """Everything ``mmdistill train`` does. Returns the content of ``out/metrics.json``.

    The output folder is claimed and locked through :mod:`.runfolder` (marker file, lock held for
    the whole run, foreign files never touched). A bad input found before any model is saved
    (config, data, checkpoint, a changed config on ``--resume``) leaves no output folder behind; a
    failure later (e.g. a non-finite loss, Ctrl-C) keeps the checkpoints written so far, to resume.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: give one of them (continue the run, or replace it)")
    seeds = list(seeds or [cfg.seed])
    protect = [cfg.teacher.checkpoint] if cfg.teacher is not None and cfg.teacher.checkpoint is not None else []
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
    data = build_splits(cfg.data.name, cfg.data.params, seed=cfg.data.split_seed)
    if uses_teacher and cfg.teacher is None:
        raise ConfigError(f"method {cfg.method.name!r} needs a teacher: add a 'teacher' section (model, and checkpoint or none to train one)")
    preflight(cfg, data)
    folder = None
    if fabric.is_global_zero:
        info = {"seeds": seeds, "baseline": baseline}
        folder = runfolder.claim(out, "train", "metrics.json", overwrite, resume, protect, info)
    try:
        if folder is not None:
            if folder.plan.action == "resume":
                check_resume(cfg, out, seeds, folder.plan.marker)  # again, under the lock
                folder.update_marker(seeds=sorted(set(seeds) | set(folder.plan.marker.get("seeds") or [])))
            if not (out / "config.yaml").is_file():  # never rewritten on resume
                write_text(out / "config.yaml", dump_config(cfg))
        fabric.barrier()
        runs = [_run_seed(cfg, data, out / f"seed_{seed}", seed, baseline, resume, quiet, fabric) for seed in seeds]
        metrics = summarize_runs(runs, cfg.method.name, cfg.trainer.test_checkpoint)
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
    """Find configuration errors before anything is trained or written: build the models, the masker and the
    method, load the teacher checkpoint, and run the method's set-up and one loss on a few examples."""
    from ..models.multimodal import check_model_size

    specs, n_cls = data.train.specs(), data.num_classes
    data.check_classes()
    for key, trainer in (("trainer", cfg.trainer), ("teacher.trainer", cfg.teacher.trainer if cfg.teacher else None)):
        if trainer is not None and trainer.monitor == "auroc" and n_cls != 2:
            raise ConfigError(f"{key}.monitor: 'auroc' is computed for two-class data only, and this dataset has {n_cls} "
                              "classes; use accuracy, f1_macro or loss")
    check_model_size("student.model", cfg.student.model, specs, n_cls)
    if cfg.teacher is not None:
        check_model_size("teacher.model", cfg.teacher.model, specs, n_cls)
    student = build_model(cfg.student.model, specs, n_cls, "student.model")
    teacher = build_model(cfg.teacher.model, specs, n_cls, "teacher.model") if cfg.teacher is not None else None
    if teacher is not None and cfg.teacher.checkpoint is not None:
        load_teacher_weights(teacher, cfg.teacher.checkpoint)
    masker = Masker(specs, cfg.masking.strategy, cfg.masking.per_modality).fit(data.train.feature_mean())
    algo = build_method(cfg.method.name, cfg.method.params, masker)
    teacher = teacher if algo.needs_teacher else None
    _check_pair(student, teacher, data)
    sample = data.train.__getitems__(range(min(8, len(data.train))))
    algo.setup(sample, student, teacher)
    t_out = teacher_outputs(teacher.eval(), sample, algo.teacher_request(), masker) if teacher is not None else None
    algo.eval()  # a check, not a training step (e.g. no MSD meta step, which needs prepare()'s held-out split)
    with torch.no_grad():
        algo.losses(sample, algo.forward_student(student.eval(), sample), t_out)


def load_teacher_weights(teacher: nn.Module, path: Path) -> None:
    """``teacher.checkpoint`` into the teacher model; a mismatch names the keys."""
    weights = load_weights(path)
    try:
        result = teacher.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"teacher.checkpoint: {path} does not fit teacher.model: {str(err).splitlines()[-1].strip()}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"teacher.checkpoint: {path} does not fit teacher.model: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}"
        )


def _run_seed(cfg: RunConfig, data: DataSplits, seed_dir: Path, seed: int, baseline: bool, resume: bool, quiet: bool,
              fabric: Fabric) -> dict:
    """One seed: the teacher (trained, loaded, or resumed), the distilled student and the no-KD student."""
    specs, n_cls = data.train.specs(), data.num_classes
    row: dict[str, Any] = {"seed": seed}
    teacher = None
    if METHODS.get(cfg.method.name).needs_teacher:
        fabric.seed_everything(seed, verbose=False)
        teacher = build_model(cfg.teacher.model, specs, n_cls)
        if cfg.teacher.checkpoint is not None:
            load_teacher_weights(teacher, cfg.teacher.checkpoint)
            row["teacher"] = evaluate(teacher, eval_batches(data.test, 256), n_cls)
        else:
            done = _load_finished(seed_dir / "teacher", teacher) if resume else None
            if done is None:
                done = distill(teacher, None, data, seed_dir / "teacher", "supervised", trainer=cfg.teacher.trainer or cfg.trainer,
                               seed=seed, resume=resume, quiet=quiet, fabric=fabric, desc=f"seed {seed} teacher")
            row["teacher"] = done.test
    parts = [("student", cfg.method.name)]
    if baseline and cfg.method.name != "supervised":
        parts.append(("nokd", "supervised"))
    for part, method in parts:
        fabric.seed_everything(seed, verbose=False)
        student = build_model(cfg.student.model, specs, n_cls)
        done = _load_finished(seed_dir / part, student) if resume else None
        if done is None:
            done = distill(student, teacher, data, seed_dir / part, method, cfg.method.params if part == "student" else None,
                           cfg.masking, cfg.trainer, cfg.cache, seed, resume, quiet, fabric, desc=f"seed {seed} {part}")
        row[part] = done.test
        row[f"{part}_best_epoch"] = done.best_epoch
    return row


def summarize_runs(runs: list[dict], method: str, test_checkpoint: str) -> dict:
    summary: dict[str, dict] = {}
    for part in ("teacher", "student", "nokd"):
        if all(part in r for r in runs):
            for metric in runs[0][part]:
                summary[f"{part}.{metric}"] = summarize([r[part][metric] for r in runs])
    paired = {}
    if all("nokd" in r for r in runs):
        for metric in runs[0]["student"]:
            paired[f"student-nokd.{metric}"] = paired_difference([r["student"][metric] for r in runs], [r["nokd"][metric] for r in runs])
    return {
        "method": method, "seeds": [r["seed"] for r in runs], "test_checkpoint": test_checkpoint,
        "reporting": f"test metrics of the {'best-validation' if test_checkpoint == 'best' else 'last'}-epoch weights",
        "runs": runs, "summary": summary, "paired": paired,
    }


def summary_markdown(metrics: dict) -> str:
    from ..stats import BOUNDED, few_seeds_caution, format_summary

    lines = [f"# {metrics['method']}: test metrics over seeds {metrics['seeds']}", "",
             f"Reporting: {metrics['reporting']}. Mean ± std [95% t-CI], in points; an interval past [0, 100] "
             "is shown clipped and marked (clipped).", ""]
    caution = few_seeds_caution(len(metrics["seeds"]))
    if caution:
        lines += [caution, ""]
    lines += ["| model | accuracy | macro-F1 |", "|---|---|---|"]
    for part in ("teacher", "nokd", "student"):
        if f"{part}.accuracy" in metrics["summary"]:
            s = metrics["summary"]
            lines.append(f"| {part} | {format_summary(s[f'{part}.accuracy'], bounds=BOUNDED)} | "
                         f"{format_summary(s[f'{part}.f1_macro'], bounds=BOUNDED)} |")
    if metrics["paired"]:
        p = metrics["paired"]
        lines += ["", f"Paired difference student - nokd (same seeds): accuracy {format_summary(p['student-nokd.accuracy'])}, "
                  f"macro-F1 {format_summary(p['student-nokd.f1_macro'])}."]
    return "\n".join(lines) + "\n"
