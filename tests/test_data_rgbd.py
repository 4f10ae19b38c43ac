"""RGB-D segmentation folders (the NYU Depth V2 redistribution layout) and the procedural scene generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmdistill.data.contracts.transforms import Compose, RandomCrop, RandomHorizontalFlip
from mmdistill.data.formats.rgbd_folder import rgbd_folder_splits
from mmdistill.data.generated.rgbd_scenes import (
    CLASSES,
    MARKER,
    generate_rgbd_scenes,
    pixel_probe_miou,
    rgbd_scene_splits,
    write_rgbd_scenes,
)
from mmdistill.errors import DataError, OutputExistsError
from mmdistill.tasks import get_task

torch.set_num_threads(1)


def write_folder(root: Path, n: int = 5, h: int = 6, w: int = 8, classes: int = 4) -> dict[str, np.ndarray]:
    """``n`` examples in the rgb/depth/label layout: train = first 3, val = 4th, test = 5th."""
    rng = np.random.default_rng(0)
    arrays = {
        "rgb": rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8),
        "depth": rng.integers(0, 65536, (n, h, w)).astype(np.uint16),
        "label": rng.integers(0, classes, (n, h, w)).astype(np.uint8),
    }
    arrays["label"][:, 0, 0] = 255
    for k in arrays:
        (root / k).mkdir(parents=True, exist_ok=True)
    stems = [f"img{i}" for i in range(n)]
    for i, s in enumerate(stems):
        for k, arr in arrays.items():
            Image.fromarray(arr[i]).save(root / k / f"{s}.png")
    (root / "train.txt").write_text("\n".join(stems[:3]) + "\n\n")
    (root / "val.txt").write_text(stems[3] + "\n")
    (root / "test.txt").write_text(stems[4])
    return arrays


@pytest.fixture
def folder(tmp_path):
    return tmp_path, write_folder(tmp_path)


def test_items_round_trip_with_depth_in_metres(folder):
    root, arrays = folder
    splits = rgbd_folder_splits(root, num_classes=4)
    assert [len(s) for s in splits] == [3, 1, 1]
    ds = splits.train
    assert ds.task == "segmentation" and ds.modalities == ("rgb", "depth") and ds.num_classes == 4
    assert ds.ignore_index == 255 and ds.random is False
    item = ds[2]
    assert set(item) == {"rgb", "depth", "label"}
    assert item["rgb"].dtype == item["depth"].dtype == torch.float32 and item["label"].dtype == torch.int64
    assert item["rgb"].shape == (3, 6, 8) and item["depth"].shape == (1, 6, 8) and item["label"].shape == (6, 8)
    np.testing.assert_allclose(item["rgb"].permute(1, 2, 0).numpy(), arrays["rgb"][2] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(item["depth"][0].numpy(), arrays["depth"][2] / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(item["label"].numpy(), arrays["label"][2])
    assert item["label"][0, 0] == 255
    scaled = rgbd_folder_splits(root, num_classes=4, depth_scale=1e-4).test[0]["depth"]
    np.testing.assert_allclose(scaled[0].numpy(), arrays["depth"][4] * 1e-4, rtol=1e-6)


def test_dataloader_with_two_workers(folder):
    root, arrays = folder
    train = rgbd_folder_splits(root, num_classes=4).train
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=3, num_workers=2)))
    assert batch["rgb"].shape == (3, 3, 6, 8) and batch["label"].shape == (3, 6, 8)
    np.testing.assert_array_equal(batch["label"].numpy(), arrays["label"][:3])
    get_task("segmentation").check_target(batch["label"], train.num_classes)  # the engine's target contract


def test_seeded_crop_and_flip_move_image_depth_and_label_together(folder):
    root, _ = folder
    aug = Compose([RandomCrop((4, 5), keys=("rgb", "depth")), RandomHorizontalFlip(("rgb", "depth"), p=0.5)])
    splits = rgbd_folder_splits(root, num_classes=4, transforms={"train": aug})
    train = splits.train
    assert train.random and not splits.val.random
    raw = train.load(0)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        item = train[0]
        torch.manual_seed(seed)
        again = train[0]
        assert all(torch.equal(item[k], again[k]) for k in item)  # reproducible from torch's seed
        assert item["rgb"].shape == (3, 4, 5) and item["depth"].shape == (1, 4, 5) and item["label"].shape == (4, 5)
        found = False
        for flip in (False, True):  # the same window, flipped or not, in all three maps
            cand = {k: raw[k].flip(-1) if flip else raw[k] for k in raw}
            for top in range(3):
                for left in range(4):
                    win = {k: v[..., top : top + 4, left : left + 5] for k, v in cand.items()}
                    if all(torch.equal(win[k], item[k]) for k in item):
                        found = True
                        seen.add((flip, top, 3 - left if flip else left))  # where the crop was taken
        assert found
    assert len({t for _, t, _ in seen}) > 1 and len({left for _, _, left in seen}) > 1  # the window moves
    assert {f for f, _, _ in seen} == {False, True}


def test_dataloader_with_workers_and_seeded_augmentation_is_reproducible(folder):
    root, _ = folder
    aug = Compose([RandomCrop(4, keys=("rgb", "depth")), RandomHorizontalFlip(("rgb", "depth"))])
    train = rgbd_folder_splits(root, num_classes=4, transforms={"train": aug}).train

    def epoch(seed):
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(train, batch_size=3, num_workers=2, generator=g)
        return torch.cat([b["label"] for b in loader])

    assert torch.equal(epoch(1), epoch(1))
    assert not all(torch.equal(epoch(1), epoch(s)) for s in (2, 3, 4))


def test_palette_label_pngs_give_their_indices(folder):
    root, arrays = folder
    pal = Image.fromarray(arrays["label"][0]).convert("P")
    pal.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])  # colours are not class ids: indices are
    pal.save(root / "label" / "img0.png")
    with Image.open(root / "label" / "img0.png") as img:
        assert img.mode == "P"
    np.testing.assert_array_equal(rgbd_folder_splits(root, num_classes=4).train[0]["label"].numpy(), arrays["label"][0])


def test_label_map_size_mismatch_names_the_file(folder):
    root, _ = folder
    Image.fromarray(np.zeros((6, 7), np.uint8)).save(root / "label" / "img1.png")
    train = rgbd_folder_splits(root, num_classes=4).train
    with pytest.raises(
        DataError, match=r"label/img1\.png: label map is 7x6 \(WxH\) but its RGB image img1\.png is 8x6"
    ):
        train[1]


def test_depth_size_mismatch_names_the_file(folder):
    root, _ = folder
    Image.fromarray(np.zeros((5, 8), np.uint16)).save(root / "depth" / "img0.png")
    with pytest.raises(DataError, match=r"depth/img0\.png: depth map is 8x5"):
        rgbd_folder_splits(root, num_classes=4).train[0]


def test_label_out_of_range_names_file_pixel_and_value(folder):
    root, arrays = folder
    lab = arrays["label"][3].copy()
    lab[2, 5] = 4
    Image.fromarray(lab).save(root / "label" / "img3.png")
    val = rgbd_folder_splits(root, num_classes=4).val
    with pytest.raises(DataError, match=r"label/img3\.png: label 4 at pixel \(row 2, col 5\).*num_classes=4"):
        val[0]
    assert rgbd_folder_splits(root, num_classes=5).val[0]["label"][2, 5] == 4


@pytest.mark.parametrize("ignore", [0, 3])
def test_ignore_index_colliding_with_a_class_is_refused(folder, ignore):
    with pytest.raises(DataError, match=rf"ignore_index={ignore} collides with a real class id \(classes are 0\.\.3\)"):
        rgbd_folder_splits(folder[0], num_classes=4, ignore_index=ignore)


def test_other_ignore_index(folder):
    root, _ = folder
    with pytest.raises(DataError, match="label 255 at pixel"):
        rgbd_folder_splits(root, num_classes=4, ignore_index=4).train[0]


def test_corrupt_png_names_the_file(folder):
    root, _ = folder
    data = (root / "rgb" / "img2.png").read_bytes()
    (root / "rgb" / "img2.png").write_bytes(data[: len(data) // 2])
    train = rgbd_folder_splits(root, num_classes=4).train
    with pytest.raises(DataError, match=r"rgb/img2\.png: not a readable RGB image, or truncated"):
        train[2]


def test_eight_bit_depth_and_grey_rgb_are_refused(folder):
    root, _ = folder
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(root / "depth" / "img0.png")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(root / "rgb" / "img1.png")
    train = rgbd_folder_splits(root, num_classes=4).train
    with pytest.raises(DataError, match=r"depth/img0\.png: 16-bit depth image has Pillow mode 'L'; expected 'I;16'"):
        train[0]
    with pytest.raises(DataError, match=r"rgb/img1\.png: RGB image has Pillow mode 'L'; expected 'RGB'"):
        train[1]


def test_missing_files_and_lists(folder):
    root, _ = folder
    (root / "depth" / "img3.png").unlink()
    with pytest.raises(DataError, match=r"depth/img3\.png: val split's file not found"):
        rgbd_folder_splits(root, num_classes=4)
    (root / "test.txt").unlink()
    (root / "val.txt").write_text("img0\n")
    with pytest.raises(DataError, match=r"test\.txt: split list not found"):
        rgbd_folder_splits(root, num_classes=4)
    (root / "test.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"test\.txt: split list is empty"):
        rgbd_folder_splits(root, num_classes=4)
    (root / "test.txt").write_text("../img0\n")
    with pytest.raises(DataError, match=r"'\.\./img0' must be a relative path"):
        rgbd_folder_splits(root, num_classes=4)
    (root / "label").rename(root / "labels")
    with pytest.raises(DataError, match=r"label: folder not found"):
        rgbd_folder_splits(root, num_classes=4)


# --- the procedural scene set ---------------------------------------------------------------------------------------


def test_scenes_are_seeded_deterministic_and_independent_of_count():
    a, b = generate_rgbd_scenes(6, size=16, seed=3), generate_rgbd_scenes(9, size=16, seed=3)
    assert all(np.array_equal(a[k], b[k][:6]) for k in a)
    c = generate_rgbd_scenes(6, size=16, seed=4)
    assert not np.array_equal(a["rgb"], c["rgb"])
    assert a["rgb"].shape == (6, 16, 16, 3) and a["depth"].dtype == np.uint16 and a["label"].dtype == np.uint8
    assert set(np.unique(a["label"])) == {0, 1, 2, 3, 255}
    clean = generate_rgbd_scenes(6, size=16, seed=3, ignore_boundary=False)["label"]
    assert 255 not in clean and np.array_equal(clean[a["label"] != 255], a["label"][a["label"] != 255])
    ring = a["label"] == 255  # unlabelled pixels sit where the clean map changes class
    changes = np.zeros_like(ring)
    changes[:, 1:, :] |= clean[:, 1:, :] != clean[:, :-1, :]
    changes[:, :-1, :] |= clean[:, 1:, :] != clean[:, :-1, :]
    changes[:, :, 1:] |= clean[:, :, 1:] != clean[:, :, :-1]
    changes[:, :, :-1] |= clean[:, :, 1:] != clean[:, :, :-1]
    assert np.array_equal(ring, changes)


def test_noise_options_and_bad_parameters():
    clean = generate_rgbd_scenes(4, size=16, rgb_noise=0.0, depth_noise=0.0)
    noisy = generate_rgbd_scenes(4, size=16, rgb_noise=0.1, depth_noise=0.2, depth_dropout=0.25)
    assert np.array_equal(clean["label"], noisy["label"])
    assert 0.2 < (noisy["depth"] == 0).mean() < 0.3 and not (clean["depth"] == 0).any()
    diff = noisy["depth"].astype(float) - clean["depth"]
    assert 150 < diff[noisy["depth"] > 0].std() < 250  # 0.2 m in millimetres
    assert 15 < (noisy["rgb"].astype(float) - clean["rgb"]).std() < 30  # 0.1 of 255, less what clipping takes
    for kw, name in [
        ({"n_scenes": 2}, "n_scenes"),
        ({"size": 4}, "size"),
        ({"depth_dropout": 1.0}, "depth_dropout"),
        ({"rgb_noise": -0.1}, "rgb_noise"),
    ]:
        with pytest.raises(DataError, match=name):
            generate_rgbd_scenes(**{"n_scenes": 4, "size": 16, **kw})


def test_near_and_far_boxes_differ_only_in_depth():
    arr = generate_rgbd_scenes(120, size=32, seed=0)
    rgb, depth, label = arr["rgb"].astype(float), arr["depth"] / 1000.0, arr["label"]
    near, far = label == 1, label == 2
    assert near.sum() > 1000 and far.sum() > 1000
    np.testing.assert_allclose(rgb[near].mean(0), rgb[far].mean(0), atol=6)  # same colours (0..255)
    assert depth[near].max() < 2.3 < depth[far].min()  # one threshold separates them
    assert (depth[label == 0] > 3.7).all()


def test_depth_carries_what_rgb_cannot_per_pixel_probe():
    arr = generate_rgbd_scenes(60, size=32, seed=0)
    kw = {"n_train": 40, "max_pixels": 6000, "steps": 60}
    rgb, depth, both = (pixel_probe_miou(arr, inputs, **kw) for inputs in (("rgb",), ("depth",), ("rgb", "depth")))
    assert both > 95  # RGB + depth: every class
    assert rgb < 80 and depth < 80  # RGB confuses near/far boxes; depth confuses balls with boxes
    assert both - rgb > 20


def test_written_scenes_load_with_the_folder_loader(tmp_path):
    out = tmp_path / "scenes"
    meta = write_rgbd_scenes(out, n_scenes=10, size=16, seed=1)
    assert meta["splits"] == {"train": 6, "val": 2, "test": 2} and (out / MARKER).is_file()
    arrays = generate_rgbd_scenes(10, size=16, seed=1)
    splits = rgbd_folder_splits(out, num_classes=len(CLASSES))
    item = splits.test[1]  # scene 9
    np.testing.assert_array_equal(item["label"].numpy(), arrays["label"][9])
    np.testing.assert_allclose(item["depth"][0].numpy(), arrays["depth"][9] / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal((item["rgb"] * 255).round().byte().permute(1, 2, 0).numpy(), arrays["rgb"][9])
    assert not list(tmp_path.glob(".scenes.partial-*"))
    memory = rgbd_scene_splits(n_scenes=10, size=16, seed=1)  # the same items without files
    assert [len(s) for s in memory] == [6, 2, 2] and memory.test.num_classes == 4 and memory.test.ignore_index == 255
    assert memory.test.task == "segmentation" and memory.test.modalities == ("rgb", "depth")
    for split, mem in zip(splits, memory):
        for i in range(len(split)):
            a, b = split[i], mem[i]
            assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in ("rgb", "depth", "label"))


def test_writer_never_touches_a_foreign_folder_and_replaces_its_own_only_when_asked(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not empty and was not made by write_rgbd_scenes"):
        write_rgbd_scenes(foreign, n_scenes=4, size=8)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    out = tmp_path / "scenes"
    write_rgbd_scenes(out, n_scenes=4, size=8, seed=0)
    with pytest.raises(OutputExistsError, match="pass overwrite=True"):
        write_rgbd_scenes(out, n_scenes=5, size=8)
    write_rgbd_scenes(out, n_scenes=5, size=8, overwrite=True)
    assert len(list((out / "rgb").iterdir())) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "scenes"]  # no partial or old folders left


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import mmdistill.data.generated.rgbd_scenes as scenes

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(scenes, "write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        write_rgbd_scenes(tmp_path / "scenes", n_scenes=4, size=8)
    assert list(tmp_path.iterdir()) == []
