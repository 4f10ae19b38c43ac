"""The training loop: ours and short; devices, DDP and precision come from Lightning Fabric.

One step: batch -> teacher outputs (cache lookup or a forward pass) -> student + method
-> named losses -> weights -> sum -> backward. Per epoch: validate, keep the best weights
(by ``trainer.monitor``), write a resumable checkpoint, maybe stop early.

Resume is bitwise on CPU: the checkpoint holds weights, optimizer, scheduler and RNG state,
and the shuffling order is a pure function of (seed, epoch) via ``DistributedSampler``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from lightning_fabric import Fabric
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from ..batch import Batch, batch_size, validate_labels
from ..config import TrainerConfig
from ..data.dataset import MultimodalDataset
from ..errors import ConfigError, TrainingError
from ..methods.base import Method, TeacherOutputs
from .checkpoint import load_tensors, load_training_state, save_tensors, save_training_state
from .logging import RunLogger
from .metrics import evaluate

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


def _identity(batch: Batch) -> Batch:
    return batch


def eval_batches(dataset: MultimodalDataset, batch_size: int, rank: int = 0, world: int = 1) -> DataLoader:
    """This process's share of a split (rows rank, rank+world, ...), no padding, in order."""
    rows = list(range(rank, len(dataset), world))
    return DataLoader(dataset, batch_size=batch_size, sampler=rows, collate_fn=_identity)


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    best_value: float
    stopped_early: bool
    test_checkpoint: str
    history: list[dict] = field(default_factory=list)


def _better(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if monitor == "loss" else value > best + min_delta


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
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(train, batch_size=cfg.batch_size // world, sampler=sampler, collate_fn=_identity)
    optimizer = make_optimizer(module.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    weights = module.method.loss_weights()
    num_classes = train.num_classes
    ckpt_dir = out_dir / "checkpoints"
    last_path, best_path = ckpt_dir / "last.safetensors", ckpt_dir / "best.safetensors"
    logger = RunLogger(out_dir, cfg.epochs, quiet=quiet, enabled=fabric.is_global_zero, desc=desc)

    state = {"epoch": 0, "best_value": None, "best_epoch": 0, "bad_epochs": 0, "stopped_early": False}
    if resume and last_path.is_file():
        state = load_training_state(last_path, module, optimizer, scheduler)
        logger.resume_at(state["epoch"])
    # After loading: Fabric's optimizer wrapper copies the optimizer's attributes at setup time.
    module_f, optimizer_f = fabric.setup(module, optimizer)
    history: list[dict] = []
    step = 0
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if state["stopped_early"]:
            break
        sampler.set_epoch(epoch)
        module_f.train()
        sums: dict[str, Tensor] = {}
        seen = 0
        for batch in loader:
            batch = fabric.to_device(batch)
            validate_labels(batch, num_classes)
            teacher_out = teacher_source(batch) if teacher_source is not None else None
            with fabric.autocast():
                _, losses = module_f(batch, teacher_out)
            total = weighted_total(losses, weights)
            if not torch.isfinite(total):
                bad = [k for k, v in losses.items() if not torch.isfinite(v)]
                raise TrainingError(
                    f"epoch {epoch}, step {step}: loss term {', '.join(map(repr, bad))} is not finite "
                    f"({', '.join(f'{k}={float(losses[k].detach()):.4g}' for k in bad)}); "
                    f"the last good checkpoint is {last_path if last_path.is_file() else 'none (failed in the first epoch)'}"
                )
            optimizer_f.zero_grad(set_to_none=True)
            fabric.backward(total)
            if cfg.grad_clip is not None:
                fabric.clip_gradients(module_f, optimizer_f, max_norm=cfg.grad_clip)
            optimizer_f.step()
            n = batch_size(batch)
            seen += n
            for k, v in {"loss": total, **losses}.items():
                sums[k] = sums.get(k, 0.0) + v.detach() * n
            step += 1
        if scheduler is not None:
            scheduler.step()
        val_metrics = evaluate(module.student, eval_batches(val, cfg.batch_size, rank, world), num_classes, fabric.device)
        values = {f"train/{k}": float(v) / max(seen, 1) for k, v in sums.items()}
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
        history.append({"epoch": epoch, **values})
        if fabric.is_global_zero:
            save_training_state(last_path, module, optimizer, scheduler, state)
        fabric.barrier()
    logger.close()

    if cfg.test_checkpoint == "best" and best_path.is_file():
        tensors, _ = load_tensors(best_path)
        module.load_state_dict(tensors)
    if state["best_value"] is None:
        state["best_value"] = math.nan
    return FitResult(state["epoch"], state["best_epoch"], state["best_value"], state["stopped_early"], cfg.test_checkpoint, history)


def make_fabric(cfg: TrainerConfig) -> Fabric:
    """A Fabric for the trainer settings; deterministic kernels on CPU."""
    if cfg.accelerator == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    strategy = cfg.strategy
    if strategy == "ddp" and cfg.accelerator == "cpu":
        from lightning_fabric.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo")
    return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=strategy, precision=cfg.precision)
