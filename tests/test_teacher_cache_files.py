"""Teacher-cache files: tied to their key, partial files of killed writers swept, a NaN teacher named."""

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_training import models
from torch import nn

from mmdistill.batch import INDEX
from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.engine.api import distill
from mmdistill.engine.teacher import cached_table
from mmdistill.errors import TrainingError
from mmdistill.io import _host
from mmdistill.methods.base import TeacherRequest

ARGS = (64, torch.device("cpu"))


def test_a_cache_file_copied_under_another_key_is_rebuilt_not_used(toy_splits, tmp_path, capsys):
    teacher_a, _ = models(toy_splits, seed=0)
    teacher_b, _ = models(toy_splits, seed=1)
    cache = tmp_path / "cache"
    cached_table(teacher_a, toy_splits.train, TeacherRequest(), None, cache, *ARGS)
    (file_a,) = cache.glob("*.safetensors")
    table_b, _ = cached_table(teacher_b, toy_splits.train, TeacherRequest(), None, tmp_path / "cache-b", *ARGS)
    (file_b,) = (tmp_path / "cache-b").glob("*.safetensors")
    shutil.copy(file_a, cache / file_b.name)  # teacher A's outputs synced in under teacher B's key
    capsys.readouterr()
    table, hit = cached_table(teacher_b, toy_splits.train, TeacherRequest(), None, cache, *ARGS)
    assert not hit, "a file built for another key must not be used"
    assert "copied or renamed" in capsys.readouterr().err
    assert torch.equal(table.tensors["logits"], table_b.tensors["logits"])
    _, hit = cached_table(teacher_b, toy_splits.train, TeacherRequest(), None, cache, *ARGS)
    assert hit, "the rebuilt file is used from then on"


def test_a_copied_cache_file_does_not_change_the_student(toy_splits, tmp_path):
    """End to end: the student must come out as without the foreign file."""
    trainer = TrainerConfig(epochs=1, batch_size=32)
    results = {}
    for name, seed in (("a", 0), ("b", 1), ("b-clean", 1)):
        teacher, student = models(toy_splits, seed=seed)
        cache = tmp_path / ("clean" if name == "b-clean" else "shared")
        if name == "b":  # put teacher a's file under teacher b's key
            (file_a,) = cache.glob("*.safetensors")
            from mmdistill.engine.teacher import cache_key

            shutil.copy(file_a, cache / f"{cache_key(teacher, toy_splits.train, TeacherRequest(), None)}.safetensors")
        distill(student, teacher, toy_splits, tmp_path / name, "kd", trainer=trainer, cache=CacheConfig(dir=cache))
        results[name] = student.state_dict()
    assert all(torch.equal(results["b"][k], results["b-clean"][k]) for k in results["b"])


def test_stale_temp_files_of_killed_writers_are_swept_and_nothing_else(toy_splits, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = _host()
    ours_dead = cache / f".abc.safetensors.mmdistill-{host}-{dead.pid}-x1y2.tmp"
    ours_alive = cache / f".abc.safetensors.mmdistill-{host}-{os.getppid()}-x1y3.tmp"
    other_host_new = cache / f".abc.safetensors.mmdistill-otherhost-{dead.pid}-x1y4.tmp"
    other_host_old = cache / f".abc.safetensors.mmdistill-otherhost-{dead.pid}-x1y5.tmp"
    foreign = [cache / ".abc.safetensors.tmp", cache / "notes.txt", cache / f".x.mmdistill-{host}-{dead.pid}-q.bak"]
    for p in [ours_dead, ours_alive, other_host_new, other_host_old, *foreign]:
        p.write_bytes(b"\0" * 1000)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(other_host_old, (two_days_ago, two_days_ago))
    cached_table(models(toy_splits)[0], toy_splits.train, TeacherRequest(), None, cache, *ARGS)
    left = {p.name for p in cache.iterdir()}
    assert ours_dead.name not in left and other_host_old.name not in left
    assert {ours_alive.name, other_host_new.name, *(p.name for p in foreign)} <= left


KILLED_WRITER = """
import sys, torch
from mmdistill.engine.system import checkpoint
def slow_write(tensors, path, metadata=None):
    open(path, "wb").write(b"\\0" * 4096)
    print("writing", flush=True)
    import time; time.sleep(60)
checkpoint.save_file = slow_write
checkpoint.save_tensors(sys.argv[1], {"w": torch.zeros(3)})
"""


def test_a_writer_killed_by_sigkill_leaves_a_temp_file_that_the_next_open_sweeps(toy_splits, tmp_path):
    from conftest import cli_env

    cache = tmp_path / "cache"
    victim = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(cache / "k.safetensors")],
        env=cli_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert victim.stdout.readline().strip() == "writing"
    victim.kill()
    victim.wait()
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")], (
        "the kill left its temp file (the defect's setting)"
    )
    cached_table(models(toy_splits)[0], toy_splits.train, TeacherRequest(), None, cache, *ARGS)
    assert not [p.name for p in cache.iterdir() if p.name.endswith(".tmp")]


