"""Pixel rows: a segmentation pair as one-class-per-row advisor inputs (mmdistill.advisor.pixels)."""

from __future__ import annotations

import pytest
import torch

from mmdistill.advisor.pixels import pixel_rows
from mmdistill.advisor.predict import advise
from mmdistill.errors import DataError


def _images(n=3, h=6, w=7):
    torch.manual_seed(0)
    rgb = torch.rand(n, 3, h, w)
    depth = torch.rand(n, h, w)
    target = torch.randint(0, 4, (n, h, w))
    return rgb, depth, target


def test_each_row_is_its_pixels_neighbourhood_channel_by_channel_zero_beyond_the_border():
    rgb, depth, target = _images()
    target[:, 1:, :] = 255  # only the top row labelled: every drawn pixel touches the border
    rows, y = pixel_rows({"rgb": rgb, "depth": depth}, target, patch=3, per_image=7)
    assert rows["rgb"].shape == (21, 27) and rows["depth"].shape == (21, 9) and y.shape == (21,)
    padded = torch.nn.functional.pad(rgb, (1, 1, 1, 1))
    for i in range(21):  # find the pixel: the centre values of the row, in the image its row comes from
        n = i // 7
        patch = rows["rgb"][i].reshape(3, 3, 3)
        matches = [(r, c) for c in range(7) if torch.equal(padded[n, :, 0:3, c : c + 3], patch) for r in (0,)]
        assert len(matches) == 1
        r, c = matches[0]
        assert y[i] == target[n, r, c] and torch.all(patch[:, 0, :] == 0)
        assert rows["depth"][i].reshape(3, 3)[1, 1] == depth[n, r, c]


def test_unlabelled_pixels_are_never_drawn_and_each_image_gives_at_most_per_image():
    rgb, _, target = _images(n=4)
    target[0] = 255
    target[1, :, :] = 255
    target[1, 2, 3] = 1  # one labelled pixel
    rows, y = pixel_rows({"rgb": rgb}, target, per_image=5)
    assert len(y) == 0 + 1 + 5 + 5 and not (y == 255).any()
    again, _ = pixel_rows({"rgb": rgb}, target, per_image=5)
    other, _ = pixel_rows({"rgb": rgb}, target, per_image=5, seed=1)
    assert torch.equal(rows["rgb"], again["rgb"]) and not torch.equal(rows["rgb"], other["rgb"])


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"patch": 4}, "patch"),
        ({"patch": -1}, "patch"),
        ({"patch": 3.0}, "patch"),
        ({"per_image": 0}, "per_image"),
        ({"images": {"rgb": torch.rand(3, 3, 5, 7)}}, "rgb"),
        ({"images": {}}, "^images: expected at least one modality$"),
        ({"target": torch.zeros(3, 6, 7, 1)}, r"target: expected \(images, height, width\) classes, got shape"),
    ],
)
def test_bad_input_is_one_clear_error_naming_the_key(kwargs, key):
    rgb, _, target = _images()
    args = {"images": {"rgb": rgb}, "target": target, **kwargs}
    with pytest.raises(DataError, match=key):
        pixel_rows(**args)


def test_a_one_pixel_patch_is_the_pixels_values_and_one_pixel_per_image_is_allowed():
    rgb, _, target = _images()
    rows, y = pixel_rows({"rgb": rgb}, target, patch=1, per_image=1)
    assert rows["rgb"].shape == (3, 3) and len(y) == 3
    for n in range(3):
        assert any(torch.equal(rgb[n, :, r, c], rows["rgb"][n]) for r in range(6) for c in range(7))


def test_by_default_ten_pixels_are_drawn_from_each_image():
    rgb, _, target = _images(n=2, h=8, w=8)
    assert len(pixel_rows({"rgb": rgb}, target)[1]) == 20


def test_no_labelled_pixel_is_a_clear_error():
    rgb, _, target = _images()
    with pytest.raises(DataError, match="no labelled pixel"):
        pixel_rows({"rgb": rgb}, torch.full_like(target, 255))


def test_the_advice_reads_pixel_rows_of_generated_rgbd_scenes():
    """Depth -> RGB on procedural RGB-D scenes (depth separates two classes RGB cannot): the advice runs on the pixel
    rows and either predicts or abstains naming why."""
    from mmdistill.data.generated.rgbd_scenes import generate_rgbd_scenes

    arrays = generate_rgbd_scenes(n_scenes=30, size=32, seed=0)
    rgb = torch.from_numpy(arrays["rgb"]).permute(0, 3, 1, 2).float() / 255
    depth = torch.from_numpy(arrays["depth"].astype("float32")) / 1000
    rows, y = pixel_rows({"rgb": rgb, "depth": depth}, torch.from_numpy(arrays["label"]).long(), per_image=10)
    a = advise(rows["depth"], rows["rgb"], y, num_classes=4, bootstrap=2)
    assert len(y) == 300 and a.features["teacher_acc"] > 0.5
    assert a.abstained == bool(a.outside) and (a.predicted_gain is None) == a.abstained


def test_the_refusal_of_a_per_pixel_task_points_to_pixel_rows():
    from mmdistill.advisor.task_pilot import advised_task

    with pytest.raises(DataError, match=r"'segmentation'.*advise from Python on pixel rows: .*pixel_rows\)"):
        advised_task("segmentation")
