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
import random
import sys
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...config import TrainerConfig

if TYPE_CHECKING:
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import Strategy


@contextlib.contextmanager
def run_determinism(cfg: TrainerConfig):
    """Deterministic kernels (warn only) for a CPU run, and the caller's previous settings restored afterwards.

    ``torch.utils.deterministic.fill_uninitialized_memory`` is off for the run: it would fill
    every new output tensor with NaN before the kernel overwrites it (a memset per op, about
    a tenth of a small MLP's step); mmdistill never reads uninitialized memory.
    """
    import torch.utils.deterministic as deterministic

    # fill_uninitialized_memory is set on the module at run time; torch's stubs leave it out (the ignores below)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
    )
    if cfg.accelerator == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        deterministic.fill_uninitialized_memory = before[2]  # type: ignore[attr-defined]


def scoped_determinism(fn):
    """Decorate a function taking ``trainer: TrainerConfig | None``: its body runs under :func:`run_determinism`."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        trainer = sig.bind(*args, **kwargs).arguments.get("trainer") or TrainerConfig()
        with run_determinism(trainer):
            return fn(*args, **kwargs)

    return wrapper


class SingleCPUProcess:
    """What the training loop uses of a Fabric, for one CPU process at 32-true, without importing Lightning.

    Importing lightning_fabric costs seconds (torch._dynamo, torchmetrics); such a run takes the plain
    PyTorch step (``trainer._plain_pytorch_step``) and needs only the device, the rank, a no-op barrier and
    Fabric's seeding, which :meth:`seed_everything` repeats exactly. Anything else (``setup``, ``backward``,
    ``autocast``...: a caller that takes Fabric's step anyway) goes to a real single-CPU Fabric, made on first use.
    """

    device = torch.device("cpu")
    world_size = 1
    global_rank = 0
    local_rank = 0
    node_rank = 0
    is_global_zero = True

    def launch(self) -> None:
        pass

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_fabric":
            raise AttributeError(name)
        if "_fabric" not in self.__dict__:
            from lightning_fabric import Fabric

            self.__dict__["_fabric"] = Fabric(accelerator="cpu", devices=1, num_nodes=1, precision="32-true")
        return getattr(self.__dict__["_fabric"], name)

    def barrier(self, name: str | None = None) -> None:
        pass

    def to_device(self, obj):
        return obj.to(self.device)

    @staticmethod
    def seed_everything(seed: int, workers: bool | None = None, verbose: bool = True) -> int:
        """``Fabric.seed_everything``: Python, NumPy and torch seeded alike, and the same environment variables."""
        seed = int(seed)
        os.environ["PL_GLOBAL_SEED"] = str(seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        os.environ["PL_SEED_WORKERS"] = f"{int(True if workers is None else workers)}"
        return seed


def needs_fabric(cfg: TrainerConfig) -> bool:
    """False for one CPU process at 32-true (no DDP, no mixed precision, no accelerator): Fabric would do nothing."""
    on_cpu = cfg.accelerator == "cpu" or (
        cfg.accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()
    )
    single = cfg.devices == 1 and cfg.num_nodes == 1 and cfg.strategy == "auto"
    launched = any(v in os.environ for v in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS"))
    return not (on_cpu and single and cfg.precision == "32-true" and not launched)


def make_fabric(cfg: TrainerConfig) -> Fabric | SingleCPUProcess:
    """A Fabric for the trainer settings; gloo for DDP on CPU (determinism is set per run: :func:`run_determinism`).

    A :class:`SingleCPUProcess` where Fabric is not needed (:func:`needs_fabric`): Lightning is imported only here.
    """
    if not needs_fabric(cfg):
        return SingleCPUProcess()
    from lightning_fabric import Fabric

    strategy: str | Strategy = cfg.strategy
    if strategy == "ddp":
        from lightning_fabric.strategies import DDPStrategy

        backend = "gloo" if cfg.accelerator == "cpu" else None
        strategy = DDPStrategy(process_group_backend=backend, timeout=timedelta(seconds=cfg.ddp_timeout_s))
    return Fabric(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        precision=cfg.precision,
    )


def launch(fabric: Fabric | SingleCPUProcess) -> None:
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
            print(
                f"mmdistill: rank {rank}: the launching process (pid {parent}) has died; stopping this worker. "
                f"Resume the run with --resume.",
                file=sys.stderr,
                flush=True,
            )
            os._exit(3)