class NaNAt(nn.Module):
    """A teacher whose outputs are NaN for the examples with index in ``bad``."""

    def __init__(self, inner: nn.Module, bad: set[int]) -> None:
        super().__init__()
        self.inner, self.bad, self.modalities = inner, bad, inner.modalities

    def forward(self, batch):
        out = self.inner(batch)
        mask = torch.tensor([int(i) in self.bad for i in batch[INDEX]])
        return out.masked_fill(mask[:, None], float("nan"))


def test_a_teacher_with_nan_outputs_is_named_when_the_cache_is_built(toy_splits, tmp_path):
    teacher = NaNAt(models(toy_splits)[0], {150, 40})
    with pytest.raises(
        TrainingError, match=r"teacher's logits are not finite .*split '[^']*train', first at example 40 "
    ):
        cached_table(teacher, toy_splits.train, TeacherRequest(), None, tmp_path, *ARGS)
    assert not list(tmp_path.glob("*.safetensors"))


def test_a_teacher_with_nan_outputs_is_named_when_run_every_step(toy_splits, tmp_path):
    teacher, student = models(toy_splits)
    with pytest.raises(
        TrainingError,
        match=r"epoch 1, step 0: the teacher's logits are not finite .*split '[^']*train', first at example \d+ ",
    ):
        distill(
            student,
            NaNAt(teacher, set(range(len(toy_splits.train)))),
            toy_splits,
            tmp_path / "r",
            "kd",
            trainer=TrainerConfig(epochs=1, batch_size=32),
            cache=CacheConfig(enabled=False),
        )


def test_a_non_finite_weighted_sum_of_finite_terms_names_every_term(toy_splits, tmp_path, monkeypatch):
    """The hint method's empty message ('loss term  is not finite ()'): every term finite, their weighted sum not."""
    from mmdistill.methods.kd import HintonKD

    monkeypatch.setattr(HintonKD, "loss_weights", lambda self: {"kd": float("inf")})
    teacher, student = models(toy_splits)
    with pytest.raises(TrainingError) as err:
        distill(
            student,
            teacher,
            toy_splits,
            tmp_path / "r",
            "kd",
            trainer=TrainerConfig(epochs=1, batch_size=32),
            cache=CacheConfig(dir=tmp_path / "c"),
        )
    msg = str(err.value)
    assert msg.startswith("epoch 1, step 0: the weighted sum of the loss terms is not finite (inf)")
    assert "kd=" in msg and "weight inf" in msg and "ce=" in msg


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 3000),
    cols=st.sampled_from([1, 4, 700, 5000]),
    picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=80),
)
def test_file_backed_rows_are_the_rows_asked_for(tmp_path_factory, rows, cols, picks):
    import numpy as np

    from mmdistill.data.formats.ondisk import NpyRows

    path = tmp_path_factory.mktemp("rows") / "x.npy"
    arr = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    np.save(path, arr)
    idx = np.array([p % rows for p in picks])
    assert np.array_equal(NpyRows.of(np.load(path, mmap_mode="r")).rows(idx), arr[idx])


def test_a_batch_of_cached_logits_costs_a_few_reads_not_one_per_row(toy_splits, tmp_path, monkeypatch):
    """A file-backed cache hit once made ~60 system calls per 64-row batch (one per row)."""
    monkeypatch.setenv("MMDISTILL_CACHE_MEMORY_MB", "0")
    teacher, _ = models(toy_splits)
    cached_table(teacher, toy_splits.train, TeacherRequest(), None, tmp_path, *ARGS)
    table, hit = cached_table(teacher, toy_splits.train, TeacherRequest(), None, tmp_path, *ARGS)
    assert hit and not isinstance(table.columns["logits"], torch.Tensor)
    calls = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda *a: calls.append(1) or real(*a))
    idx = torch.randperm(len(toy_splits.train), generator=torch.Generator().manual_seed(0))[:64]
    got = table.lookup(toy_splits.train.__getitems__(idx), torch.device("cpu")).logits
    assert torch.equal(got, table.tensors["logits"][idx])
    assert len(calls) <= 2, f"{len(calls)} reads for 64 rows of {table.columns['logits'].row_bytes} bytes"


def test_a_resumed_run_sweeps_the_temp_files_of_its_killed_writer(toy_splits, tmp_path):
    trainer = TrainerConfig(epochs=1, batch_size=64)
    _, student = models(toy_splits)
    distill(student, None, toy_splits, tmp_path / "run", "supervised", trainer=trainer)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / "run" / "checkpoints" / f".last.safetensors.mmdistill-{_host()}-{dead.pid}-abcd.tmp"
    mine = tmp_path / "run" / "checkpoints" / "notes.tmp"
    left.write_bytes(b"\0" * 100)
    mine.write_bytes(b"keep")
    _, student = models(toy_splits)
    distill(
        student,
        None,
        toy_splits,
        tmp_path / "run",
        "supervised",
        trainer=TrainerConfig(epochs=2, batch_size=64),
        resume=True,
    )
    assert not left.exists() and mine.read_bytes() == b"keep"
