"""The teacher cache is written a batch of rows at a time (its build's memory does not grow with the rows), into the
same bytes as a file written at once; the epoch's loss means keep no tensor of a step (a peak that grew with steps)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from mmdistill.engine.system import checkpoint
from mmdistill.engine.system.checkpoint import save_tensors
from mmdistill.engine.teacher import (
    CacheStorage,
    TeacherTable,
    _key_of,
    cache_description,
    cached_table,
    compute_table,
    write_table,
)
from mmdistill.engine.trainer import EpochMeans
from mmdistill.methods.base import TeacherRequest
from mmdistill.models import build_model

CPU = torch.device("cpu")


def teacher_of(splits):
    torch.manual_seed(0)
    return build_model(
        {"modalities": ["a", "b"], "encoder": {"hidden": [8], "out_dim": 8}}, splits.train.specs(), splits.num_classes
    )


@pytest.mark.parametrize("storage", [CacheStorage(), CacheStorage("float16", top_k=2)])
def test_the_streamed_cache_file_holds_the_bytes_of_one_written_at_once(toy_splits, tmp_path, storage):
    teacher, request = teacher_of(toy_splits), TeacherRequest(features=("encoders.a",))
    cached_table(teacher, toy_splits.train, request, None, tmp_path / "cache", 16, CPU, storage=storage)
    (streamed,) = (tmp_path / "cache").glob("*.safetensors")
    table = compute_table(teacher, toy_splits.train, request, None, 16, CPU)
    desc = cache_description(teacher, toy_splits.train, request, None, storage)
    state = {"rows": len(toy_splits.train), "cache_key": _key_of(desc), "cache_description": desc}
    if storage != CacheStorage():
        state["classes"] = toy_splits.num_classes
    save_tensors(tmp_path / "at_once.safetensors", storage.encode(table.tensors), state)
    assert streamed.read_bytes() == (tmp_path / "at_once.safetensors").read_bytes()
    reopened, _ = TeacherTable.open(streamed, memory_budget=0)  # its checksum verified, rows read from the file
    rows = {"index": torch.tensor([5, 0, 77])}
    expected = TeacherTable(storage.encode(table.tensors), toy_splits.num_classes).lookup(rows, CPU)
    assert torch.equal(reopened.lookup(rows, CPU).logits, expected.logits)


def test_the_build_writes_the_table_a_batch_of_rows_at_a_time(toy_splits, tmp_path, monkeypatch):
    written, real_write = [], checkpoint.RowsWriter.write

    def noted(self, name, first_row, rows):
        written.append((name, first_row, len(rows)))
        real_write(self, name, first_row, rows)

    monkeypatch.setattr(checkpoint.RowsWriter, "write", noted)
    cached_table(teacher_of(toy_splits), toy_splits.train, TeacherRequest(), None, tmp_path, 16, CPU)
    n = len(toy_splits.train)
    assert max(size for _, _, size in written) == 16
    assert [(first, size) for _, first, size in written] == [(s, min(16, n - s)) for s in range(0, n, 16)]


def test_rows_that_come_out_of_order_are_written_at_their_place(tmp_path):
    values = torch.randn(10, 3)
    order = torch.tensor([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    outputs = [(order[:4], {"logits": values[order[:4]]}), (order[4:], {"logits": values[order[4:]]})]
    write_table(str(tmp_path / "t.safetensors"), iter(outputs), 10, CacheStorage(), {"rows": 10})
    table, state = TeacherTable.open(tmp_path / "t.safetensors")
    assert torch.equal(table.tensors["logits"], values) and state == {"rows": 10}


def test_the_epochs_loss_means_keep_no_tensor_of_a_step():
    means, kept = EpochMeans(), []
    for step in range(100):
        total, term = torch.tensor(float(step)), torch.tensor(2.0 * step)
        means.add(total, {"kd": term}, examples=1 + step % 3)
        kept += [weakref.ref(total), weakref.ref(term)]
    del total, term
    gc.collect()
    assert all(ref() is None for ref in kept), "a step's values stay in memory until the epoch ends"
    counts = [1 + s % 3 for s in range(100)]
    expected = sum(c * s for c, s in zip(counts, range(100))) / sum(counts)
    assert means.result() == pytest.approx({"loss": expected, "kd": 2 * expected})
