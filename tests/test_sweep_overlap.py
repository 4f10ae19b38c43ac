"""A sweep's jobs start when what they need has ended, not phase by phase: the final seeds' teachers train beside
the trials, and a method's tuned final run starts while other methods' trials still run; the results are those of
the phase-by-phase order, whatever order the jobs end in, and a sweep killed mid-way resumes with only what is left."""

from __future__ import annotations

import csv
import json
import random
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml
from test_sweep_file import BASE

from mmdistill.sweep import load_sweep, run_sweep
from mmdistill.sweep import run as sweep_run
from mmdistill.sweep.worker import run_job

# kd has one setting and dkd three: kd's trials end first, and its tuned final run can start beside dkd's trials
SWEEP = {
    "base": "base.yaml",
    "methods": ["kd", "dkd"],
    "space": {"kd": {"method.params.temperature": [4]}, "dkd": {"method.params.temperature": [1, 4, 8]}},
    "search": {"kind": "grid"},
    "seeds": {"tune": 1, "final": 2},
}


def write(folder: Path, sweep: dict | None = None) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep or SWEEP))
    return folder / "sweep.yaml"


class Logged(Future):
    """A finished job's future that notes in the log when the job loop reads its record."""

    def __init__(self, log: list, name: str, record: dict) -> None:
        super().__init__()
        self.log, self.name = log, name
        self.set_result(record)

    def result(self, timeout=None):
        self.log.append(("end", self.name))
        return super().result(timeout)


class SideBySide:
    """Two workers in this process: each job runs when it is submitted, and counts as ended when the job loop reads
    its record, so the jobs submitted between two reads ran side by side. ``kill_after``: a kill (KeyboardInterrupt)
    at the next submission once that many jobs ran."""

    capacity = 2

    def __init__(self, kill_after: int | None = None) -> None:
        self.log: list[tuple[str, str]] = []
        self.kill_after = kill_after

    def submit(self, job: dict) -> Future:
        if self.kill_after is not None and len(self.started()) >= self.kill_after:
            raise KeyboardInterrupt
        self.log.append(("start", job["name"]))
        return Logged(self.log, job["name"], run_job(job))

    def started(self) -> list[str]:
        return [name for event, name in self.log if event == "start"]

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


def side_by_side(executor: SideBySide, monkeypatch) -> SideBySide:
    monkeypatch.setattr(sweep_run, "make_executor", lambda *args, **kwargs: executor)
    return executor


