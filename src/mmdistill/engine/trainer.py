"""The training loop: ours and short; devices, DDP and precision come from Lightning Fabric.

One step: batch -> teacher outputs (cache lookup or a forward pass) -> student + method
-> named losses -> weights -> sum -> backward. Per epoch: validate, keep the best weights
(by ``trainer.monitor``), write a resumable checkpoint, maybe stop early.

Resume is bitwise on CPU: the checkpoint holds weights, optimizer, scheduler and RNG state,
and the shuffling order is a pure function of (seed, epoch) via ``DistributedSampler``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn

from ..batch import INDEX, Batch, batch_size, inputs_checked_finite
from ..config import TrainerConfig
from ..data.dataset import MultimodalDataset
from ..errors import ConfigError, TrainingError
from ..io import sweep_stale_temp_files
from ..methods.base import Method, TeacherOutputs
from .batches import EpochBatches, eval_batches, train_batches  # noqa: F401 (re-exported)
from .checkpoint import load_tensors, load_training_state, save_tensors, save_training_state
from .logging import RunLogger
from .metrics import evaluate
from .teacher import check_finite_outputs

if TYPE_CHECKING:
    from lightning_fabric import Fabric

TeacherSource = Callable[[Batch], TeacherOutputs]


class DistillationModule(nn.Module):
    """The trainable part of a run: the student and the method (with its own learnable parts)."""

    def __init__(self, student: nn.Module, method: Method) -> None:
        super().__init__()
        self.student = student
        self.method = method

    def forward(self, batch: Batch, teacher_out: TeacherOutputs | None) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.method.forward_student(self.student, batch)
        return out.logits, self.method.losses(batch, out, teacher_out)


def weighted_total(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """``sum_k w_k * loss_k`` (a term without a weight weighs 1)."""
    return sum(weights.get(k, 1.0) * v for k, v in losses.items())  # type: ignore[return-value]


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


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_value: float
    stopped_early: bool
    test_checkpoint: str
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0  # time spent in training steps of this process's epochs (no validation, no I/O)
    train_steps: int = 0


def _better(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if monitor == "loss" else value > best + min_delta


@dataclass
class StepFunctions:
    """What one training step calls: Fabric's wrappers, or plain PyTorch where they would do nothing."""

    forward: Callable
    backward: Callable[[Tensor], None]
    clip: Callable[[float], object]
    optimizer_step: Callable[[], object]
    autocast: Callable


def _plain_pytorch_step(fabric: Fabric, cfg: TrainerConfig) -> bool:
    return fabric.world_size == 1 and fabric.device.type == "cpu" and cfg.precision == "32-true"


def _step_functions(fabric: Fabric, module: nn.Module, optimizer: torch.optim.Optimizer,
                    cfg: TrainerConfig) -> StepFunctions:
    """One process on CPU in full precision: call the module, ``backward`` and ``step`` directly.

    Fabric's module wrapper, backward and optimizer step then only convert float32 to float32
    and forward the call (about 0.1-0.3 ms a step on a small MLP); DDP, GPUs and mixed or
    double precision go through Fabric as before. Both paths give the same numbers.
    """
    if _plain_pytorch_step(fabric, cfg):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        return StepFunctions(
            forward=module, backward=Tensor.backward, optimizer_step=optimizer.step, autocast=contextlib.nullcontext,
            clip=lambda max_norm: torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, norm_type=2.0,
                                                                 error_if_nonfinite=True))
    # After loading: Fabric's optimizer wrapper copies the optimizer's attributes at setup time.
    module_f, optimizer_f = fabric.setup(module, optimizer)
    return StepFunctions(forward=module_f, backward=fabric.backward, optimizer_step=optimizer_f.step,
                         autocast=fabric.autocast,
                         clip=lambda max_norm: fabric.clip_gradients(module_f, optimizer_f, max_norm=max_norm))


def _not_finite(losses: dict[str, Tensor], weights: dict[str, float], total: Tensor, teacher_out: TeacherOutputs | None,
                batch: Batch, split: str, epoch: int, step: int, last_path: Path) -> Exception:
    """The error for a non-finite total loss: names the teacher if its outputs are the cause, else every term."""
    if teacher_out is not None:
        try:
            check_finite_outputs(teacher_out, split, batch[INDEX])
        except TrainingError as err:
            return TrainingError(f"epoch {epoch}, step {step}: {err}")
    terms = ", ".join(f"{k}={float(v.detach()):.4g} (weight {weights.get(k, 1.0):.4g})" for k, v in losses.items())
    bad = [k for k, v in losses.items() if not torch.isfinite(v)]
    what = (f"loss term {', '.join(map(repr, bad))} is not finite" if bad else
            f"the weighted sum of the loss terms is not finite ({float(total.detach()):.4g}) although every term is")
    return TrainingError(
        f"epoch {epoch}, step {step}: {what}; terms: {terms or 'none'}; "
        f"the last good checkpoint is {last_path if last_path.is_file() else 'none (failed in the first epoch)'}"
    )


_TRACED = []


def _trace_first_step() -> None:
    """With ``MMDISTILL_TRACE_STARTUP=1``: print the Unix time of the process's first training step, once
    (``benchmarks/bench_startup.py`` subtracts its launch time)."""
    if not _TRACED and os.environ.get("MMDISTILL_TRACE_STARTUP") == "1":
        _TRACED.append(True)
        print(f"mmdistill: first training step at unix time {time.time():.3f}", file=sys.stderr, flush=True)


