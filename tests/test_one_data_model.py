"""One data model: column data and item data are both a Split, held by one Splits container; the engine reads
them through the capabilities a split declares, not by switching on its type."""

import re
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from mmdistill.config import CacheConfig, TrainerConfig
from mmdistill.data import DataSplits, ItemSplits, splits_from_arrays
from mmdistill.data.contracts.item_dataset import ItemDataset, as_splits
from mmdistill.data.contracts.split import Split, Splits
from mmdistill.engine.api import distill
from mmdistill.engine.batches import ColumnBatches, ItemBatches, eval_batches
from mmdistill.engine.parts import _read_columns, _teacher_mode

SRC = Path(__file__).resolve().parents[1] / "src" / "mmdistill"


class Pairs(Dataset):
    """Two float modalities and a regression target; declares no num_classes (the task reads it off the targets)."""

    task = "regression"

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        return {"a": self.x[i, :2], "b": self.x[i, 2:], "label": self.x[i, :2].sum(0, keepdim=True)}


class Linear(nn.Module):
    def __init__(self, modalities, outputs: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.modalities = modalities
        self.f = nn.Linear(2 * len(modalities), outputs)

    def forward(self, batch):
        return self.f(torch.cat([batch[m] for m in self.modalities], 1))


def column_splits():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    cols = {"a": torch.randn(60, 2, generator=g), "b": torch.randn(60, 2, generator=g)}
    return splits_from_arrays(cols, y, 3, seed=0)


def test_column_and_item_data_are_splits_in_one_container():
    columns = column_splits()
    items = as_splits(train=Pairs(8, 0), val=Pairs(4, 1), test=Pairs(4, 2))
    assert type(columns) is Splits and type(items) is Splits
    assert DataSplits is Splits and ItemSplits is Splits  # the older names, kept for code that imports them
    for split in (columns.train, items.train):
        assert isinstance(split, Split)
        assert [s.name for s in split.specs()] == ["a", "b"]


def test_capabilities_decide_how_a_split_is_read():
    columns, items = column_splits(), as_splits(train=Pairs(8, 0), val=Pairs(4, 1), test=Pairs(4, 2))
    assert isinstance(eval_batches(columns.val, 4), ColumnBatches)
    assert isinstance(eval_batches(items.val, 4), ItemBatches)
    student = Linear(("b",), 3)
    narrowed = _read_columns(columns.train, student, None)
    assert narrowed.modality_names == ["b"] and _read_columns(narrowed, student, None) is narrowed
    assert _read_columns(items.train, student, None) is items.train  # item data read every modality anyway
    assert _teacher_mode(CacheConfig(), columns.train) == "cache"
    assert _teacher_mode(CacheConfig(), items.train, quiet=True) == "online"  # no fingerprint() to key a cache by


def test_validation_items_are_read_once_per_split_object():
    data = Pairs(6, 1)
    split = ItemDataset(data, "val")
    split.check_rows()
    split.check_rows()
    assert data.reads == 6


def test_the_run_task_completes_the_split_not_the_users_dataset(tmp_path):
    train, val, test = Pairs(16, 0), Pairs(8, 1), Pairs(8, 2)
    result = distill(
        Linear(("a",), 1), Linear(("a", "b"), 1), out_dir=tmp_path / "run", train=train, val=val, test=test,
        trainer=TrainerConfig(epochs=1, batch_size=8), quiet=True, cache=CacheConfig(enabled=False),
    )  # fmt: skip
    assert result.test  # the run trained and was evaluated
    for user_dataset in (train, val, test):
        assert "num_classes" not in vars(user_dataset)


def test_engine_evaluation_and_analyses_switch_on_no_dataset_type():
    """Column and item data differ by the capabilities a Split declares, so no module outside data/ asks which
    class a split or a splits container is."""
    pattern = re.compile(r"isinstance\([^)]*\b(MultimodalDataset|ItemDataset|DataSplits|ItemSplits)\b")
    places = [*SRC.glob("engine/*.py"), *SRC.glob("evaluation/*.py"), *SRC.glob("advisor/*.py"), *SRC.glob("mfh/*.py")]
    found = [f"{p.relative_to(SRC)}:{n}" for p in [*places, SRC / "masking.py"]
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]  # fmt: skip
    assert found == []


def test_the_run_task_leaves_a_users_own_item_split_as_it_was(tmp_path):
    """A split the user wrapped (``ItemDataset``, e.g. with a transform) is not completed in place: another run may
    read it with other task params."""
    train, val, test = (ItemDataset(Pairs(n, seed), part) for n, seed, part in ((16, 0, "t"), (8, 1, "v"), (8, 2, "s")))
    distill(
        Linear(("a",), 1), Linear(("a", "b"), 1), out_dir=tmp_path / "run", train=train, val=val, test=test,
        trainer=TrainerConfig(epochs=1, batch_size=8), quiet=True, cache=CacheConfig(enabled=False),
    )  # fmt: skip
    assert [s.num_classes for s in (train, val, test)] == [None, None, None]
    splits = as_splits(train=train, val=val, test=test)
    assert splits.train is not train and splits.train.dataset is train.dataset
    assert as_splits(splits).train is not splits.train  # a Splits given again: each run completes its own copies
