"""Users' own data: MultiBench's AV-MNIST layout and the generic folder format, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.data import build_splits
from mmdistill.errors import DataError

torch.set_num_threads(1)


def write_avmnist(root: Path, n_train: int = 24, n_test: int = 10, flat_image: bool = True) -> None:
    rng = np.random.default_rng(0)
    (root / "image").mkdir(parents=True)
    (root / "audio").mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        img = rng.integers(0, 256, (n, 784) if flat_image else (n, 28, 28)).astype(np.float32)
        np.save(root / "image" / f"{split}_data.npy", img)
        np.save(root / "audio" / f"{split}_data.npy", rng.integers(0, 256, (n, 112, 112)).astype(np.float32))
        np.save(root / f"{split}_labels.npy", np.arange(n) % 10)


def write_folder(root: Path, sizes=(("train", 30), ("val", 10), ("test", 10)), classes: int = 3) -> None:
    rng = np.random.default_rng(1)
    for split, n in sizes:
        (root / split).mkdir(parents=True)
        np.save(root / split / "a.npy", rng.normal(size=(n, 4)).astype(np.float32))
        np.save(root / split / "b.npy", rng.normal(size=(n, 2, 3)))
        np.save(root / split / "labels.npy", np.arange(n) % classes)


def test_avmnist_layout_loads_with_multibench_shapes_and_scaling(tmp_path):
    write_avmnist(tmp_path)
    splits = build_splits("avmnist", {"root": str(tmp_path), "val_fraction": 0.25}, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 10)
    specs = {s.name: s.shape for s in splits.train.specs()}
    assert specs == {"image": (1, 28, 28), "audio": (1, 112, 112)}
    assert 0.0 <= float(splits.train.tensors["image"].min()) and float(splits.train.tensors["image"].max()) <= 1.0
    # validation is the last rows of the training file, as in MultiBench
    raw = np.load(tmp_path / "train_labels.npy")
    assert splits.val.labels.tolist() == raw[-6:].tolist()


def test_avmnist_accepts_unflattened_images(tmp_path):
    write_avmnist(tmp_path, flat_image=False)
    splits = build_splits("avmnist", {"root": str(tmp_path), "val_fraction": 0.25})
    assert splits.test.tensors["image"].shape == (10, 1, 28, 28)


def test_avmnist_missing_audio_file_names_it(tmp_path):
    write_avmnist(tmp_path)
    (tmp_path / "audio" / "test_data.npy").unlink()
    with pytest.raises(DataError, match=r"audio/test_data\.npy: file not found"):
        build_splits("avmnist", {"root": str(tmp_path)})


def test_folder_format_loads_all_modalities(tmp_path):
    write_folder(tmp_path)
    splits = build_splits("folder", {"root": str(tmp_path)})
    assert {s.name: s.shape for s in splits.train.specs()} == {"a": (4,), "b": (2, 3)}
    assert splits.train.tensors["b"].dtype == torch.float32
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 10)
    assert splits.num_classes == 3


def test_folder_without_val_carves_a_seeded_stratified_validation_split(tmp_path):
    write_folder(tmp_path, sizes=(("train", 30), ("test", 9)))
    a = build_splits("folder", {"root": str(tmp_path), "val_fraction": 0.2}, seed=3)
    b = build_splits("folder", {"root": str(tmp_path), "val_fraction": 0.2}, seed=3)
    assert len(a.val) == 6 and sorted(a.val.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert a.train.fingerprint() == b.train.fingerprint()


def test_folder_as_single_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        f"{s}/{k}": v
        for s in ("train", "test")
        for k, v in (("x", rng.normal(size=(12, 3))), ("labels", np.arange(12) % 2))
    }
    np.savez(tmp_path / "d.npz", **arrays)
    (tmp_path / "d.json").write_text(json.dumps({"num_classes": 2}))
    splits = build_splits("folder", {"root": str(tmp_path / "d.npz"), "val_fraction": 0.25})
    assert splits.num_classes == 2 and len(splits.test) == 12


def test_unpaired_modalities_are_paired_within_class(tmp_path):
    rng = np.random.default_rng(0)
    for split, n_a, n_b in (("train", 20, 7), ("test", 6, 5)):
        (tmp_path / split).mkdir()
        ya, yb = np.arange(n_a) % 2, np.arange(n_b) % 2
        np.save(tmp_path / split / "a.npy", ya[:, None] + 0.01 * rng.normal(size=(n_a, 1)))
        np.save(tmp_path / split / "labels_a.npy", ya)
        np.save(tmp_path / split / "b.npy", 10.0 * yb[:, None] + np.arange(n_b)[:, None] / 100)  # b encodes its class
        np.save(tmp_path / split / "labels_b.npy", yb)
    (tmp_path / "meta.json").write_text(json.dumps({"paired": False}))
    splits = build_splits("folder", {"root": str(tmp_path), "val_fraction": 0.25}, seed=0)
    for part in (splits.train, splits.val, splits.test):
        assert torch.equal((part.tensors["b"][:, 0] // 10).long(), part.labels)
    assert len(splits.train) + len(splits.val) == 20
    again = build_splits("folder", {"root": str(tmp_path), "val_fraction": 0.25}, seed=0)
    assert torch.equal(again.train.tensors["b"], splits.train.tensors["b"])


def test_missing_modality_file_in_a_split_is_named(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "test" / "b.npy").unlink()
    with pytest.raises(DataError, match=r"split 'test': modality 'b' missing .*test/labels\.npy"):
        build_splits("folder", {"root": str(tmp_path)})


def test_mismatched_example_counts_name_file_and_shape(tmp_path):
    write_folder(tmp_path)
    np.save(tmp_path / "train" / "b.npy", np.zeros((29, 2, 3)))
    with pytest.raises(
        DataError, match=r"train/b\.npy: modality 'b' has 29 examples \(shape \(29, 2, 3\)\), but labels have 30"
    ):
        build_splits("folder", {"root": str(tmp_path)})


def test_label_array_of_wrong_shape_is_named(tmp_path):
    write_folder(tmp_path)
    np.save(tmp_path / "val" / "labels.npy", np.zeros((10, 2), dtype=int))
    with pytest.raises(DataError, match=r"val/labels\.npy: labels must be 1-D, got shape \(10, 2\)"):
        build_splits("folder", {"root": str(tmp_path)})


def test_non_integer_labels_are_rejected(tmp_path):
    write_folder(tmp_path)
    np.save(tmp_path / "train" / "labels.npy", np.arange(30) % 3 + 0.5)
    with pytest.raises(DataError, match=r"train/labels\.npy: labels must be integers, got 0\.5 at row 0"):
        build_splits("folder", {"root": str(tmp_path)})


def test_nan_values_are_rejected_with_file_and_shape(tmp_path):
    write_folder(tmp_path)
    a = np.load(tmp_path / "test" / "a.npy")
    a[3, 1] = np.nan
    a[5, 0] = np.inf
    np.save(tmp_path / "test" / "a.npy", a)
    with pytest.raises(
        DataError, match=r"test/a\.npy: modality 'a' \(shape \(10, 4\)\) holds 2 NaN/Inf value\(s\), first in row 3"
    ):
        build_splits("folder", {"root": str(tmp_path)})


def test_empty_split_is_rejected(tmp_path):
    write_folder(tmp_path)
    for name, shape in (("a", (0, 4)), ("b", (0, 2, 3)), ("labels", (0,))):
        np.save(tmp_path / "val" / f"{name}.npy", np.zeros(shape))
    with pytest.raises(DataError, match=r"val/labels\.npy: the split is empty"):
        build_splits("folder", {"root": str(tmp_path)})


def test_class_in_test_but_not_in_train_is_rejected(tmp_path):
    write_folder(tmp_path)
    y = np.load(tmp_path / "test" / "labels.npy")
    y[0] = 7
    np.save(tmp_path / "test" / "labels.npy", y)
    with pytest.raises(DataError, match=r"test/labels\.npy: class\(es\) \[7\] appear in split 'test' but not in train"):
        build_splits("folder", {"root": str(tmp_path)})


def test_pickled_object_arrays_are_never_loaded(tmp_path):
    write_folder(tmp_path)
    np.save(tmp_path / "train" / "a.npy", np.array([{"x": 1}] * 30, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"train/a\.npy: cannot read without unpickling"):
        build_splits("folder", {"root": str(tmp_path)})


def test_per_example_shape_must_match_across_splits(tmp_path):
    write_folder(tmp_path)
    np.save(tmp_path / "test" / "a.npy", np.zeros((10, 5), dtype=np.float32))
    with pytest.raises(DataError, match=r"test/a\.npy: per-example shape \(5,\) differs from train's \(4,\)"):
        build_splits("folder", {"root": str(tmp_path)})
