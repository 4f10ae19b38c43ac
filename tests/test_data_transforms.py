"""Item transforms (crop, flip, noise) and the file-backed dataset base: behaviour and bad input."""

from __future__ import annotations

import pytest
import torch

from mmdistill.data.contracts.transforms import (
    AdditiveNoise,
    CenterCrop,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    transform_is_random,
)
from mmdistill.data.formats.file_dataset import FileDataset, split_transforms
from mmdistill.errors import ConfigError, DataError

torch.set_num_threads(1)


def item(h: int = 6, w: int = 8) -> dict[str, torch.Tensor]:
    grid = torch.arange(h * w, dtype=torch.float32).view(h, w)
    return {
        "rgb": torch.stack([grid, grid + 100, grid + 200]),
        "video": torch.stack([grid[None].expand(3, h, w) + 1000 * t for t in range(2)]),  # (T, C, H, W)
        "audio": torch.zeros(1, 40, 50),
        "label": grid.long(),
    }


def test_crop_takes_the_same_window_from_every_key_and_the_label_map():
    x = item()
    torch.manual_seed(0)
    out = RandomCrop((3, 4), keys=("rgb", "video"))(x)
    top, left = divmod(int(out["label"][0, 0]), 8)
    assert out["rgb"].shape == (3, 3, 4) and out["video"].shape == (2, 3, 3, 4) and out["label"].shape == (3, 4)
    assert torch.equal(out["rgb"], x["rgb"][:, top : top + 3, left : left + 4])
    assert torch.equal(out["video"], x["video"][..., top : top + 3, left : left + 4])
    assert torch.equal(out["audio"], x["audio"])  # not named: untouched
    assert torch.equal(x["rgb"], item()["rgb"])  # the input item is not modified


def test_label_false_leaves_the_label_map_alone():
    x = item()
    out = RandomHorizontalFlip("rgb", p=1.0, label=False)(x)
    assert torch.equal(out["rgb"], x["rgb"].flip(-1)) and torch.equal(out["label"], x["label"])
    out = RandomHorizontalFlip("rgb", p=1.0)(x)
    assert torch.equal(out["label"], x["label"].flip(-1))
    assert RandomHorizontalFlip("rgb", p=0.0)(x) is x


def test_center_crop_is_deterministic_and_not_random():
    out = CenterCrop(4, keys="rgb")(item())
    assert torch.equal(out["label"], item()["label"][1:5, 2:6])
    assert not transform_is_random(CenterCrop(4, keys="rgb"))


def test_randomness_flags():
    assert transform_is_random(RandomCrop(2, "rgb")) and transform_is_random(AdditiveNoise("audio", 1.0))
    assert not transform_is_random(None)
    assert transform_is_random(lambda it: it)  # a callable that does not say is assumed random
    assert not Compose([CenterCrop(2, "rgb")]).random and Compose([CenterCrop(2, "rgb"), RandomCrop(1, "rgb")]).random


def test_noise_is_seeded_by_torch():
    torch.manual_seed(3)
    a = AdditiveNoise("audio", 2.0)(item())["audio"]
    torch.manual_seed(3)
    assert torch.equal(a, AdditiveNoise("audio", 2.0)(item())["audio"])
    assert 1.5 < a.std().item() < 2.5


def test_bad_input_is_named():
    x = item()
    x["rgb"] = x["rgb"][:, :5]
    with pytest.raises(DataError, match=r"sizes differ across the item \(rgb 5x8, video 6x8, label 6x8\)"):
        RandomCrop(2, keys=("rgb", "video"))(x)
    with pytest.raises(DataError, match=r"item has no modality 'depth'; it has 'rgb'"):
        RandomHorizontalFlip(("rgb", "depth"))(item())
    with pytest.raises(DataError, match=r"crop 7x4 is larger than the image 6x8"):
        RandomCrop((7, 4), "rgb")(item())
    with pytest.raises(DataError, match=r"modality 'label' has dtype torch.int64; expected floats"):
        AdditiveNoise("label", 1.0)(item())
    with pytest.raises(ConfigError, match=r"RandomCrop.size"):
        RandomCrop((0, 3), "rgb")
    with pytest.raises(ConfigError, match=r"RandomHorizontalFlip.keys"):
        RandomHorizontalFlip(())
    with pytest.raises(ConfigError, match=r"AdditiveNoise.std"):
        AdditiveNoise("audio", -1.0)


class Squares(FileDataset):
    modalities = ("x",)

    def __len__(self) -> int:
        return 3

    def load(self, index: int):
        return {"x": torch.tensor([float(index)]), "label": torch.tensor(index)}


def test_file_dataset_indexing_and_transform():
    ds = Squares()
    assert ds[-1]["label"] == 2 and not ds.random
    with pytest.raises(IndexError, match="index 3 out of range for a split of 3 items"):
        ds[3]
    with pytest.raises(TypeError):
        ds["0"]
    noisy = Squares(AdditiveNoise("x", 1.0))
    assert noisy.random and noisy[0]["x"] != 0.0
    with pytest.raises(ConfigError, match="transform: expected a callable"):
        Squares("flip")
    with pytest.raises(ConfigError, match=r"transforms: unknown split 'training'; valid: train, val, test"):
        split_transforms({"training": CenterCrop(2, "x")})
