"""``--executor ray``: each job a Ray task with its CPU (and GPU) share, on a cluster or a local Ray started for the
sweep. Ray schedules the tasks and runs a task again when its worker dies (``max_retries``); a job's own failure is
its record, never a Ray error."""

from __future__ import annotations

import socket
from concurrent.futures import Future
from urllib.parse import urlsplit

from ..config import usable_cpus
from ..errors import MachineError
from .worker import run_job

TASK_RETRIES = 2  # a task whose worker process dies is run again this many times by Ray
CONNECT_TIMEOUT_S = 5.0


def check_address(address: str) -> None:
    """A ``host:port`` (or ``ray://host:port``) that answers, else one line; ``auto`` is left to Ray."""
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise MachineError(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT, or auto")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise MachineError(
            f"--ray-address {address}: no Ray cluster answers there ({err.strerror or err}); start one with `ray "
            "start --head`, check the address, or run the sweep with --executor local"
        ) from None


class RayExecutor:
    """Jobs as Ray tasks, ``workers`` of them at a time, each with its share of the cluster's CPUs."""

    def __init__(self, workers: int, address: str | None = None, gpus_per_trial: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise MachineError(
                "--executor ray: Ray is not installed (pip install 'mmdistill[ray]'); or run the sweep with "
                "--executor local"
            ) from None
        if address is not None:
            check_address(address)
        self.ray, self.started = ray, not ray.is_initialized()
        if self.started:
            options = {"address": address} if address else {"num_cpus": usable_cpus(), "include_dashboard": False}
            try:
                ray.init(**options, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                raise MachineError(f"--executor ray: Ray did not start ({first}); or use --executor local") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = workers
        self.threads = max(1, cpus // workers)
        self.task = ray.remote(num_cpus=self.threads, num_gpus=gpus_per_trial, max_retries=TASK_RETRIES)(run_job)

    def submit(self, job: dict) -> Future:
        return self.task.remote({**job, "threads": self.threads}).future()

    def restart(self) -> None:
        pass  # Ray replaces dead workers itself

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
