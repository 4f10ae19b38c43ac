"""The training loop: ours and short; devices, DDP and precision come from Lightning Fabric.

One step (:meth:`_Training.train_step`): batch (:class:`TrainingBatches`) -> teacher outputs (cache
lookup or a forward pass) -> ``method.before_step`` (state updates, e.g. MSD's meta step) -> student +
``method.losses`` -> :func:`~mmdistill.methods.base.weighted_total` -> backward -> clip -> optimizer step
-> ``method.after_step(step, epoch)`` (CRD's bank, DKD's warm-up count).
Per epoch (:meth:`_Training.end_epoch`): scheduler step, validate, keep the best weights (by
``trainer.monitor``), write a resumable checkpoint (every ``trainer.checkpoint_every`` epochs and after the final
one), maybe stop early.

Resume is bitwise on CPU: the checkpoint holds weights, optimizer, scheduler, the global RNG state, the
method's own generators (seeded from the run's seed: a method never draws from the global RNG) and the
step count, and the shuffling order is a pure function of (seed, epoch) via ``DistributedSampler``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, cast

import torch
from torch import Tensor, nn

from ..batch import INDEX, Batch, batch_size, inputs_checked_finite
from ..config import TrainerConfig
from ..data.contracts.split import Split
from ..errors import ConfigError, DataError, TrainingError
from ..io import sweep_stale_temp_files
from ..methods.base import LossTerm, Method, TeacherOutputs, term_value, weighted_total
from ..tasks import Task
from .batches import EpochBatches, eval_batches, train_batches  # noqa: F401 (re-exported)
from .epoch_listeners import EpochReport, report_epoch
from .metrics import evaluate
from .system.checkpoint import load_tensors, load_training_state, save_tensors, save_training_state
from .system.logging import RunLogger
from .teacher import check_finite_outputs

if TYPE_CHECKING:
    from lightning_fabric import Fabric

TeacherSource = Callable[[Batch], TeacherOutputs]


class DistillationModule(nn.Module):
    """The trainable part of a run: the student, the method (with its own learnable parts) and, when it learns
    alongside (``teacher.trainable``), the teacher: then its weights are in the optimizer and in every checkpoint."""

    def __init__(self, student: nn.Module, method: Method, learning_teacher: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        self.method = method
        if learning_teacher is not None:
            self.teacher = learning_teacher

    def forward(self, batch: Batch, teacher_out: TeacherOutputs | None) -> tuple[Tensor, Mapping[str, LossTerm]]:
        out = self.method.forward_student(self.student, batch)
        return out.logits, self.method.losses(batch, out, teacher_out)


def make_optimizer(params, cfg: TrainerConfig) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainerConfig):
    s = cfg.scheduler
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    return None


class TrainingBatches:
    """The training batches of this process, epoch by epoch (:func:`.batches.train_batches`: column data gathered by
    index, any other Dataset through seeded DataLoader workers), on the device.

    Not ``fabric.setup_dataloaders``: its loader calls ``sampler.set_epoch(<iterations so far>)``, which restarts at
    0 on resume; our epoch number keeps the shuffle a pure function of (seed, epoch).
    """

    def __init__(
        self,
        dataset,
        cfg: TrainerConfig,
        seed: int,
        rank: int,
        world: int,
        device: torch.device,
        task: Task | None = None,
    ) -> None:
        self.loader = train_batches(dataset, cfg, seed, rank, world, device, task)  # column data's labels checked here

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of epoch ``epoch`` (from 1), on the device."""
        self.loader.set_epoch(epoch)
        # A DataLoader drew one int64 from the global RNG per epoch (its base seed); draw it too, so that dropout and
        # every other global-RNG draw see the same stream as before (reproductions and old checkpoints unchanged).
        torch.empty((), dtype=torch.int64).random_()
        return iter(self.loader)


