"""The folder format stays on disk: same batches, fingerprints and means as in memory, bounded RSS."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.data import build_splits
from mmdistill.data.contracts.dataset import MultimodalDataset
from mmdistill.data.formats import ondisk
from mmdistill.data.formats.ondisk import DiskArray
from mmdistill.errors import DataError


def write_folder(root: Path, n: int = 40, val: bool = True) -> None:
    rng = np.random.default_rng(0)
    for split, rows in (("train", n), ("val", n // 4), ("test", n // 4)):
        if split == "val" and not val:
            continue
        (root / split).mkdir(parents=True)
        np.save(root / split / "a.npy", rng.normal(size=(rows, 5)))  # float64 on disk, float32 in batches
        np.save(root / split / "b.npy", rng.integers(0, 9, size=(rows, 2, 3)).astype(np.int16))
        np.save(root / split / "t.npy", rng.integers(0, 50, size=(rows, 7)))
        np.save(root / split / "labels.npy", np.arange(rows) % 4)
    (root / "meta.json").write_text('{"tokens": ["t"]}')


def in_memory(ds: MultimodalDataset) -> MultimodalDataset:
    return MultimodalDataset(dict(ds.tensors), ds.labels, ds.num_classes, ds.name)


def test_folder_splits_keep_modalities_on_disk(tmp_path):
    write_folder(tmp_path)
    splits = build_splits("folder", {"root": str(tmp_path)})
    for part in (splits.train, splits.val, splits.test):
        assert part.on_disk
        assert all(isinstance(c, DiskArray) for c in part._columns.values())


def test_on_disk_batches_equal_in_memory_batches(tmp_path):
    write_folder(tmp_path)
    ds = build_splits("folder", {"root": str(tmp_path)}).train
    ref = in_memory(ds)
    rows = [7, 0, 31, 7, 12]
    got, want = ds.__getitems__(rows), ref.__getitems__(rows)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert got["a"].dtype == torch.float32 and got["t"].dtype == torch.int64
    assert torch.equal(got["a"], torch.from_numpy(np.load(tmp_path / "train" / "a.npy")[rows].astype(np.float32)))


def test_on_disk_fingerprint_equals_in_memory_fingerprint_across_chunks(tmp_path, monkeypatch):
    write_folder(tmp_path)
    ds = build_splits("folder", {"root": str(tmp_path)}).train
    monkeypatch.setattr(ondisk, "CHUNK_BYTES", 50)  # several chunks per column
    assert ds.fingerprint() == in_memory(ds).fingerprint()


def test_on_disk_feature_mean_matches_in_memory_mean(tmp_path, monkeypatch):
    write_folder(tmp_path)
    ds = build_splits("folder", {"root": str(tmp_path)}).train
    monkeypatch.setattr(ondisk, "CHUNK_BYTES", 64)
    got, want = ds.feature_mean(), in_memory(ds).feature_mean()
    assert got.keys() == want.keys() == {"a", "b"}
    for k in want:
        torch.testing.assert_close(got[k], want[k])


def test_subset_of_on_disk_dataset_is_a_row_view_of_the_same_file(tmp_path):
    write_folder(tmp_path)
    ds = build_splits("folder", {"root": str(tmp_path)}).train
    sub = ds.subset([3, 1, 4, 1, 5])
    assert sub._columns["a"].file is ds._columns["a"].file
    assert sub._columns["a"].rows.tolist() == [3, 1, 4, 1, 5]
    subsub = sub.subset([4, 0])
    assert subsub._columns["a"].rows.tolist() == [5, 3]
    assert torch.equal(subsub.__getitems__([0, 1])["a"], ds.__getitems__([5, 3])["a"])
    assert torch.equal(sub.labels, ds.labels[[3, 1, 4, 1, 5]])


def test_carved_validation_split_is_a_view_with_the_stratified_rows(tmp_path):
    write_folder(tmp_path, val=False)
    splits = build_splits("folder", {"root": str(tmp_path), "val_fraction": 0.25}, seed=2)
    raw = np.load(tmp_path / "train" / "a.npy").astype(np.float32)
    rows = splits.val._columns["a"].rows
    assert len(rows) == 8 and splits.val._columns["a"].file is splits.train._columns["a"].file
    assert torch.equal(splits.val.tensors["a"], torch.from_numpy(raw[rows]))
    assert not set(rows) & set(splits.train._columns["a"].rows)


def test_on_disk_dataset_survives_pickling(tmp_path):
    write_folder(tmp_path)
    ds = build_splits("folder", {"root": str(tmp_path)}).val
    back = pickle.loads(pickle.dumps(ds))
    assert back.on_disk and back.fingerprint() == ds.fingerprint()
    assert torch.equal(back.__getitems__([2, 0])["b"], ds.__getitems__([2, 0])["b"])


def test_nan_in_a_later_chunk_is_found_with_its_row(tmp_path, monkeypatch):
    write_folder(tmp_path)
    a = np.load(tmp_path / "train" / "a.npy")
    a[33, 2] = np.nan
    np.save(tmp_path / "train" / "a.npy", a)
    monkeypatch.setattr(ondisk, "CHUNK_BYTES", 80)
    with pytest.raises(
        DataError, match=r"train/a\.npy: modality 'a' \(shape \(40, 5\)\) holds 1 NaN/Inf value\(s\), first in row 33"
    ):
        build_splits("folder", {"root": str(tmp_path)})


def test_float64_values_that_overflow_float32_are_rejected(tmp_path):
    write_folder(tmp_path)
    a = np.load(tmp_path / "test" / "a.npy")
    a[4, 0] = 1e300
    np.save(tmp_path / "test" / "a.npy", a)
    with pytest.raises(DataError, match=r"test/a\.npy: .* holds 1 NaN/Inf value\(s\), first in row 4"):
        build_splits("folder", {"root": str(tmp_path)})


def test_truncated_npy_file_is_named(tmp_path):
    write_folder(tmp_path)
    path = tmp_path / "train" / "a.npy"
    path.write_bytes(path.read_bytes()[:-17])
    with pytest.raises(DataError, match=r"train/a\.npy: not a readable numpy file"):
        build_splits("folder", {"root": str(tmp_path)})


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


def test_rows_in_any_order_with_repeats_equal_numpy_fancy_indexing(tmp_path):
    x = np.arange(60, dtype=np.float64).reshape(20, 3)
    np.save(tmp_path / "x.npy", x)
    col = DiskArray.of(np.load(tmp_path / "x.npy", mmap_mode="r"))
    for rows in ([5], [19, 0, 3, 4, 5, 3, 19], list(range(20)), [7, 7, 7], []):
        assert torch.equal(col.take(np.array(rows, dtype=np.int64)), torch.from_numpy(x[rows].astype(np.float32)))
    view = col.subset([9, 2, 2])
    assert torch.equal(view.take([2, 0]), torch.from_numpy(x[[2, 9]].astype(np.float32)))
    with pytest.raises(IndexError):
        col.take([20])


def test_file_truncated_after_loading_is_reported_when_read(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((100, 8), dtype=np.float32))
    col = DiskArray.of(np.load(tmp_path / "x.npy", mmap_mode="r"))
    with open(tmp_path / "x.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DataError, match=r"x\.npy: file ended at byte \d+; .*truncated"):
        col.take([99])


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_an_epoch_over_a_48_mib_file_keeps_rss_bounded(tmp_path):
    """Every row read once in shuffled batches: RSS grows by far less than the file's size."""
    np.save(tmp_path / "x.npy", np.ones((12288, 1024), dtype=np.float32))
    col = DiskArray.of(np.load(tmp_path / "x.npy", mmap_mode="r"))
    batches = np.array_split(np.random.default_rng(0).permutation(len(col)), 96)
    assert float(torch.ones(128, 1024).sum()) == 128 * 1024  # warm up torch's kernels, not the file
    before, peak = _rss_kib(), 0
    for idx in batches:
        assert float(col.take(idx).sum()) == idx.size * 1024
        peak = max(peak, _rss_kib() - before)
    assert peak < 12 << 10, f"RSS grew by {peak} KiB over a 48 MiB epoch"
