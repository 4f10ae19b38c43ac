"""The fork server that local sweep workers are forked from: a process that imports torch and the training code once,
so that each worker starts ready to run in milliseconds (where the platform has one: Linux, macOS).

This module imports nothing heavy: ``mmdistill sweep --workers N`` starts the server before it imports torch itself,
so the two imports run side by side. The server is never a fork of the sweep (which may hold torch's threads and
locks), and importing starts no compute threads, so its forks hold none either.
"""

from __future__ import annotations

import multiprocessing

# What a job imports (worker.run_job and its run): torch._inductor.config is what torch.use_deterministic_algorithms
# imports (about 1 s: dynamo, sympy), tensorboard is each run's log writer. Last, a module that makes the server end
# at once when the sweep stops it, instead of unloading all this (about 1 s).
WORKER_IMPORTS = [
    "torch",
    "torch._inductor.config",
    "torch.utils.tensorboard",
    "mmdistill.config",
    "mmdistill.engine.epoch_listeners",
    "mmdistill.engine.protocol",
    "mmdistill.engine.system.runfolder",
    "mmdistill.tasks",
    "mmdistill.sweep.worker",
    "mmdistill.sweep.fork_server_exit",
]


def available() -> bool:
    return "forkserver" in multiprocessing.get_all_start_methods()


def start() -> bool:
    """Start the fork server, importing :data:`WORKER_IMPORTS`, unless one runs; returns whether there is one. Returns
    at once: the server imports in its own process. The server is this process's (:mod:`multiprocessing` keeps one
    per process): one started by other code is used as it is, and left running by :func:`stop`."""
    global _started
    if not available():
        return False
    from multiprocessing import forkserver

    if _server_pid() is None:
        multiprocessing.get_context("forkserver").set_forkserver_preload(WORKER_IMPORTS)
        _started = True
    forkserver.ensure_running()
    return True


def stop() -> None:
    """Stop the fork server that :func:`start` started and wait for it, so that its time (and its workers') counts
    as this process's children's, and none is left behind; the next local pool starts another."""
    global _started
    from multiprocessing import forkserver

    halt = getattr(forkserver._forkserver, "_stop", None)  # private: absent on other Pythons, then the server stays
    if _started and halt is not None:
        halt()
    _started = False


_started = False  # whether the running server is the one start() started


def _server_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)
