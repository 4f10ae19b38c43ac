"""Partly paired modalities: rows that lack the teacher's modality train the student with its own loss, and the
distillation terms use only the rows where the teacher sees its input."""

from __future__ import annotations

import pytest
import torch

from mmdistill.batch import LABEL, ModalitySpec, present_rows
from mmdistill.config import RunConfig, validate
from mmdistill.data import build_splits
from mmdistill.data.contracts.dataset import MultimodalDataset
from mmdistill.data.contracts.split import Splits
from mmdistill.engine.protocol import run_config
from mmdistill.errors import ConfigError, DataError
from mmdistill.kl import kd_loss
from mmdistill.masking import Masker, missing_fractions
from mmdistill.methods.base import StudentOutputs, TeacherOutputs
from mmdistill.registry import METHODS

MISSING_EVERY = 3  # every third training row lacks modality "a"


def with_presence(split, every: int | None, name: str, all_absent_row: bool = False) -> MultimodalDataset:
    """``split`` with a presence column ``a_present`` (0 on every ``every``-th row; None: every row 0)."""
    columns = dict(split.tensors)
    present = torch.ones(len(split))
    if every is None:
        present.zero_()
    else:
        present[::every] = 0
    columns["a"] = columns["a"] * present[:, None]  # the data's filler where "a" is absent: zeros
    columns["a_present"] = present
    if all_absent_row:
        columns["b_present"] = torch.ones(len(split))
        columns["b_present"][0] = 0
    return MultimodalDataset(columns, split.labels, split.num_classes, name)


def partly_paired_toy(n: int = 150, every: int | None = MISSING_EVERY, all_absent_row: bool = False) -> Splits:
    """The toy two-modality data whose training rows partly lack "a" (a ``data.dataset`` factory)."""
    splits = build_splits("toy-two-modality", {"n": n})
    return Splits(with_presence(splits.train, every, "train", all_absent_row), splits.val, splits.test)


def config(
    method: str = "kd", dataset: str = "test_partly_paired:partly_paired_toy", cache_dir=None, **data_params
) -> RunConfig:
    raw = {
        "data": {"dataset": dataset, "params": data_params},
        "teacher": {"model": {"modalities": ["a", "b"], "encoder": {"type": "mlp", "hidden": [8], "out_dim": 8}}},
        "student": {"model": {"modalities": ["b"], "encoder": {"type": "mlp", "hidden": [8], "out_dim": 8}}},
        "method": {"name": method},
        "trainer": {"epochs": 1, "batch_size": 32},
        "cache": {"enabled": False} if cache_dir is None else {"enabled": True, "dir": str(cache_dir)},
    }
    return validate(RunConfig, raw)


def one_batch(rows: int = 8, classes: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(rows, 4, generator=g),
        "b": torch.randn(rows, 4, generator=g),
        "a_present": torch.tensor([1, 0, 1, 1, 0, 1, 0, 1], dtype=torch.float32)[:rows],
        LABEL: torch.randint(0, classes, (rows,), generator=g),
    }


def terms(method: str, batch: dict, student: torch.Tensor, teacher: torch.Tensor) -> dict:
    cls = METHODS.get(method)
    algo = cls(cls.checked_params(method, {}))
    algo.paired_on = ("a", "b")
    return algo.losses(batch, StudentOutputs(student), TeacherOutputs(teacher))


def test_the_kd_term_of_a_batch_equals_kd_by_hand_on_its_paired_rows_and_ce_uses_every_row():
    batch = one_batch()
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    out = terms("kd", batch, student, teacher)
    paired = torch.tensor([0, 2, 3, 5, 7])
    assert torch.allclose(out["kd"], kd_loss(student[paired], teacher[paired], 4.0))
    assert not torch.allclose(out["kd"], kd_loss(student, teacher, 4.0))
    assert torch.allclose(out["ce"], torch.nn.functional.cross_entropy(student, batch[LABEL]))


@pytest.mark.parametrize("method", [n for n in METHODS.names() if getattr(METHODS.get(n), "partly_paired", False)])
def test_the_teachers_outputs_on_unpaired_rows_change_no_distillation_term(method):
    batch = one_batch()
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    scrambled = teacher.clone()
    scrambled[batch["a_present"] == 0] = 50 * torch.randn(3, 3, generator=g)  # the teacher's guesses on filler
    before, after = terms(method, batch, student, teacher), terms(method, batch, student, scrambled)
    for name in before:
        assert torch.allclose(before[name], after[name]), name
    none_paired = {**batch, "a_present": torch.zeros(8)}
    for name, value in terms(method, none_paired, student, teacher).items():
        assert torch.isfinite(value), name  # no paired row: the distillation terms are 0, not NaN


def test_absent_rows_reach_the_teacher_as_the_maskers_null_value():
    batch = one_batch()
    masker = Masker([ModalitySpec("a", (4,)), ModalitySpec("b", (4,))], "mean").fit({"a": torch.full((4,), 7.0)})
    filled = masker.fill_absent(batch)
    absent = batch["a_present"] == 0
    assert torch.equal(filled["a"][absent], torch.full((3, 4), 7.0))
    assert torch.equal(filled["a"][~absent], batch["a"][~absent]) and torch.equal(filled["b"], batch["b"])
    assert torch.equal(present_rows(batch, ["a", "b"]), ~absent) and present_rows(batch, ["b"]) is None


