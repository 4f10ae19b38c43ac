"""Targets pass one check, the task's, whether they come as columns or as items of a Dataset; a segmentation
training split with nothing labelled is refused before anything trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmdistill.data.contracts.dataset import DataSplits, MultimodalDataset
from mmdistill.data.contracts.item_dataset import ItemDataset, ItemSplits
from mmdistill.engine.api import distill
from mmdistill.errors import DataError, TargetError
from mmdistill.tasks import get_task


class MultiHot(torch.utils.data.Dataset):
    """Four items of two modalities with multi-hot targets over 3 labels; item 2 carries ``value`` for label 1."""

    task, num_classes = "multilabel", 3

    def __init__(self, value: float) -> None:
        self.value = value

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        y = torch.tensor([1.0, self.value if i == 2 else 0.0, 0.0])
        return {"a": torch.full((2,), float(i)), "label": y}


def test_a_multilabel_target_of_one_half_is_refused_from_items_as_from_columns():
    columns = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(DataError, match=r"expects multi-hot values 0 or 1; got 0\.5 for label 1 at row 2"):
        MultimodalDataset({"a": torch.zeros(4, 2)}, columns, 3, "train", "multilabel")
    items = ItemDataset(MultiHot(0.5), "train")
    with pytest.raises(TargetError, match=r"expects multi-hot values 0 or 1; got 0\.5 for label 1 at example index 2"):
        items.__getitems__([0, 1, 2, 3])
    assert items.__getitems__([0, 1, 3])["label"].shape == (3, 3)  # the items around it are fine


def seg_splits(train_labels: torch.Tensor, ignore_index: int = 255) -> DataSplits:
    task = {"name": "segmentation", "params": {"ignore_index": ignore_index}}
    labelled = torch.randint(0, 3, (4, 4, 4), generator=torch.Generator().manual_seed(0))

    def split(name, y):
        return MultimodalDataset({"rgb": torch.randn(len(y), 3, 4, 4)}, y, 3, name, task)

    return DataSplits(split("train", train_labels), split("val", labelled), split("test", labelled))


class PixelNet(nn.Module):
    modalities = ("rgb",)

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)

    def forward(self, batch):
        return self.head(batch["rgb"])


def test_a_segmentation_training_split_with_every_pixel_ignored_is_refused_naming_the_split(tmp_path):
    data = seg_splits(torch.full((6, 4, 4), 255))
    with pytest.raises(TargetError, match=r"split 'train': every pixel of every label map is ignore_index 255"):
        distill(PixelNet(), None, data, tmp_path / "run", "supervised", task="segmentation")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_one_labelled_pixel_is_enough_to_train_on():
    from mmdistill.engine.api import run_task

    y = torch.full((6, 4, 4), 255)
    y[5, 3, 3] = 1
    assert run_task("segmentation", seg_splits(y)).name == "segmentation"


class UnlabelledScenes(torch.utils.data.Dataset):
    """Item data that give their label maps as ``labels`` too (as many datasets do): every pixel unlabelled."""

    task, num_classes, ignore_index = "segmentation", 3, 255

    def __init__(self) -> None:
        self.labels = torch.full((4, 4, 4), 255)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"rgb": torch.randn(3, 4, 4), "label": self.labels[i]}


def test_an_item_training_split_that_gives_its_labels_is_checked_without_reading_its_items():
    from mmdistill.engine.api import run_task

    labelled = seg_splits(torch.randint(0, 3, (4, 4, 4)))
    data = ItemSplits(ItemDataset(UnlabelledScenes(), "train"), labelled.val, labelled.test)
    with pytest.raises(TargetError, match=r"split 'train': every pixel"):
        run_task("segmentation", data)


def test_the_item_check_is_the_batch_check_on_a_batch_of_one():
    task = get_task("multilabel")
    with pytest.raises(TargetError, match=r"got 0\.5 for label 0 at example index 9"):
        task.check_item_target(torch.tensor([0.5, 1.0]), 2, 9)
