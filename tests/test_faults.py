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
    launcher = subprocess.Popen(cli("train", str(config), "--out", str(tmp_path / "run"), "--quiet"), env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
        assert not alive(survivor), f"the surviving {'launcher' if victim == 'worker' else 'worker'} still runs after 60 s"
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
    from mmdistill.engine import checkpoint
    from mmdistill.engine.api import distill
    from mmdistill.models import EncoderConfig, ModelConfig, build_model

    def models():
        specs, n = toy_splits.train.specs(), toy_splits.num_classes
        torch.manual_seed(0)
        t = build_model(ModelConfig(modalities=["a", "b"], encoder=EncoderConfig(hidden=[16], out_dim=8)), specs, n)
        s = build_model(ModelConfig(modalities=["b"], encoder=EncoderConfig(hidden=[8], out_dim=8)), specs, n)
        return t, s

    trainer = TrainerConfig(epochs=2, batch_size=32)
    t, clean = models()
    distill(clean, t, toy_splits, tmp_path / "clean", "kd", trainer=trainer, cache=CacheConfig(dir=tmp_path / "cache-clean"))

    real_save = checkpoint.save_file

    def dying_save(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\x00" * 100)  # half a file in the temp path ...
        raise KeyboardInterrupt  # ... and the process is gone

    monkeypatch.setattr(checkpoint, "save_file", dying_save)
    t, killed = models()
    with pytest.raises(KeyboardInterrupt):
        distill(killed, t, toy_splits, tmp_path / "killed", "kd", trainer=trainer, cache=CacheConfig(dir=tmp_path / "cache"))
    assert not list((tmp_path / "cache").glob("*.safetensors")), "no half-written cache file under the final name"
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    t, again = models()
    distill(again, t, toy_splits, tmp_path / "killed", "kd", trainer=trainer, cache=CacheConfig(dir=tmp_path / "cache"))
    assert all(torch.equal(clean.state_dict()[k], again.state_dict()[k]) for k in clean.state_dict())