def fit(fabric: Fabric, module: DistillationModule, train: MultimodalDataset, val: MultimodalDataset, cfg: TrainerConfig,
        seed: int, out_dir: Path, teacher_source: TeacherSource | None = None, resume: bool = False,
        quiet: bool = False, desc: str = "train") -> FitResult:
    """Train ``module`` on ``train``; select by ``val``; leave the test-time weights loaded in ``module``.

    Writes ``out_dir/checkpoints/{last,best}.safetensors``, ``metrics.csv`` and TensorBoard logs (rank 0).
    """
    world, rank = fabric.world_size, fabric.global_rank
    if cfg.batch_size % world:
        raise ConfigError(f"trainer.batch_size: {cfg.batch_size} must be divisible by the number of processes ({world})")
    # Not fabric.setup_dataloaders: its loader calls sampler.set_epoch(<iterations so far>), which
    # restarts at 0 on resume. Our epoch number keeps the shuffle a pure function of (seed, epoch).
    batches = train_batches(train, cfg, seed, rank, world, fabric.device)  # labels of column data checked here
    optimizer = make_optimizer(module.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    weights = module.method.loss_weights()
    num_classes = train.num_classes
    ckpt_dir = out_dir / "checkpoints"
    last_path, best_path = ckpt_dir / "last.safetensors", ckpt_dir / "best.safetensors"
    logger = RunLogger(out_dir, cfg.epochs, quiet=quiet, enabled=fabric.is_global_zero, desc=desc)
    if fabric.is_global_zero:  # partial files of a killed run's atomic writes (ours only: see io.sweep_stale_temp_files)
        for folder in (out_dir, ckpt_dir):
            sweep_stale_temp_files(folder)

    state = {"epoch": 0, "best_value": None, "best_epoch": 0, "bad_epochs": 0, "stopped_early": False}
    if resume and last_path.is_file():
        state = load_training_state(last_path, module, optimizer, scheduler)
        logger.resume_at(state["epoch"])
    step_fns = _step_functions(fabric, module, optimizer, cfg)
    history: list[dict] = []
    step = 0
    train_seconds = 0.0
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if state["stopped_early"]:
            break
        batches.set_epoch(epoch)
        step_fns.forward.train()
        names: list[str] = []
        terms: list[Tensor] = []  # per step: total, then each term (detached); summed once per epoch
        counts: list[int] = []
        epoch_start = time.perf_counter()
        # A DataLoader drew one int64 from the global RNG per epoch (its base seed); draw it too, so that dropout and
        # every other global-RNG draw see the same stream as before (reproductions and old checkpoints unchanged).
        torch.empty((), dtype=torch.int64).random_()
        for batch in batches:  # on fabric.device; inputs checked finite when the dataset was built or batch collated
            teacher_out = teacher_source(batch) if teacher_source is not None else None
            with step_fns.autocast(), inputs_checked_finite():
                _, losses = step_fns.forward(batch, teacher_out)
            total = weighted_total(losses, weights)
            if not torch.isfinite(total):
                raise _not_finite(losses, weights, total, teacher_out, batch, train.name, epoch, step, last_path)
            optimizer.zero_grad(set_to_none=True)
            step_fns.backward(total)
            if cfg.grad_clip is not None:
                step_fns.clip(cfg.grad_clip)
            step_fns.optimizer_step()
            _trace_first_step()
            counts.append(batch_size(batch))
            names = ["loss", *losses]
            terms.append(total.detach())
            terms.extend(v.detach() for v in losses.values())
            step += 1
        if scheduler is not None:
            scheduler.step()
        per_step = torch.stack(terms).float().view(len(counts), -1) if counts else None
        sums = (per_step * torch.tensor(counts, dtype=torch.float32)[:, None]).sum(0) if per_step is not None else None
        seen = sum(counts)
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        val_metrics = evaluate(module.student, eval_batches(val, cfg.batch_size, rank, world, cfg, fabric.device),
                               num_classes, fabric.device)
        means = (sums / max(seen, 1)).tolist() if sums is not None else []
        values = {f"train/{k}": v for k, v in zip(names, means)}
        values.update({f"val/{k}": v for k, v in val_metrics.items()})
        values["lr"] = optimizer.param_groups[0]["lr"]
        monitored = val_metrics[cfg.monitor]
        min_delta = cfg.early_stopping.min_delta if cfg.early_stopping else 0.0
        if _better(monitored, state["best_value"], cfg.monitor, min_delta):
            state.update(best_value=monitored, best_epoch=epoch, bad_epochs=0)
            if fabric.is_global_zero:
                save_tensors(best_path, module.state_dict(), {"epoch": epoch, cfg.monitor: monitored})
        else:
            state["bad_epochs"] += 1
        if cfg.early_stopping and state["bad_epochs"] >= cfg.early_stopping.patience:
            state["stopped_early"] = True
        state["epoch"] = epoch
        logger.log_epoch(epoch, values)
        history.append({"epoch": epoch, **values, "train_seconds": epoch_seconds, "train_steps": len(counts)})
        if fabric.is_global_zero:
            save_training_state(last_path, module, optimizer, scheduler, state)
        fabric.barrier()
    logger.close()

    if cfg.test_checkpoint == "best" and best_path.is_file():
        tensors, _ = load_tensors(best_path)
        module.load_state_dict(tensors)
    if state["best_value"] is None:
        state["best_value"] = math.nan
    return FitResult(state["epoch"], state["best_epoch"], state["best_value"], state["stopped_early"], cfg.test_checkpoint,
                     history, train_seconds, step)