def test_a_partly_paired_run_trains_and_reports_the_missing_fraction(tmp_path):
    metrics = run_config(config(), tmp_path / "run", baseline=False, quiet=True)
    train = partly_paired_toy().train
    expected = len(range(0, len(train), MISSING_EVERY)) / len(train)
    assert missing_fractions(train) == {"a": pytest.approx(expected)}
    assert metrics["train_missing"] == {"a": pytest.approx(expected)}
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"modality a is missing in {100 * expected:.1f}% of the training rows" in summary


def test_a_method_that_cannot_leave_rows_out_is_refused_with_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^method\.name: 'dist' cannot leave out the rows that lack .*'a'"):
        run_config(config("dist"), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_teacher_modality_missing_in_every_row_is_refused_with_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^teacher\.model\.modalities: the teacher reads 'a', which every training"):
        run_config(config(every=None), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_row_with_every_modality_missing_is_refused_with_the_key(tmp_path):
    with pytest.raises(DataError, match=r"train: row 0 lacks every modality \(a_present, b_present all 0\)"):
        run_config(config(all_absent_row=True), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


class Pairs(torch.utils.data.Dataset):
    """Items with "b" always and "a" on two rows in three (the rows ``i % 3 == 0`` omit the key)."""

    partly_paired = ("a",)
    num_classes = 3

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.a = torch.randn(n, 4, generator=g) + self.y[:, None]
        self.b = torch.randn(n, 4, generator=g) + 0.5 * self.y[:, None]
        self.seed = seed

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        item = {"b": self.b[i], "label": int(self.y[i])}
        if i % 3:
            item["a"] = self.a[i]
        return item

    def fingerprint(self) -> str:
        return f"pairs-{len(self)}-{self.seed}"


def item_pairs() -> dict:
    return {"train": Pairs(60, 0), "val": Pairs(30, 1), "test": Pairs(30, 2)}


def test_an_item_dataset_whose_items_omit_the_teachers_modality_trains_and_reports_it(tmp_path):
    from mmdistill.data.contracts.item_dataset import as_split

    split = as_split(Pairs(6, 0), "train")
    batch = split.__getitems__(range(6))
    assert batch["a_present"].tolist() == [0, 1, 1, 0, 1, 1]
    assert torch.equal(batch["a"][0], torch.zeros(4)) and [s.name for s in split.specs()] == ["b", "a"]
    metrics = run_config(config(dataset="test_partly_paired:item_pairs"), tmp_path / "run", baseline=False, quiet=True)
    assert metrics["train_missing"] == {"a": pytest.approx(20 / 60)}


def test_with_the_teacher_cached_the_students_batches_still_say_which_rows_are_paired(tmp_path, monkeypatch):
    from mmdistill.methods.kd import HintonKD

    seen = []
    real = HintonKD.paired_rows
    monkeypatch.setattr(HintonKD, "paired_rows", lambda self, batch: seen.append(real(self, batch)) or seen[-1])
    run_config(config(cache_dir=tmp_path / "cache"), tmp_path / "run", baseline=False, quiet=True)
    assert seen and all(rows is not None for rows in seen)  # the cached teacher's student batches keep a_present
    assert 0 < float(torch.cat(seen).float().mean()) < 1


def test_the_teacher_reads_the_maskers_null_value_in_absent_rows():
    from mmdistill.engine.teacher import teacher_outputs
    from mmdistill.methods.base import TeacherRequest

    class Recorder(torch.nn.Module):
        modalities = ("a", "b")

        def forward(self, batch):
            self.seen = batch["a"].clone()
            return torch.zeros(len(batch["a"]), 3)

    batch = one_batch()
    masker = Masker([ModalitySpec("a", (4,)), ModalitySpec("b", (4,))], "mean").fit({"a": torch.full((4,), 7.0)})
    teacher = Recorder()
    teacher_outputs(teacher, batch, TeacherRequest(), masker)
    absent = batch["a_present"] == 0
    assert torch.equal(teacher.seen[absent], torch.full((3, 4), 7.0))
    assert torch.equal(teacher.seen[~absent], batch["a"][~absent])


class NoA(Pairs):
    def __getitem__(self, i: int) -> dict:
        return {"b": self.b[i], "label": int(self.y[i])}


def test_an_item_dataset_where_no_item_holds_a_declared_modality_is_refused():
    from mmdistill.data.contracts.item_dataset import as_split

    with pytest.raises(DataError, match=r"train: dataset\.partly_paired: no item holds modality 'a'"):
        as_split(NoA(6, 0), "train").__getitems__(range(6))


def test_the_training_mean_of_a_partly_paired_modality_leaves_out_the_fillers():
    train = partly_paired_toy().train
    present = train.tensors["a_present"] != 0
    assert torch.allclose(train.feature_mean()["a"], train.tensors["a"][present].mean(0))
    from mmdistill.data.contracts.item_dataset import as_split

    items = Pairs(30, 0)
    held = torch.tensor([i % 3 != 0 for i in range(30)])
    assert torch.allclose(as_split(items, "train").feature_mean()["a"], items.a[held].mean(0))
