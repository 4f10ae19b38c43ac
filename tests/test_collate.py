"""Collating dict items of any Dataset: stacking, token padding with masks, and each bad item named by index and key."""

import pytest
import torch

from mmdistill.data.contracts.collate import collate_items
from mmdistill.errors import DataError, TargetError


def item(label=0, image=None, **extra):
    return {"image": torch.zeros(3, 4, 4) if image is None else image, "label": torch.as_tensor(label), **extra}


def test_items_are_stacked_with_their_index():
    batch = collate_items([item(1), item(2)], [7, 3], num_classes=3)
    assert batch["image"].shape == (2, 3, 4, 4) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == [1, 2] and batch["label"].dtype == torch.int64
    assert batch["index"].tolist() == [7, 3]


def test_token_sequences_are_padded_and_masked():
    items = [
        {"text": torch.tensor([5, 6, 7]), "label": torch.tensor(0)},
        {"text": torch.tensor([8]), "label": torch.tensor(1)},
    ]
    batch = collate_items(items, [0, 1])
    assert batch["text"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["text_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_an_items_own_mask_is_padded_too():
    items = [
        {"text": torch.tensor([5, 6]), "text_mask": torch.tensor([1, 0]), "label": torch.tensor(0)},
        {"text": torch.tensor([8, 9, 4]), "text_mask": torch.tensor([1, 1, 1]), "label": torch.tensor(1)},
    ]
    batch = collate_items(items, [0, 1])
    assert batch["text_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]


def test_an_item_that_is_not_a_dict_is_named():
    with pytest.raises(DataError, match=r"item 12: expected a dict .* got tuple"):
        collate_items([item(), (torch.zeros(3), 1)], [4, 12])


def test_a_missing_modality_names_item_and_key():
    with pytest.raises(DataError, match=r"item 9: missing modality key 'depth' \(keys present: 'image', 'label'\)"):
        collate_items([item(depth=torch.zeros(1)), item()], [2, 9])


def test_a_missing_target_names_item_and_key():
    with pytest.raises(DataError, match=r"item 5: missing the target key 'label'"):
        collate_items([item(), {"image": torch.zeros(3, 4, 4)}], [0, 5], keys=["image"])


def test_shapes_that_differ_name_item_key_and_both_shapes():
    with pytest.raises(DataError, match=r"item 8, key 'image': shape \(3, 4, 5\) differs from item 1's \(3, 4, 4\)"):
        collate_items([item(), item(image=torch.zeros(3, 4, 5))], [1, 8])


def test_non_finite_inputs_name_item_and_key():
    bad = torch.zeros(3, 4, 4)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(DataError, match=r"item 6, key 'image': NaN/Inf"):
        collate_items([item(), item(image=bad)], [0, 6])


@pytest.mark.parametrize(
    "task,label,expected",
    [
        (
            "classification",
            torch.tensor([0.0, 1.0, 1.0]),
            (
                r"item 3, key 'label' \(the item's target as a batch of one\): task 'classification' expects one "
                r"class index per example.* a multi-hot matrix .* use task 'multilabel'"
            ),
        ),
        ("classification", torch.tensor(1.5), r"item 3, key 'label' .*: task 'classification' expects a 1-D integer"),
        ("classification", torch.tensor(4), r"'label': values must lie in \[0, 3\).*value 4 at example index 3"),
        ("multilabel", torch.tensor(2), r"item 3, key 'label' .*: task 'multilabel' expects a float multi-hot tensor"),
        ("multilabel", torch.tensor([0.0, 0.5, 1.0]), r"expects multi-hot values 0 or 1; got 0\.5 .*example index 3"),
        ("segmentation", torch.zeros(4, 4), r"item 3, key 'label' .*: task 'segmentation' expects an int64 label map"),
        ("segmentation", torch.full((4, 4), 7), r"expects classes in \[0, 3\) or ignore_index 255; got 7 at example"),
        ("regression", torch.tensor(2), r"item 3, key 'label' .*: task 'regression' expects a float"),
    ],
)
def test_a_target_of_the_wrong_form_for_the_task_is_named(task, label, expected):
    good = {
        "classification": torch.tensor(0),
        "multilabel": torch.zeros(3),
        "segmentation": torch.zeros(4, 4).long(),
        "regression": torch.tensor(0.5),
    }[task]
    with pytest.raises(TargetError, match=expected):
        collate_items([item(good), item(label)], [0, 3], task=task, num_classes=1 if task == "regression" else 3)


def seg_item(label_map, image_hw=(4, 4)):
    return {"rgb": torch.zeros(3, *image_hw), "label": label_map}


def test_a_label_map_whose_size_differs_from_its_image_is_named():
    with pytest.raises(DataError, match=r"item 4, key 'label' .*: label map \(4, 5\) differs from image 'rgb'"):
        collate_items(
            [seg_item(torch.zeros(4, 4).long()), seg_item(torch.zeros(4, 5).long())],
            [0, 4],
            task="segmentation",
            num_classes=3,
        )


def test_label_map_values_must_be_classes_or_ignore_index():
    ok = torch.tensor([[0, 2], [255, 1]])
    batch = collate_items([seg_item(ok, (2, 2))], [0], task="segmentation", num_classes=3)
    assert batch["label"].shape == (1, 2, 2)
    with pytest.raises(DataError, match=r"expects classes in \[0, 3\) or ignore_index -1; got 3 at example index 7"):
        collate_items(
            [seg_item(torch.tensor([[0, 3], [1, 1]]), (2, 2))],
            [7],
            task={"name": "segmentation", "params": {"ignore_index": -1}},
            num_classes=3,
        )


def test_an_ignore_index_that_is_a_real_class_is_refused():
    from mmdistill.data.contracts.item_dataset import ItemDataset

    class Scenes(torch.utils.data.Dataset):
        task, num_classes, ignore_index = "segmentation", 3, 2

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return seg_item(torch.zeros(4, 4).long())

    with pytest.raises(DataError, match=r"train: ignore_index 2 collides with real class 2 \(classes are 0\.\.2\)"):
        ItemDataset(Scenes(), "train")
