"""The teacher cache's storage options: ``cache.dtype`` (float16 / bfloat16 files read back as float32) and
``cache.top_k`` (the K largest logits, their indices and one fill value for the remaining mass)."""

from __future__ import annotations

import pytest
import torch

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.engine.teacher import CacheStorage, TeacherTable, decoded_logits
from mmdistill.errors import ConfigError
from mmdistill.kl import kd_loss


def table_of(storage: CacheStorage, logits: torch.Tensor) -> TeacherTable:
    encoded = storage.encode({"logits": logits, "feature.h": logits * 2})
    return TeacherTable(encoded, logits.shape[1])


def lookup(table: TeacherTable, rows) -> torch.Tensor:
    return table.lookup({"index": torch.as_tensor(rows)}, torch.device("cpu")).logits


def test_top_k_equal_to_the_class_count_gives_the_logits_back_and_full_kd():
    g = torch.Generator().manual_seed(0)
    logits, student = torch.randn(32, 10, generator=g) * 3, torch.randn(32, 10, generator=g)
    back = lookup(table_of(CacheStorage(top_k=10), logits), range(32))
    assert torch.equal(back, logits)
    torch.testing.assert_close(kd_loss(student, back, 4.0), kd_loss(student, logits, 4.0), rtol=1e-6, atol=1e-7)


def test_top_k_keeps_the_k_probabilities_and_the_remaining_mass_exactly():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 20, generator=g) * 2
    back = lookup(table_of(CacheStorage(top_k=3), logits), range(16))
    p, q = logits.softmax(1), back.softmax(1)
    top = logits.topk(3, dim=1).indices
    torch.testing.assert_close(q.gather(1, top), p.gather(1, top))
    rest = torch.ones_like(p).scatter(1, top, 0.0).bool()
    torch.testing.assert_close((q * rest).sum(1), (p * rest).sum(1))
    others = back[rest].view(16, 17)
    assert torch.equal(others, others[:, :1].expand_as(others))  # the remaining mass spread evenly


def test_float16_and_bfloat16_columns_come_back_as_float32_within_their_rounding():
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(2))
    for dtype, tol in (("float16", 1e-3), ("bfloat16", 1e-2)):
        table = table_of(CacheStorage(dtype=dtype), logits)
        out = table.lookup({"index": torch.arange(8)}, torch.device("cpu"))
        assert out.logits.dtype == torch.float32 and out.features["h"].dtype == torch.float32
        torch.testing.assert_close(out.logits, logits, rtol=tol, atol=tol)
        assert not torch.equal(out.logits, logits)


def test_decoded_logits_put_each_value_at_its_class():
    values, indices = torch.tensor([[5.0, 4.0]]), torch.tensor([[3, 0]], dtype=torch.int32)
    assert decoded_logits(values, indices, torch.tensor([-1.0]), 4).tolist() == [[4.0, -1.0, -1.0, 5.0]]


def run(tmp_path, name, cache: CacheConfig, memory_mb: str | None = None, monkeypatch=None):
    from mmdistill.data import build_splits
    from mmdistill.engine.api import distill
    from mmdistill.models import build_model

    data = build_splits("toy-two-modality", {"n": 120})
    specs = data.train.specs()
    torch.manual_seed(0)
    teacher = build_model({"modalities": ["a", "b"], "encoder": {"hidden": [8], "out_dim": 8}}, specs, data.num_classes)
    student = build_model({"modalities": ["b"], "encoder": {"hidden": [8], "out_dim": 8}}, specs, data.num_classes)
    if monkeypatch is not None and memory_mb is not None:
        monkeypatch.setenv("MMDISTILL_CACHE_MEMORY_MB", memory_mb)
    distill(
        student, teacher, data, tmp_path / name, "kd", {"temperature": 4.0, "lam": 0.5}, quiet=True, cache=cache,
        trainer=TrainerConfig(epochs=1, batch_size=16),
    )  # fmt: skip
    return student.state_dict(), data.num_classes


def test_a_run_with_top_k_equal_to_c_trains_the_same_student_as_the_full_cache(tmp_path, monkeypatch):
    full, classes = run(tmp_path, "full", CacheConfig(dir=tmp_path / "cache"))
    top, _ = run(tmp_path, "top", CacheConfig(dir=tmp_path / "cache", top_k=classes))
    assert all(torch.equal(full[k], top[k]) for k in full)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2  # its own file, its own key
    on_disk, _ = run(tmp_path, "disk", CacheConfig(dir=tmp_path / "cache", top_k=classes), "0", monkeypatch)
    assert all(torch.equal(full[k], on_disk[k]) for k in full)
    half, _ = run(tmp_path, "bf16", CacheConfig(dir=tmp_path / "cache", dtype="bfloat16"), "0", monkeypatch)
    assert any(not torch.equal(full[k], half[k]) for k in full)  # read from the bfloat16 file on disk


def test_bad_cache_storage_settings_are_one_line_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^cache\.top_k: 50 is above the data's \d+ classes"):
        run(tmp_path, "many", CacheConfig(dir=tmp_path / "cache", top_k=50))
    assert not (tmp_path / "many").exists() and not list((tmp_path / "cache").glob("*.safetensors"))
    with pytest.raises(ConfigError, match=r"cache\.top_k"):
        CacheConfig(top_k=0)
    with pytest.raises(ConfigError, match=r"cache\.dtype"):
        CacheConfig(dtype="int8")
    with pytest.raises(ConfigError, match=r"cache\.top_k: 3 is above the teacher's 2 classes"):
        CacheStorage(top_k=3).encode({"logits": torch.zeros(4, 2)})


class PidImages(torch.utils.data.Dataset):
    """Images whose reads note the reading process in ``log`` (to see the DataLoader workers at work)."""

    num_classes = 3

    def __init__(self, n: int, log) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y, self.log = torch.randn(n, 6, generator=g), torch.arange(n) % 3, log

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        import os

        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return {"a": self.x[i], "label": self.y[i]}

    def fingerprint(self) -> str:
        return "pid-images"


def test_the_cache_of_an_item_dataset_is_built_by_the_dataloader_workers_with_the_same_outputs(tmp_path):
    import os

    from mmdistill.data.contracts.item_dataset import ItemDataset
    from mmdistill.engine.teacher import compute_table
    from mmdistill.methods.base import TeacherRequest
    from mmdistill.models import build_model

    split = ItemDataset(PidImages(50, tmp_path / "reads.log"), "train")
    teacher = build_model({"modalities": ["a"], "encoder": {"hidden": [8], "out_dim": 8}}, split.specs(), 3).eval()
    request, cpu = TeacherRequest(features=("encoders.a.body.0",)), torch.device("cpu")
    (tmp_path / "reads.log").write_text("")
    here = compute_table(teacher, split, request, None, 16, cpu).tensors
    assert set((tmp_path / "reads.log").read_text().split()) == {str(os.getpid())}
    (tmp_path / "reads.log").write_text("")
    workers = compute_table(teacher, split, request, None, 16, cpu, TrainerConfig(num_workers=2)).tensors
    readers = set((tmp_path / "reads.log").read_text().split())
    assert str(os.getpid()) not in readers and len(readers) == 2
    assert here.keys() == workers.keys() and all(torch.equal(here[k], workers[k]) for k in here)