def final_table(out: Path) -> list[dict]:
    """final.csv without the timing column (a measurement, not a result)."""
    with open(out / "final.csv") as f:
        return [{k: v for k, v in row.items() if k != "ms_per_step"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, list]:
    """The sweep run to its end on two workers side by side: its folder and its job log."""
    folder = tmp_path_factory.mktemp("overlap")
    executor = SideBySide()
    with pytest.MonkeyPatch.context() as patch:
        side_by_side(executor, patch)
        run_sweep(write(folder), folder / "sweep", workers=2, quiet=True)
    return folder / "sweep", executor.log


def test_final_seed_teachers_and_a_methods_final_runs_start_before_the_last_trial_ends(uninterrupted):
    _, log = uninterrupted
    start = {name: log.index(("start", name)) for event, name in log if event == "start"}
    end = {name: log.index(("end", name)) for event, name in log if event == "end"}
    trials = ["kd-000", "dkd-000", "dkd-001", "dkd-002"]
    assert set(trials) <= set(start)
    beside = [t for t in trials if start["seed_2"] < end[t] and start[t] < end["seed_2"]]
    assert beside, f"the final seed's teacher ran beside no trial: {log}"
    last_dkd_trial = max(end[t] for t in trials if t.startswith("dkd"))
    assert start["kd-tuned"] < last_dkd_trial, f"kd's tuned final run waited for dkd's trials: {log}"
    assert start["kd-tuned"] > end["kd-000"]  # and never before its own method's trials ended


def test_the_overlapped_sweep_gives_the_numbers_of_the_phase_by_phase_order(uninterrupted, tmp_path):
    out, log = uninterrupted
    assert log.index(("start", "kd-tuned")) < log.index(("end", "dkd-002")), "the jobs did not overlap"
    from mmdistill.sweep import plan
    from mmdistill.sweep.table import final_rows, write_tables

    # the phase-by-phase order, one job after another: every teacher, every trial, then the final runs
    spec = load_sweep(write(tmp_path))
    reference = tmp_path / "phases"
    for job in plan.teacher_jobs(spec, reference) + plan.static_trials(spec, reference):
        run_job(job)
    trials = plan.trial_records(reference)
    best = plan.best_trials(spec, trials)
    finals, holder = plan.final_jobs(spec, reference, best)
    rows = final_rows(spec, {job["name"]: run_job(job) for job in finals}, holder, best)
    write_tables(spec, reference, rows, trials, [])
    assert final_table(out) == final_table(reference)
    assert (out / "trials.csv").read_text().count("done") == 4


def test_a_sweep_killed_mid_overlap_resumes_with_only_what_is_left(uninterrupted, tmp_path, monkeypatch):
    whole, _ = uninterrupted
    out = tmp_path / "sweep"
    killed = side_by_side(SideBySide(kill_after=7), monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(write(tmp_path), out, workers=2, quiet=True)
    ran = set(killed.started())
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/*/trial.json")}
    assert "kd-tuned" in finished and "dkd-002" not in finished, f"the kill came outside the overlap: {killed.log}"

    resumed = side_by_side(SideBySide(), monkeypatch)
    run_sweep(write(tmp_path), out, workers=2, resume=True, quiet=True)
    assert not ran & set(resumed.started()), "a job finished before the kill ran again"
    for name, mtime in finished.items():
        assert next(out.glob(f"*/{name}/trial.json")).stat().st_mtime_ns == mtime
    assert final_table(out) == final_table(whole)


def ended_in_random_order(spec, out: Path, seed: int, scores: dict[str, float | None]) -> tuple[list, dict]:
    """Drive a job queue with three made-up workers whose jobs end in an order drawn from ``seed`` (a job's record:
    done with its score from ``scores``, 10 when not named, failed when None); returns the final runs started, as
    sorted (name, params) pairs, and the queue's job totals at the end."""
    from mmdistill.sweep.schedule import JobQueue

    queue, rng, running, finals = JobQueue(spec, out), random.Random(seed), [], []
    while True:
        while len(running) < 3 and (job := queue.next_job()) is not None:
            running.append(job)
            finals += [(job["name"], json.dumps(job["params"]))] if job["kind"] == "final" else []
        if not running:
            return sorted(finals), queue.total
        job = running.pop(rng.randrange(len(running)))
        record = {"name": job["name"], "method": job["method"], "params": job["params"], "status": "done"}
        score = scores.get(job["name"], 10.0)
        record.update({"val": {"0": score}} if score is not None else {"status": "failed", "error": "made up"})
        Path(job["folder"]).mkdir(parents=True)
        (Path(job["folder"]) / "trial.json").write_text(json.dumps(record))
        queue.ended(job, record)


def expected_finals(spec, out: Path) -> list:
    from mmdistill.sweep import plan

    best = plan.best_trials(spec, plan.trial_records(out))
    return sorted((j["name"], json.dumps(j["params"])) for j in plan.final_jobs(spec, out, best)[0])


def test_the_final_runs_do_not_depend_on_the_order_the_jobs_end_in(tmp_path):
    """Jobs that end in any order (records made up, ties included) lead to the same final runs: those chosen from
    every trial's record at the end, the first of equals in trial order."""
    spec = load_sweep(write(tmp_path, {**SWEEP, "space": {"method.params.temperature": [1, 2, 4, 8]}}))
    scores = {"kd-000": 70.0, "kd-001": 80.0, "kd-002": 80.0, "kd-003": 60.0, "dkd-000": 50.0, "dkd-003": 90.0}
    chosen = []
    for order in range(5):
        finals, total = ended_in_random_order(spec, tmp_path / f"order{order}", order, scores)
        assert finals == expected_finals(spec, tmp_path / f"order{order}") and total["final"] == len(finals)
        chosen.append(finals)
    assert all(c == chosen[0] for c in chosen)
    assert ("kd-tuned", json.dumps({"method.params.temperature": 2})) in chosen[0]  # kd-001 before kd-002


@pytest.mark.parametrize("shape", ["no-KD tuned", "a given teacher", "a method whose trials all fail"])
def test_every_final_run_starts_once_whatever_the_sweep(tmp_path, shape):
    """The no-KD student among the methods (its tuned run is the reference), a teacher given by the base config (no
    teacher jobs to wait for), a method without a finished trial (no tuned run): the queue runs exactly the final
    runs of the phase-by-phase order, and its count of final runs ends right."""
    sweep, base, scores = {**SWEEP, "space": {"method.params.temperature": [1, 4]}}, dict(BASE), {}
    if shape == "no-KD tuned":
        sweep.update(methods=["supervised", "kd"], space={"trainer.optimizer.lr": [0.01, 0.1]})
    if shape == "a given teacher":
        (tmp_path / "teacher.safetensors").write_bytes(b"")
        base["teacher"] = {**BASE["teacher"], "checkpoint": str(tmp_path / "teacher.safetensors")}
    if shape == "a method whose trials all fail":
        scores = {"dkd-000": None, "dkd-001": None}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    spec = load_sweep(tmp_path / "sweep.yaml")
    for order in range(3):
        out = tmp_path / f"order{order}"
        finals, total = ended_in_random_order(spec, out, order, scores)
        assert finals == expected_finals(spec, out) and total["final"] == len(finals)
        assert len({name for name, _ in finals}) == len(finals)  # none twice
        assert (out / "teachers").is_dir() == (shape != "a given teacher")
    tuned = {name for name, _ in finals if name.endswith("-tuned")}
    expected = {"no-KD tuned": {"supervised-tuned", "kd-tuned"}, "a method whose trials all fail": {"kd-tuned"}}
    assert tuned == expected.get(shape, {"kd-tuned", "dkd-tuned"})


def test_local_workers_start_with_the_training_code_imported_and_leave_no_server(tmp_path):
    """A worker's first job does not import torch, dynamo (torch.use_deterministic_algorithms) or the engine again:
    the workers are forked from a server that imported them once; a refused sweep started from the CLI, and a
    finished pool, leave no server running."""
    from mmdistill.cli import main
    from mmdistill.sweep import fork_server
    from mmdistill.sweep.executors import LocalExecutor

    if not fork_server.available():
        pytest.skip("no fork server on this platform: the workers are spawned")
    executor = LocalExecutor(2, 1)
    try:
        imported = "__import__('sys').modules.keys() >= {'torch._inductor.config', 'mmdistill.engine.protocol'}"
        assert executor.pool.submit(eval, imported).result(timeout=120)
    finally:
        executor.close()
    assert fork_server._server_pid() is None
    bad = write(tmp_path, {**SWEEP, "select": {"metric": "accuracy", "split": "test"}})
    assert main(["sweep", str(bad), "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"]) == 2
    assert fork_server._server_pid() is None and not (tmp_path / "out").exists()


class DrawnTrials:
    """A search like optuna's: each trial made when asked, ``per_method`` per method, told each record."""

    def __init__(self, spec, out: Path, per_method: int) -> None:
        from mmdistill.sweep.plan import trial_job

        self.made = [
            trial_job(spec, out, m, {"method.params.temperature": t}, i)
            for i, t in enumerate([1, 4])
            for m in spec.methods
        ][: per_method * len(spec.methods)]
        self.total, self.asked, self.told = len(self.made), 0, []

    def next_job(self) -> dict | None:
        if self.asked == len(self.made):
            return None
        self.asked += 1
        return self.made[self.asked - 1]

    def tell(self, job: dict, record: dict) -> None:
        self.told.append(job["name"])


def test_with_a_search_that_learns_trials_are_drawn_when_a_worker_is_free_and_tuned_runs_wait_for_all(tmp_path):
    from mmdistill.sweep.schedule import JobQueue

    spec = load_sweep(write(tmp_path))
    out = tmp_path / "sweep"
    search = DrawnTrials(spec, out, per_method=2)
    queue, running, log, finals = JobQueue(spec, out, search), [], [], {}
    while True:
        while len(running) < 2 and (job := queue.next_job()) is not None:
            running.append(job)
            log.append(("start", job["name"], search.asked))
            finals.update({job["name"]: job["params"]} if job["kind"] == "final" else {})
        if not running:
            break
        job = running.pop(0)
        record = {"name": job["name"], "method": job["method"], "params": job["params"], "status": "done"}
        record["val"] = {"0": 50.0 + len(log)}  # each job better than those ended before: the last trial is the best
        Path(job["folder"]).mkdir(parents=True)
        (Path(job["folder"]) / "trial.json").write_text(json.dumps(record))
        queue.ended(job, record)
        log.append(("end", job["name"], search.asked))
    trials = [name for event, name, _ in log if event == "start" and name in {j["name"] for j in search.made}]
    assert trials == [j["name"] for j in search.made] and search.told == trials  # each drawn once, each told
    for event, name, asked in log:  # never drawn ahead: each trial drawn when it started
        if event == "start" and name in trials:
            assert asked == trials.index(name) + 1
    last_trial_end = max(i for i, (event, name, _) in enumerate(log) if event == "end" and name in trials)
    for tuned in ("kd-tuned", "dkd-tuned"):
        assert log.index(("start", tuned, len(trials))) > last_trial_end  # after every trial of every method
    assert log.index(("start", "seed_2", 0)) < last_trial_end  # the final seeds' teachers did not wait
    ended = {name: i for i, (event, name, _) in enumerate(log) if event == "end"}
    for method in spec.methods:  # chosen from every trial: the one that ended last
        last = max((j for j in search.made if j["method"] == method), key=lambda j: ended[j["name"]])
        assert finals[f"{method}-tuned"] == last["params"]
