"""Fabric set-up for a run: devices, DDP with a bounded timeout, and a watchdog for orphaned workers.

A DDP run must stop, not hang, when one of its processes dies:

* a worker (rank > 0) that dies: Fabric's launcher in the local rank-0 process notices and
  terminates the run at once;
* the launching process (local rank 0) that dies: its workers would wait in a collective for
  ever, so each worker runs :func:`_orphan_watchdog`, which exits it with a message as soon as
  its parent is gone;
* anything else (a machine lost across the network): every collective times out after
  ``trainer.ddp_timeout_s`` seconds.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import threading
import time
from datetime import timedelta

import torch
from lightning_fabric import Fabric

from ..config import TrainerConfig


@contextlib.contextmanager
def run_determinism(cfg: TrainerConfig):
    """Deterministic kernels (warn only) for a CPU run, and the caller's previous settings restored afterwards.

    ``torch.utils.deterministic.fill_uninitialized_memory`` is off for the run: it would fill
    every new output tensor with NaN before the kernel overwrites it (a memset per op, about
    a tenth of a small MLP's step); mmdistill never reads uninitialized memory.
    """
    import torch.utils.deterministic as deterministic

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              deterministic.fill_uninitialized_memory)
    if cfg.accelerator == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        deterministic.fill_uninitialized_memory = before[2]


def scoped_determinism(fn):
    """Decorate a function taking ``trainer: TrainerConfig | None``: its body runs under :func:`run_determinism`."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        trainer = sig.bind(*args, **kwargs).arguments.get("trainer") or TrainerConfig()
        with run_determinism(trainer):
            return fn(*args, **kwargs)

    return wrapper


def make_fabric(cfg: TrainerConfig) -> Fabric:
    """A Fabric for the trainer settings; gloo for DDP on CPU (determinism is set per run: :func:`run_determinism`)."""
    strategy = cfg.strategy
    if strategy == "ddp":
        from lightning_fabric.strategies import DDPStrategy

        backend = "gloo" if cfg.accelerator == "cpu" else None
        strategy = DDPStrategy(process_group_backend=backend, timeout=timedelta(seconds=cfg.ddp_timeout_s))
    return Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=strategy, precision=cfg.precision)


def launch(fabric: Fabric) -> None:
    """``fabric.launch()``, then guard worker processes against a dead launcher."""
    if os.environ.get("LOCAL_RANK", "0") != "0":  # a worker started by Fabric's launcher: guard it from the start
        parent = os.getppid()
        rank = os.environ.get("RANK", os.environ["LOCAL_RANK"])
        threading.Thread(target=_orphan_watchdog, args=(parent, rank), daemon=True).start()
    fabric.launch()


def _orphan_watchdog(parent: int, rank: str, every: float = 1.0) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            print(f"mmdistill: rank {rank}: the launching process (pid {parent}) has died; stopping this worker. "
                  f"Resume the run with --resume.", file=sys.stderr, flush=True)
            os._exit(3)
