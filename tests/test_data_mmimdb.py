"""MM-IMDB in MultiBench's HDF5 layout: items, splits by index, lazy per-process h5py handles, bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.data.contracts.transforms import AdditiveNoise
from mmdistill.data.formats.mmimdb import mmimdb_splits
from mmdistill.errors import DataError
from mmdistill.tasks import get_task

h5py = pytest.importorskip("h5py")
torch.set_num_threads(1)

N, BOUNDS = 12, (6, 9, 12)


def write_mmimdb(path: Path, n: int = N, **override) -> dict[str, np.ndarray]:
    """A small file in MultiBench's layout; ``override`` replaces (or with None drops) a key."""
    rng = np.random.default_rng(0)
    genres = (rng.random((n, 23)) < 0.2).astype(np.int64)
    genres[:, 0] = 1  # every movie has a genre
    arrays = {
        "features": rng.normal(size=(n, 300)).astype(np.float32),
        "vgg_features": rng.normal(size=(n, 4096)).astype(np.float32),
        "images": rng.integers(0, 256, (n, 3, 256, 160)).astype(np.uint8),
        "genres": genres,
    }
    arrays.update(override)
    with h5py.File(path, "w") as f:
        for key, arr in arrays.items():
            if arr is not None:
                f.create_dataset(key, data=arr)
    return arrays


@pytest.fixture
def imdb(tmp_path):
    path = tmp_path / "multimodal_imdb.hdf5"
    return path, write_mmimdb(path)


def test_items_round_trip_with_contract_dtypes_and_split_by_index(imdb):
    path, arrays = imdb
    splits = mmimdb_splits(path, {"text": "features", "image": "images", "vgg": "vgg_features"}, boundaries=BOUNDS)
    assert [len(s) for s in splits] == [6, 3, 3]
    test = splits.test
    assert test.task == "multilabel" and test.num_classes == 23 and test.modalities == ("text", "image", "vgg")
    assert test.random is False
    item = test[1]  # row 10 of the file
    assert set(item) == {"text", "image", "vgg", "label"}
    assert all(v.dtype == torch.float32 for v in item.values())
    assert item["image"].shape == (3, 256, 160) and item["label"].shape == (23,)
    np.testing.assert_array_equal(item["text"].numpy(), arrays["features"][10])
    np.testing.assert_array_equal(item["vgg"].numpy(), arrays["vgg_features"][10])
    np.testing.assert_allclose(item["image"].numpy(), arrays["images"][10] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(item["label"].numpy(), arrays["genres"][10])
    assert torch.equal(splits.train[0]["text"], torch.from_numpy(arrays["features"][0]))
    assert torch.equal(splits.val[-1]["label"], torch.from_numpy(arrays["genres"][8].astype(np.float32)))


def test_folder_root_and_default_modalities(imdb):
    path, _ = imdb
    splits = mmimdb_splits(path.parent, boundaries=BOUNDS)
    assert splits.train.modalities == ("text", "image") and splits.train[0]["image"].shape == (4096,)


def test_building_is_lazy_and_the_handle_never_crosses_processes(imdb):
    path, _ = imdb
    train = mmimdb_splits(path, {"image": "images"}, boundaries=BOUNDS).train
    assert train._file is None  # building read shapes and genres only, and closed the file
    size = len(pickle.dumps(train))
    assert size < 5000, f"a pickled split carries data ({size} bytes)"
    train[0]
    assert train._file is not None
    clone = pickle.loads(pickle.dumps(train))
    assert clone._file is None and torch.equal(clone[2]["image"], train[2]["image"])
    train._pid = -1  # as a forked worker sees it: the parent's handle is not reused
    old = train._file
    train[0]
    assert train._file is not old
    train.close()
    old.close()


def test_dataloader_with_two_workers_matches_direct_reads(imdb):
    path, _ = imdb
    train = mmimdb_splits(path, {"text": "features", "image": "images"}, boundaries=BOUNDS).train
    train[0]  # the parent holds an open handle when the workers fork
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=2)
    batches = list(loader)
    assert [b["label"].shape for b in batches] == [(4, 23), (2, 23)]
    get_task("multilabel").check_target(batches[0]["label"], train.num_classes)  # the engine's target contract
    images = torch.cat([b["image"] for b in batches])
    assert torch.equal(images, torch.stack([train[i]["image"] for i in range(len(train))]))