class EpochMeans:
    """The ``train/*`` values of an epoch: the total and each term's :func:`term_value`, example-weighted means.

    Detached per-step values are kept on the device and summed once at the end of the epoch (no sync per step), in
    one buffer of a row per step that doubles when full: small tensors kept step after step between the step's large
    temporaries would pin the allocator's heap, and the process's peak memory would grow with the steps.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.rows: Tensor | None = None  # row i: step i's total, then each term
        self.counts: list[int] = []

    @property
    def steps(self) -> int:
        return len(self.counts)

    def add(self, total: Tensor, terms: dict[str, Tensor], examples: int) -> None:
        """One step's total and term values (detached scalars) over ``examples`` examples."""
        self.names = ["loss", *terms]
        row = torch.stack([total, *terms.values()])
        if self.rows is None or self.steps == len(self.rows):
            grown = row.new_empty((max(2 * self.steps, 64), len(row)))
            if self.rows is not None:
                grown[: self.steps] = self.rows
            self.rows = grown
        self.rows[self.steps] = row
        self.counts.append(examples)

    def result(self) -> dict[str, float]:
        if not self.counts or self.rows is None:
            return {}
        per_step = self.rows[: self.steps].float()
        counts = torch.tensor(self.counts, dtype=torch.float32, device=per_step.device)
        sums = (per_step * counts[:, None]).sum(0)
        return dict(zip(self.names, (sums / max(sum(self.counts), 1)).tolist()))


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_value: float | None  # None when no epoch had a finite monitored metric
    stopped_early: bool
    test_checkpoint: str
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0  # time spent in training steps of this process's epochs (no validation, no I/O)
    train_steps: int = 0


METHOD_SEED_OFFSET = 0x4D455448  # the method's random stream starts apart from the global one of the same seed


def method_seed(seed: int) -> int:
    """The seed of the method's own generators (:meth:`~mmdistill.methods.base.Method.generator`) in a run."""
    return (seed + METHOD_SEED_OFFSET) % 2**63


def _better(value: float, best: float | None, higher_is_better: bool, min_delta: float) -> bool:
    """Whether ``value`` of the monitored metric improves on ``best`` by more than ``min_delta``; a NaN (e.g. the
    Pearson r of a constant prediction) never improves, not even on no best at all, and any number improves on a
    NaN or on no best."""
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


