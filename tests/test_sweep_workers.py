"""The job loop: a job whose worker process dies runs again, and is recorded as failed after repeated deaths."""

from __future__ import annotations

import json
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

from mmdistill.sweep.executors import MAX_WORKER_DEATHS, run_jobs


class DyingWorkers:
    """An executor whose worker dies on the first ``deaths[name]`` submissions of each job."""

    capacity = 2

    def __init__(self, deaths: dict[str, int]) -> None:
        self.deaths, self.submitted, self.restarts = dict(deaths), [], 0

    def submit(self, job: dict) -> Future:
        self.submitted.append(job["name"])
        future: Future = Future()
        if self.deaths.get(job["name"], 0) > 0:
            self.deaths[job["name"]] -= 1
            future.set_exception(BrokenProcessPool("a worker died"))
        else:
            future.set_result({"name": job["name"], "status": "done", "val": {"0": 1.0}})
        return future

    def restart(self) -> None:
        self.restarts += 1


def jobs(tmp_path, names):
    return iter([{"name": n, "method": "kd", "params": {}, "folder": str(tmp_path / n)} for n in names])


def test_a_job_whose_worker_died_runs_again(tmp_path):
    executor = DyingWorkers({"a": 1})
    records = []
    source = jobs(tmp_path, ["a", "b"])
    run_jobs(lambda: next(source, None), executor, lambda job, record, running: records.append(record))
    assert sorted(r["name"] for r in records) == ["a", "b"]
    assert all(r["status"] == "done" for r in records)
    assert executor.submitted.count("a") == 2 and executor.restarts >= 1


def test_a_job_whose_worker_keeps_dying_is_recorded_as_failed(tmp_path):
    executor = DyingWorkers({"a": MAX_WORKER_DEATHS})
    records = []
    source = jobs(tmp_path, ["a"])
    run_jobs(lambda: next(source, None), executor, lambda job, record, running: records.append(record))
    assert [r["status"] for r in records] == ["failed"]
    assert "died" in records[0]["error"]
    assert json.loads((tmp_path / "a" / "trial.json").read_text())["status"] == "failed"
