"""Where a sweep's jobs run: in this process, in N local worker processes, or as Ray tasks.

Each executor takes a job (:mod:`.plan`) and gives a :class:`concurrent.futures.Future` of its record
(:func:`.worker.run_job`). Local workers split the cores between them (``threads`` each), each runs one job after
another, and they stop when the sweep dies; a worker that dies is replaced and its job run again (:func:`run_jobs`).
Where the platform has a fork server (Linux, macOS), it imports torch and the training code once, and each worker
is forked from it ready to run (:mod:`.fork_server`): a worker starts in a few milliseconds instead of importing them
again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from ..config import usable_cpus
from ..errors import ConfigError, MachineError
from . import fork_server
from .worker import run_job, start_worker

MAX_WORKER_DEATHS = 2  # a job whose worker died this many times is recorded as failed


class Executor(Protocol):
    capacity: int

    def submit(self, job: dict) -> Future: ...

    def restart(self) -> None: ...

    def close(self) -> None: ...


def check_workers(workers: int) -> int:
    """Threads per worker; more workers than this process's CPUs is refused."""
    cpus = usable_cpus()
    if workers < 1:
        raise ConfigError(f"--workers: {workers}; give at least 1")
    if workers > cpus:
        raise ConfigError(
            f"--workers: {workers} workers, but this process may use {cpus} CPU(s); use at most {cpus} (each worker "
            "gets its share of the cores, and more workers than cores only slows every trial)"
        )
    return max(1, cpus // workers)


class InlineExecutor:
    """Jobs one after the other, in this process (``--workers 1``)."""

    capacity = 1

    def submit(self, job: dict) -> Future:
        future: Future = Future()
        future.set_result(run_job(job))
        return future

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


class LocalExecutor:
    """``workers`` processes, each with ``threads`` compute threads, each running jobs one after another: forked from
    the fork server (:mod:`.fork_server`), else spawned. Never a fork of the sweep itself, which may hold torch's
    threads and locks."""

    def __init__(self, workers: int, threads: int) -> None:
        import multiprocessing

        self.capacity, self.threads = workers, threads
        self.forkserver = fork_server.start()  # at once: the server imports while the sweep plans its jobs
        self.context = multiprocessing.get_context("forkserver" if self.forkserver else "spawn")
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.capacity, self.context, start_worker, (self.threads, os.getpid()))

    def submit(self, job: dict) -> Future:
        return self.pool.submit(run_job, job)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._pool()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.forkserver:
            fork_server.stop()


def run_jobs(next_job: Callable[[], dict | None], executor: Any, on_record: Callable[[dict, dict, int], None]) -> None:
    """Keep ``executor`` busy with jobs from ``next_job`` (None: none to start now) until none is left and none
    runs; ``on_record(job, record, running)`` after each. A job whose worker died is run again, up to
    :data:`MAX_WORKER_DEATHS` times, then recorded as failed."""
    running: dict[Future, dict] = {}
    deaths: dict[str, int] = {}
    while True:
        while len(running) < executor.capacity:
            job = next_job()
            if job is None:
                break
            running[executor.submit(job)] = job
        if not running:
            return
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        broken = []
        for future in finished:
            job = running.pop(future)
            try:
                record = future.result()
            except BrokenProcessPool:
                broken.append(job)
                continue
            on_record(job, record, len(running))
        if broken or any(f.done() and isinstance(f.exception(), BrokenProcessPool) for f in running):
            lost = broken + [running[f] for f in running]
            running.clear()
            executor.restart()
            for job in lost:
                deaths[job["name"]] = deaths.get(job["name"], 0) + 1
                if deaths[job["name"]] >= MAX_WORKER_DEATHS:
                    error = f"its worker process died {deaths[job['name']]} times (killed, or out of memory)"
                    on_record(job, _failed(job, error), len(running))
                else:
                    print(f"mmdistill sweep: a worker died; {job['name']} runs again", file=sys.stderr, flush=True)
                    running[executor.submit(job)] = job


def _failed(job: dict, error: str) -> dict:
    from pathlib import Path

    from ..io import write_json
    from .worker import RECORD

    record = {
        "name": job["name"],
        "method": job["method"],
        "params": job["params"],
        "status": "failed",
        "error": error,
        "seconds": 0.0,
        "steps": 0,
        "curve": [],
        "val": {},
        "test": {},
    }
    Path(job["folder"]).mkdir(parents=True, exist_ok=True)
    write_json(Path(job["folder"]) / RECORD, record)
    return record


def make_executor(kind: str, workers: int, ray_address: str | None = None, gpus_per_trial: float = 0.0) -> Any:
    """The executor ``kind`` (``local`` or ``ray``) for ``workers`` parallel jobs."""
    if kind == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(workers, ray_address, gpus_per_trial)
    if kind != "local":
        raise ConfigError(f"--executor: {kind!r}; use local or ray")
    if ray_address is not None:
        raise ConfigError("--ray-address: needs --executor ray")
    threads = check_workers(workers)
    return InlineExecutor() if workers == 1 else LocalExecutor(workers, threads)


__all__ = ["MachineError", "check_workers", "make_executor", "run_jobs"]
