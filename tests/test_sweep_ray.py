"""``--executor ray``: trials as Ray tasks on a local Ray started by the test; Ray missing or an address that does not
answer is one line before anything starts, and ``--executor local`` still works."""

from __future__ import annotations

import os
import socket
import sys

import pytest
from test_sweep_runs import SWEEP, final_table, write

from mmdistill.cli import main
from mmdistill.errors import MachineError
from mmdistill.sweep import run_sweep

SMALL = {**SWEEP, "methods": ["kd"], "space": {"method.params.temperature": [1, 4]}, "seeds": {"tune": 1, "final": 1}}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once the socket closes: nothing listens there


def test_an_address_where_no_ray_answers_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    path = write(tmp_path, SMALL)
    address = f"127.0.0.1:{closed_port()}"
    code = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", "ray", "--ray-address", address])
    err = capsys.readouterr().err
    assert code == 1 and "--ray-address" in err and "--executor local" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_ray_not_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(MachineError, match=r"mmdistill\[ray\].*--executor local"):
        run_sweep(write(tmp_path, SMALL), tmp_path / "out", executor="ray")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # starting Ray takes 10-30 s on 2 busy cores
def test_a_sweep_on_a_local_ray_gives_the_table_of_a_local_sweep(tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    path = write(tmp_path, SMALL)
    local = run_sweep(path, tmp_path / "local", quiet=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_sweep(path, tmp_path / "ray", workers=2, executor="ray", quiet=True)
    finally:
        ray.shutdown()
    assert [r["status"] for r in on_ray["trials"]] == ["done", "done"]
    assert all(not r["worker"].endswith(f":{os.getpid()}") for r in on_ray["trials"])  # ran in Ray's workers
    assert final_table(tmp_path / "ray") == final_table(tmp_path / "local")
    assert local["teachers_trained"] == on_ray["teachers_trained"] == 2