def data_fingerprint(split) -> str | None:
    """A string that changes when a split's data change: the dataset's own ``fingerprint()`` (column data: a sha256
    of every value), else a sha256 of its length and of its first, middle and last items; None for items drawn at
    random (nothing stable to compare)."""
    if getattr(split, "random", False):
        return None
    if getattr(split, "cacheable", True):
        try:
            return split.fingerprint()
        except (AttributeError, DataError):
            pass
    read = getattr(split, "__getitems__", None)
    if read is None:
        return None
    n = len(split)
    h = hashlib.sha256(f"{type(split).__qualname__}|{n}|".encode())
    for key, value in sorted(read(sorted({0, n // 2, n - 1})).items() if n else ()):
        t = value.detach().cpu().contiguous() if isinstance(value, Tensor) else torch.as_tensor(value)
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "items:" + h.hexdigest()


def check_same_data(saved: dict, now: dict, checkpoint: Path) -> None:
    """Refuse a resume whose training or validation data differ from those the checkpoint was trained on."""
    for split, old in saved.items():
        new = now.get(split)
        if old is not None and new is not None and old != new:
            raise DataError(
                f"--resume: the {split} data differ from those the run trained on until {checkpoint} (fingerprint "
                f"{old[:16]}... then, {new[:16]}... now): the data files or the dataset factory's code changed, and "
                "resuming would train on two datasets; start a new run (another --out, or --overwrite)"
            )


class LoopState(TypedDict):
    """Where the training loop stands; saved in ``last.safetensors`` and read back on resume."""

    epoch: int
    step: int
    best_value: float | None
    best_epoch: int
    bad_epochs: int
    stopped_early: bool


@dataclass
class StepFunctions:
    """What one training step calls: Fabric's wrappers, or plain PyTorch where they would do nothing."""

    forward: nn.Module  # the module, or Fabric's wrapper of it
    backward: Callable[[Tensor], None]
    clip: Callable[[float], object]
    optimizer_step: Callable[[], object]
    autocast: Callable


def _plain_pytorch_step(fabric: Fabric, cfg: TrainerConfig) -> bool:
    return fabric.world_size == 1 and fabric.device.type == "cpu" and cfg.precision == "32-true"


def _step_functions(
    fabric: Fabric, module: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainerConfig
) -> StepFunctions:
    """One process on CPU in full precision: call the module, ``backward`` and ``step`` directly.

    Fabric's module wrapper, backward and optimizer step then only convert float32 to float32
    and forward the call (about 0.1-0.3 ms a step on a small MLP); DDP, GPUs and mixed or
    double precision go through Fabric as before. Both paths give the same numbers.
    """
    if _plain_pytorch_step(fabric, cfg):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        return StepFunctions(
            forward=module,
            backward=Tensor.backward,
            optimizer_step=optimizer.step,
            autocast=contextlib.nullcontext,
            clip=lambda max_norm: torch.nn.utils.clip_grad_norm_(
                params, max_norm=max_norm, norm_type=2.0, error_if_nonfinite=True
            ),
        )
    # After loading: Fabric's optimizer wrapper copies the optimizer's attributes at setup time.
    module_f, optimizer_f = fabric.setup(module, optimizer)
    return StepFunctions(
        forward=module_f,
        backward=fabric.backward,
        optimizer_step=optimizer_f.step,
        autocast=fabric.autocast,
        clip=lambda max_norm: fabric.clip_gradients(module_f, optimizer_f, max_norm=max_norm),
    )


def _not_finite(
    losses: dict[str, LossTerm],
    weights: dict[str, float],
    total: Tensor,
    teacher_out: TeacherOutputs | None,
    batch: Batch,
    split: str,
    epoch: int,
    step: int,
    last_path: Path,
) -> Exception:
    """The error for a non-finite total loss: names the teacher if its outputs are the cause, else every term."""
    if teacher_out is not None:
        try:
            check_finite_outputs(teacher_out, split, batch[INDEX])
        except TrainingError as err:
            return TrainingError(f"epoch {epoch}, step {step}: {err}")
    values = {k: term_value(v).detach() for k, v in losses.items()}
    terms = ", ".join(f"{k}={float(v):.4g} (weight {weights.get(k, 1.0):.4g})" for k, v in values.items())
    bad = [k for k, v in values.items() if not torch.isfinite(v)]
    what = (
        f"loss term {', '.join(map(repr, bad))} is not finite"
        if bad
        else f"the weighted sum of the loss terms is not finite ({float(total.detach()):.4g}) although every term is"
    )
    return TrainingError(
        f"epoch {epoch}, step {step}: {what}; terms: {terms or 'none'}; "
        f"the last good checkpoint is {last_path if last_path.is_file() else 'none (failed in the first epoch)'}"
    )


_TRACED: list[bool] = []


def _trace_first_step() -> None:
    """With ``MMDISTILL_TRACE_STARTUP=1``: print the Unix time of the process's first training step, once
    (``benchmarks/bench_startup.py`` subtracts its launch time)."""
    if not _TRACED and os.environ.get("MMDISTILL_TRACE_STARTUP") == "1":
        _TRACED.append(True)
        print(f"mmdistill: first training step at unix time {time.time():.3f}", file=sys.stderr, flush=True)


def fit(
    fabric: Fabric,
    module: DistillationModule,
    train: Split,
    val: Split,
    cfg: TrainerConfig,
    seed: int,
    out_dir: Path,
    teacher_source: TeacherSource | None = None,
    resume: bool = False,
    quiet: bool = False,
    desc: str = "train",
) -> FitResult:
    """Train ``module`` on ``train``; select by ``val``; leave the test-time weights loaded in ``module``.

    Writes ``out_dir/checkpoints/{last,best}.safetensors``, ``metrics.csv`` and TensorBoard logs (rank 0).
    """
    run = _Training(fabric, module, train, val, cfg, seed, out_dir, teacher_source, quiet, desc)
    run.start(resume)
    for epoch in range(run.state["epoch"] + 1, cfg.epochs + 1):
        if run.state["stopped_early"]:
            break
        means, steps, seconds = run.train_epoch(epoch)
        run.end_epoch(epoch, means, steps, seconds)
    run.logger.close()
    return run.finish()


class _Training:
    """The state of one :func:`fit` call, and its parts: one step, one epoch, the end of an epoch, the result.

    The order within a step: teacher outputs -> ``method.before_step`` -> forward + ``method.losses`` ->
    :func:`weighted_total` -> backward -> gradient clipping -> optimizer step -> ``method.after_step``. At the end
    of an epoch:
    scheduler step, validation, best weights (``best.safetensors``), early stopping, ``last.safetensors`` (every
    ``trainer.checkpoint_every`` epochs and after the final one).
    """

    def __init__(
        self,
        fabric: Fabric,
        module: DistillationModule,
        train: Split,
        val: Split,
        cfg: TrainerConfig,
        seed: int,
        out_dir: Path,
        teacher_source: TeacherSource | None,
        quiet: bool,
        desc: str,
    ) -> None:
        world, rank = fabric.world_size, fabric.global_rank
        if cfg.batch_size % world:
            raise ConfigError(
                f"trainer.batch_size: {cfg.batch_size} must be divisible by the number of processes ({world})"
            )
        self.fabric, self.module, self.train, self.val, self.cfg = fabric, module, train, val, cfg
        self.teacher_source = teacher_source
        self.task = module.method.task
        self.task.check_monitor(cfg.monitor)
        self.batches = TrainingBatches(train, cfg, seed, rank, world, fabric.device, self.task)
        self.optimizer = make_optimizer(module.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.weights = module.method.loss_weights()
        self.out_dir = out_dir
        ckpt_dir = out_dir / "checkpoints"
        self.last_path, self.best_path = ckpt_dir / "last.safetensors", ckpt_dir / "best.safetensors"
        self.logger = RunLogger(out_dir, cfg.epochs, quiet=quiet, enabled=fabric.is_global_zero, desc=desc)
        if fabric.is_global_zero:  # partial files of a killed run's atomic writes (ours: io.sweep_stale_temp_files)
            for folder in (out_dir, ckpt_dir):
                sweep_stale_temp_files(folder)
        self.state: LoopState = {
            "epoch": 0,
            "step": 0,
            "best_value": None,
            "best_epoch": 0,
            "bad_epochs": 0,
            "stopped_early": False,
        }
        module.method.seed_generators(method_seed(seed))
        self.data_fingerprints = {"train": data_fingerprint(train), "val": data_fingerprint(val)}
        self.history: list[dict] = []
        self.steps = 0
        self.train_seconds = 0.0

    def start(self, resume: bool) -> None:
        """Load ``last.safetensors`` when resuming (weights, optimizer, scheduler, RNG, loop state), then wrap."""
        if resume and self.last_path.is_file():
            state, generators = load_training_state(self.last_path, self.module, self.optimizer, self.scheduler)
            check_same_data(state.pop("data", {}), self.data_fingerprints, self.last_path)
            self.state = cast(LoopState, {"step": 0, **state})  # as saved by end_epoch
            self.module.method.load_generator_states(generators)
        if resume:  # rows past the checkpoint (all of them without one) came from a run killed before saving them
            self.logger.resume_at(self.state["epoch"])
        self.step_fns = _step_functions(self.fabric, self.module, self.optimizer, self.cfg)

    def train_step(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimizer step on ``batch``; returns the total and each term's value, detached before the step."""
        fns, method = self.step_fns, self.module.method
        teacher_out = self.teacher_source(batch) if self.teacher_source is not None else None
        with fns.autocast(), inputs_checked_finite():
            method.before_step(self.module.student, batch, teacher_out)
            _, losses = fns.forward(batch, teacher_out)
        total = weighted_total(losses, self.weights)
        if not torch.isfinite(total):
            raise _not_finite(
                losses, self.weights, total, teacher_out, batch, self.train.name, epoch, self.steps, self.last_path
            )
        values = {k: term_value(v).detach() for k, v in losses.items()}  # before the step: a term may view a weight
        self.optimizer.zero_grad(set_to_none=True)
        fns.backward(total)
        if self.cfg.grad_clip is not None:
            fns.clip(self.cfg.grad_clip)
        fns.optimizer_step()
        self.state["step"] += 1
        method.after_step(self.state["step"], epoch)
        _trace_first_step()
        self.steps += 1
        return total.detach(), values

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], int, float]:
        """Every step of one epoch, then the scheduler's step; returns the ``train/*`` means, steps and seconds."""
        self.step_fns.forward.train()
        means = EpochMeans()
        start = time.perf_counter()
        for batch in self.batches.epoch(epoch):
            total, values = self.train_step(batch, epoch)
            means.add(total, values, batch_size(batch))
        if self.scheduler is not None:
            self.scheduler.step()
        train_means = means.result()
        seconds = time.perf_counter() - start
        self.train_seconds += seconds
        return train_means, means.steps, seconds

    def end_epoch(self, epoch: int, train_means: dict[str, float], steps: int, seconds: float) -> None:
        """Validate; keep the best weights; count epochs without improvement; log; write ``last.safetensors``."""
        fabric, cfg = self.fabric, self.cfg
        loader = eval_batches(self.val, cfg.batch_size, fabric.global_rank, fabric.world_size, cfg, fabric.device)
        num_classes = cast(int, self.train.num_classes)  # settled on the training split by the run's task (run_task)
        val_metrics = evaluate(self.module.student, loader, num_classes, fabric.device, task=self.task)
        values = {f"train/{k}": v for k, v in train_means.items()}
        values.update({f"val/{k}": v for k, v in val_metrics.items()})
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        self.select(epoch, val_metrics[cfg.monitor])
        self.logger.log_epoch(epoch, values)
        self.history.append({"epoch": epoch, **values, "train_seconds": seconds, "train_steps": steps})
        if fabric.is_global_zero and self.resumable_at(epoch):
            generators = self.module.method.generator_states()
            state = dict(self.state, data=self.data_fingerprints)
            save_training_state(self.last_path, self.module, self.optimizer, self.scheduler, state, generators)
        fabric.barrier()
        if fabric.is_global_zero:  # after the checkpoint: a listener that stops the run leaves it resumable
            report_epoch(EpochReport(self.out_dir, self.logger.desc, epoch, values, seconds, steps))

    def resumable_at(self, epoch: int) -> bool:
        """Whether ``last.safetensors`` is written after ``epoch``: every ``trainer.checkpoint_every`` epochs, and
        after the run's final epoch (the last one, or one that stops early)."""
        final = epoch == self.cfg.epochs or self.state["stopped_early"]
        return final or epoch % self.cfg.checkpoint_every == 0

    def select(self, epoch: int, monitored: float) -> None:
        """Best-weights and early-stopping bookkeeping: an epoch improves if better by more than ``min_delta``."""
        cfg, state = self.cfg, self.state
        min_delta = cfg.early_stopping.min_delta if cfg.early_stopping else 0.0
        if _better(monitored, state["best_value"], self.task.higher_is_better(cfg.monitor), min_delta):
            state.update({"best_value": monitored, "best_epoch": epoch, "bad_epochs": 0})
            if self.fabric.is_global_zero:
                save_tensors(self.best_path, self.module.state_dict(), {"epoch": epoch, cfg.monitor: monitored})
        else:
            state["bad_epochs"] += 1
        if cfg.early_stopping and state["bad_epochs"] >= cfg.early_stopping.patience:
            state["stopped_early"] = True
        state["epoch"] = epoch

    def finish(self) -> FitResult:
        """Load the test-time weights (``trainer.test_checkpoint``) and sum up the run.

        When no epoch had a finite monitored metric there is no best epoch: the last weights are used and
        ``test_checkpoint`` says so (it reaches ``result.json`` and summary.md), with a note on stderr."""
        state = self.state
        used: str = self.cfg.test_checkpoint
        if used == "best" and state["best_epoch"] > 0 and self.best_path.is_file():
            tensors, _ = load_tensors(self.best_path)
            self.module.load_state_dict(tensors)
        elif used == "best":
            used = f"last (no epoch had a finite val/{self.cfg.monitor}, so none is best)"
            if self.fabric.is_global_zero:
                print(f"mmdistill: note: {self.logger.desc}: test metrics of the {used}", file=sys.stderr, flush=True)
        return FitResult(
            state["epoch"],
            state["best_epoch"],
            state["best_value"],
            state["stopped_early"],
            used,
            self.history,
            self.train_seconds,
            self.steps,
        )