def test_random_transform_marks_the_split_random(imdb):
    path, _ = imdb
    splits = mmimdb_splits(path, boundaries=BOUNDS, transforms={"train": AdditiveNoise("text", 0.1)})
    assert splits.train.random and not splits.val.random
    torch.manual_seed(0)
    a = splits.train[0]["text"]
    torch.manual_seed(0)
    assert torch.equal(a, splits.train[0]["text"])  # seeded: the same noise
    raw = splits.train.load(0)["text"]
    assert 0.05 < (a - raw).std().item() < 0.2


def test_published_boundaries_need_the_full_file(imdb):
    path, _ = imdb
    with pytest.raises(DataError, match=r"12 rows.*25959.*pass boundaries"):
        mmimdb_splits(path)


@pytest.mark.parametrize("bounds", [(6, 6, 12), (6, 9, 13), (0, 9, 12), (6, 9)])
def test_bad_boundaries(imdb, bounds):
    with pytest.raises(DataError, match="boundaries"):
        mmimdb_splits(imdb[0], boundaries=bounds)


def test_missing_file_and_corrupt_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.hdf5: MM-IMDB file not found"):
        mmimdb_splits(tmp_path / "nothere.hdf5", boundaries=BOUNDS)
    bad = tmp_path / "multimodal_imdb.hdf5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(DataError, match=r"multimodal_imdb\.hdf5: not a readable HDF5 file"):
        mmimdb_splits(bad, boundaries=BOUNDS)


def test_missing_key_is_named_with_the_keys_present(tmp_path):
    path = tmp_path / "m.hdf5"
    write_mmimdb(path, vgg_features=None)
    with pytest.raises(DataError, match=r"key 'vgg_features' not found; keys present: features, genres, images"):
        mmimdb_splits(path, boundaries=BOUNDS)
    assert mmimdb_splits(path, {"text": "features"}, boundaries=BOUNDS).train[0]["text"].shape == (300,)


@pytest.mark.parametrize(
    "key, arr, message",
    [
        ("features", np.zeros((N, 299), np.float32), r"'features' has shape \(12, 299\); expected \(N, 300\)"),
        ("images", np.zeros((N, 3, 160, 256), np.uint8), r"'images' has shape .*expected \(N, 3, 256, 160\)"),
        ("genres", np.zeros((N, 22), np.int64), r"'genres' has shape \(12, 22\); expected \(N, 23\)"),
        ("vgg_features", np.zeros((N + 1, 4096), np.float32), r"different row counts.*vgg_features 13"),
    ],
)
def test_wrong_shapes_are_named(tmp_path, key, arr, message):
    path = tmp_path / "m.hdf5"
    write_mmimdb(path, **{key: arr})
    with pytest.raises(DataError, match=message):
        mmimdb_splits(path, {"text": "features", "image": "images", "v": "vgg_features"}, boundaries=BOUNDS)


def test_genres_must_be_multi_hot(tmp_path):
    path = tmp_path / "m.hdf5"
    genres = np.zeros((N, 23), np.int64)
    genres[4, 7] = 2
    write_mmimdb(path, genres=genres)
    with pytest.raises(DataError, match=r"multi-hot.*row 4, genre 7 is 2"):
        mmimdb_splits(path, boundaries=BOUNDS)


def test_non_finite_features_are_named_at_read(tmp_path):
    path = tmp_path / "m.hdf5"
    feats = np.zeros((N, 300), np.float32)
    feats[3, 5] = np.nan
    write_mmimdb(path, features=feats)
    train = mmimdb_splits(path, boundaries=BOUNDS).train
    train[2]
    with pytest.raises(DataError, match=r"'features' row 3 holds NaN"):
        train[3]


@pytest.mark.parametrize("name", ["label", "index", "text_mask"])
def test_reserved_modality_names(imdb, name):
    with pytest.raises(
        DataError, match=rf"modalities\.{name}: 'label', 'index' and names ending in '_mask' are reserved"
    ):
        mmimdb_splits(imdb[0], {name: "features"}, boundaries=BOUNDS)


def test_unknown_modality_key(imdb):
    with pytest.raises(DataError, match=r"modalities\.image: unknown MM-IMDB key 'pixels'; valid: features, images"):
        mmimdb_splits(imdb[0], {"image": "pixels"}, boundaries=BOUNDS)
