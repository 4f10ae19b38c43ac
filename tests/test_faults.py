"""Faults: a DDP process that dies stops the run within a bounded time; a corrupt checkpoint on --resume
is refused by name; an interrupted atomic write leaves the previous file intact."""

import os
import signal
import subprocess
import time

import pytest
from conftest import cli, cli_env

from mmdistill.io import write_text

LONG_DDP = """\
seed: 0
data: {name: toy-two-modality, params: {n: 4000}}
student: {model: {modalities: [b], encoder: {hidden: [64], out_dim: 32}}}
method: {name: supervised}
trainer: {epochs: 200, batch_size: 16, num_threads: 1, devices: 2, strategy: ddp}
"""


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@pytest.mark.parametrize("victim", ["worker", "launcher"])
def test_a_dead_ddp_process_stops_the_run_within_a_bounded_time(tmp_path, victim):
    config = tmp_path / "ddp.yaml"
    config.write_text(LONG_DDP)
    launcher = subprocess.Popen(
        cli("train", str(config), "--out", str(tmp_path / "run"), "--quiet"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        marker = tmp_path / "run" / "seed_0" / "student" / "metrics.csv"
        deadline = time.time() + 180
        while not marker.exists() and time.time() < deadline and launcher.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "training never started"
        (worker,) = children(launcher.pid)
        os.kill(worker if victim == "worker" else launcher.pid, signal.SIGKILL)
        survivor = launcher.pid if victim == "worker" else worker
        start = time.time()
        while alive(survivor) and time.time() - start < 60:
            time.sleep(0.2)
        assert not alive(survivor), (
            f"the surviving {'launcher' if victim == 'worker' else 'worker'} still runs after 60 s"
        )
        if victim == "worker":
            assert launcher.wait(5) != 0
            err = launcher.stderr.read()
            # whichever notices first: Fabric's launcher (worker exit code) or our CLI (the collective failed)
            assert "another DDP process of this run died" in err or "terminated with code -9" in err, err[-2000:]
    finally:
        for pid in [launcher.pid, *children(launcher.pid)]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()


def test_corrupt_checkpoint_on_resume_is_refused_by_name(tiny_config, tmp_path, capsys):
    from mmdistill.cli import main

    config = tiny_config(epochs=2)
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet", "--no-baseline"]) == 0
    last = tmp_path / "run" / "seed_0" / "student" / "checkpoints" / "last.safetensors"
    (tmp_path / "run" / "metrics.json").unlink()  # as if killed before the end
    (tmp_path / "run" / "seed_0" / "student" / "result.json").unlink()
    data = bytearray(last.read_bytes())
    data[-3] ^= 0xFF
    last.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet", "--no-baseline", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "last.safetensors" in err and "checksum mismatch" in err


def test_an_interrupted_atomic_write_keeps_the_old_file(tmp_path):
    from mmdistill.io import atomic_write

    target = write_text(tmp_path / "results.csv", "old\n")

    def crash(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half of the new")
        raise KeyboardInterrupt  # a kill in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"], "no temp file left behind"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_run_killed_while_building_the_teacher_cache_rebuilds_it_and_ends_the_same(toy_splits, tmp_path, monkeypatch):
    """Interrupt the cache write half-way (as a SIGKILL would), then run again: same weights as a clean run."""
    import torch

    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.engine.api import distill
    from mmdistill.engine.system import checkpoint
    from mmdistill.models import EncoderConfig, ModelConfig, build_model

    def models():
        specs, n = toy_splits.train.specs(), toy_splits.num_classes
        torch.manual_seed(0)
        t = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[16], out_dim=8)), specs, n)
        s = build_model(ModelConfig(modalities=["b"], encoder=EncoderConfig(hidden=[8], out_dim=8)), specs, n)
        return t, s

    trainer = TrainerConfig(epochs=2, batch_size=32)
    t, clean = models()
    distill(
        clean, t, toy_splits, tmp_path / "clean", "kd", trainer=trainer, cache=CacheConfig(dir=tmp_path / "cache-clean")
    )

    real_write = checkpoint.RowsWriter.write

    def dying_write(self, name, first_row, rows):
        real_write(self, name, first_row, rows)  # the first rows in the temp path ...
        raise KeyboardInterrupt  # ... and the process is gone

    monkeypatch.setattr(checkpoint.RowsWriter, "write", dying_write)
    t, killed = models()
    with pytest.raises(KeyboardInterrupt):
        distill(
            killed, t, toy_splits, tmp_path / "killed", "kd", trainer=trainer, cache=CacheConfig(dir=tmp_path / "cache")
        )
    assert not list((tmp_path / "cache").glob("*.safetensors")), "no half-written cache file under the final name"
    monkeypatch.setattr(checkpoint.RowsWriter, "write", real_write)
    t, again = models()
    distill(again, t, toy_splits, tmp_path / "killed", "kd", trainer=trainer, cache=CacheConfig(dir=tmp_path / "cache"))
    assert all(torch.equal(clean.state_dict()[k], again.state_dict()[k]) for k in clean.state_dict())


BUILD_CACHE = """
import sys, torch
torch.set_num_threads(1)
from mmdistill.data import build_splits
from mmdistill.engine.teacher import cached_table
from mmdistill.methods.base import TeacherRequest
from mmdistill.models import EncoderConfig, ModelConfig, build_model
print("start", flush=True)
data = build_splits("toy-two-modality", {"n": int(sys.argv[2]), "dim_a": 256, "dim_b": 256})
torch.manual_seed(0)
teacher = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[512, 512], out_dim=256)),
                      data.train.specs(), data.num_classes)
request = TeacherRequest(features=("encoders.a",))
table, hit = cached_table(teacher, data.train, request, None, sys.argv[1], 64, torch.device("cpu"))
print("done", "hit" if hit else "built", float(table.tensors["logits"].sum()))
"""


def test_sigkill_while_building_the_teacher_cache_leaves_no_cache_and_the_rebuild_is_identical(tmp_path):
    import sys

    from mmdistill.engine.system.checkpoint import load_tensors

    script = tmp_path / "build.py"
    script.write_text(BUILD_CACHE)
    cache = tmp_path / "cache"
    victim = subprocess.Popen(
        [sys.executable, str(script), str(cache), "60000"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert victim.stdout.readline().strip() == "start"
    time.sleep(0.3)  # inside the build (it takes seconds)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for final in cache.glob("*.safetensors") if cache.exists() else []:
        load_tensors(final)  # whatever carries the final name is complete (checksum verified), never half a file
    rebuilt = subprocess.run(
        [sys.executable, str(script), str(cache), "60000"], env=cli_env(), capture_output=True, text=True
    )
    clean = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "clean"), "60000"], env=cli_env(), capture_output=True, text=True
    )
    again = subprocess.run(
        [sys.executable, str(script), str(cache), "60000"], env=cli_env(), capture_output=True, text=True
    )
    assert rebuilt.returncode == 0 and clean.returncode == 0 and again.returncode == 0, rebuilt.stderr[-2000:]
    last = [p.stdout.strip().splitlines()[-1].split() for p in (rebuilt, clean, again)]  # "done hit|built <sum>"
    assert last[2][1] == "hit" and last[0][1] == "built"
    assert last[0][2] == last[1][2] == last[2][2]
