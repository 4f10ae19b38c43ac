"""The item-Dataset path at the cost of the column path: items that agree are stacked without a check per item
(the same batch as the checked path), values are checked where they can be new, and reads of items that draw no
random numbers leave the RNGs alone."""

from collections import OrderedDict

import pytest
import torch

from mmdistill.config import TrainerConfig
from mmdistill.data.contracts import collate as collate_module
from mmdistill.data.contracts import item_dataset as item_module
from mmdistill.data.contracts.collate import collate_items
from mmdistill.data.contracts.item_dataset import ItemDataset
from mmdistill.engine import batches as batches_module
from mmdistill.engine.batches import EpochBatches, ItemBatches, eval_batches
from mmdistill.errors import DataError


def images(n, label=lambda i: torch.tensor(i % 3), dtype=torch.float32):
    g = torch.Generator().manual_seed(n)
    return [{"image": torch.rand(3, 4, 4, generator=g).to(dtype), "label": label(i)} for i in range(n)]


def texts(n):
    return [
        {"text": torch.arange(1, 2 + i % 3), "text_mask": torch.ones(1 + i % 3, dtype=torch.long), "label": i % 2}
        for i in range(n)
    ]


CASES = {
    "images, tensor labels": (images(6), "classification", 3),
    "images, Python int labels": (images(6, label=lambda i: i % 3), "classification", 3),
    "float64 images, float targets": (images(5, lambda i: torch.tensor([0.5 * i]), torch.float64), "regression", 1),
    "token sequences with masks": (texts(5), "classification", 2),
}


@pytest.mark.parametrize("case", CASES)
def test_items_that_agree_are_stacked_as_the_checked_path_stacks_them(case, monkeypatch):
    items, task, classes = CASES[case]
    indices = [7, 3, 9, 1, 4, 2][: len(items)]
    as_mappings = [OrderedDict(item) for item in items]  # not plain dicts: the checked path, item by item
    checked = collate_items(as_mappings, indices, task=task, num_classes=classes)

    def no_checks(*args):
        raise AssertionError("items that agree are not checked one by one")

    monkeypatch.setattr(collate_module, "_checked_batch", no_checks)
    stacked = collate_items(items, indices, task=task, num_classes=classes)
    assert stacked.keys() == checked.keys()
    for k in checked:
        assert stacked[k].dtype == checked[k].dtype and torch.equal(stacked[k], checked[k]), k


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_value_is_still_named_by_item_and_key(bad):
    items = images(5)
    items[3]["image"][1, 2, 0] = bad
    with pytest.raises(DataError, match=r"item 13, key 'image': NaN/Inf values"):
        collate_items(items, [10, 11, 12, 13, 14], num_classes=3)


def test_values_whose_sum_overflows_are_not_refused():
    items = images(4)
    for item in items:
        item["image"].fill_(3e38)  # finite, but their sum is not
    assert collate_items(items, [0, 1, 2, 3], num_classes=3)["image"].max() == torch.tensor(3e38)


def test_without_value_checks_the_structure_is_still_checked():
    items = images(3)
    items[1]["image"] = torch.zeros(3, 4, 5)
    with pytest.raises(DataError, match=r"item 1, key 'image': shape \(3, 4, 5\) differs"):
        collate_items(items, [0, 1, 2], num_classes=3, check_values=False)
    items = images(3, label=lambda i: torch.tensor(5))  # class 5 of 3, a NaN: only values
    items[2]["image"][0, 0, 0] = float("nan")
    assert collate_items(items, [0, 1, 2], num_classes=3, check_values=False)["label"].tolist() == [5, 5, 5]


class Numbers(torch.utils.data.Dataset):
    """Eight items; item 5 is NaN while ``broken``; with ``random``, each read adds noise (a random draw)."""

    num_classes = 2

    def __init__(self, random=False):
        self.random, self.broken = random, False

    def __len__(self):
        return 8

    def __getitem__(self, i):
        x = torch.full((2,), float(i))
        if self.random:
            x = x + torch.rand(2)
        if self.broken and i == 5:
            x[0] = float("nan")
        return {"x": x, "label": torch.tensor(i % 2)}


def loader(dataset, workers=0):
    cfg = TrainerConfig(num_workers=workers, batch_size=4)
    return ItemBatches(dataset, EpochBatches(len(dataset), 4, seed=0), cfg, seed=0, device="cpu")


def passes(batches, epochs):
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for _ in batches:
            pass


def recorded_value_checks(monkeypatch):
    seen = []
    real = collate_module.collate_items

    def recording(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("check_values", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(item_module, "collate_items", recording)
    return seen


def test_items_without_random_draws_are_value_checked_in_the_first_pass_only(monkeypatch):
    data = Numbers()
    data.broken = True
    with pytest.raises(DataError, match=r"item 5, key 'x': NaN/Inf"):
        passes(loader(ItemDataset(data, "train")), 1)
    data.broken = False
    seen = recorded_value_checks(monkeypatch)
    passes(loader(ItemDataset(data, "train")), 3)
    assert seen == [True, True, False, False, False, False]


@pytest.mark.parametrize("workers", [0, 2])
def test_items_with_random_draws_are_value_checked_in_every_batch(monkeypatch, workers):
    data = Numbers(random=True)
    batches = loader(ItemDataset(data, "train"), workers)
    passes(batches, 2)
    data.broken = True  # a NaN that only a later read brings
    with pytest.raises(DataError, match=r"item 5, key 'x': NaN/Inf"):
        passes(batches, 1)


def test_evaluation_batches_of_a_split_read_through_before_are_not_value_checked_again(monkeypatch):
    split = ItemDataset(Numbers(), "val")
    split.check_rows()
    seen = recorded_value_checks(monkeypatch)
    for _ in eval_batches(split, 4):
        pass
    assert seen == [False, False]


def test_reads_of_items_without_random_draws_leave_the_rngs_alone(monkeypatch):
    seeded = []
    monkeypatch.setattr(batches_module, "seed_rngs", lambda s: seeded.append(s))
    before = torch.get_rng_state()
    passes(loader(ItemDataset(Numbers(), "train")), 1)
    assert seeded == [] and torch.equal(torch.get_rng_state(), before)
    passes(loader(ItemDataset(Numbers(random=True), "train")), 1)
    assert len(seeded) == 2 and torch.equal(torch.get_rng_state(), before)  # seeded per batch, then restored


def test_worker_processes_leave_out_the_value_checks_after_the_first_pass():
    """The flag reaches the DataLoader's workers: a later pass over items without random draws is not scanned (a NaN
    that appears afterwards, which such items cannot do, would pass)."""
    data = Numbers()
    batches = loader(ItemDataset(data, "train"), workers=2)
    passes(batches, 1)
    data.broken = True  # seen by the next epoch's workers (started anew)
    passes(batches, 1)
    assert int(batches.check) == 0
