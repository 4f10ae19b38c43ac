"""What the advisor cannot advise on is one line naming it, from the CLI and from Python: a run folder without a
teacher, a teacher that sees no modality the student does not, one class, fewer than 20 rows, items without the
modality, labels that are not single-label class indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from mmdistill.advisor import advise_dataset
from mmdistill.advisor.predict import advise
from mmdistill.cli import main
from mmdistill.errors import ConfigError, DataError


class Items(Dataset):
    """Three classes (or the ``labels`` given); ``narrow`` 12 values a row, ``wide`` 30; ``task`` if given."""

    modalities = ("narrow", "wide")
    num_classes = 3

    def __init__(self, n: int = 60, labels=None, task: str | None = None, without: str | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 3 if labels is None else labels
        self.narrow, self.wide = torch.randn(n, 12, generator=g), torch.randn(n, 30, generator=g)
        self.without = without
        if task is not None:
            self.task = task

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        item = {"narrow": self.narrow[i], "wide": self.wide[i], "label": self.y[i]}
        return {k: v for k, v in item.items() if k != self.without}


def one_line_error(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(["advise", *argv, "--bootstrap", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_run_folder_without_a_teacher_is_one_line(tmp_path, capsys):
    from test_advisor_any_input import splits

    from mmdistill.config import TrainerConfig
    from mmdistill.data.contracts.item_dataset import as_split
    from mmdistill.engine.api import distill
    from mmdistill.models import build_model
    from mmdistill.models.custom import CustomModelConfig

    data = splits()
    own = CustomModelConfig(factory="test_advisor_any_input:own_model", params={"modalities": "narrow"})
    model = build_model(own, as_split(data["train"], "train").specs(), 3)
    trainer = TrainerConfig(epochs=1, batch_size=32, num_threads=1)
    distill(model, None, **data, out_dir=tmp_path / "alone", method="supervised", trainer=trainer, quiet=True)
    line = one_line_error(capsys, "--run", str(tmp_path / "alone"), "--data", "test_advisor_any_input:splits")
    assert "alone: the run has no trained teacher" in line and "advise --run reads a KD run's folder" in line


SAME_MODALITIES = """\
seed: 0
data: {{dataset: "test_advisor_bad_input:item_splits"}}
teacher: {{model: {{modalities: [narrow], encoder: {{hidden: [8], out_dim: 8}}}}}}
student: {{model: {{modalities: [{student}], encoder: {{hidden: [8], out_dim: 8}}}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
trainer: {{epochs: 1, batch_size: 32, num_threads: 1}}
cache: {{enabled: false}}
"""


def item_splits() -> dict:
    return {"train": Items(60), "val": Items(30), "test": Items(30)}


@pytest.mark.parametrize("student", ["narrow", "narrow, wide"])
def test_a_teacher_that_sees_no_modality_beyond_the_students_is_one_line(tmp_path, capsys, student):
    config = tmp_path / "same.yaml"
    config.write_text(SAME_MODALITIES.format(student=student))
    expected = f"the teacher reads the same modalities as the student or fewer (narrow vs {student})"
    assert expected in one_line_error(capsys, "--config", str(config))
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    assert f"advise --run: {expected}" in one_line_error(capsys, "--run", str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"same modalities as the student or fewer \(narrow vs narrow\)"):
        advise_dataset(Items(), teacher="narrow", student="narrow")


def test_single_class_data_is_refused():
    with pytest.raises(DataError, match=r"advise: labels: the training data hold a single class \(0, 60 rows\)"):
        advise_dataset(Items(labels=torch.zeros(60, dtype=torch.long)), teacher="wide", student="narrow")


def test_fewer_than_20_rows_are_refused():
    with pytest.raises(DataError, match="advise: needs at least 20 paired examples, got 12"):
        advise_dataset(Items(12), teacher="wide", student="narrow")


def test_items_without_the_modality_are_refused_naming_it():
    with pytest.raises(DataError, match="advise: the items hold no modality 'depth'; they hold narrow, wide"):
        advise_dataset(Items(), teacher="depth", student="narrow")
    with pytest.raises(DataError, match=r"advise: reading the training items: item 0: missing modality key 'wide'"):
        advise_dataset(Items(without="wide"), teacher="wide", student="narrow")


@pytest.mark.parametrize(
    "labels,task,message",
    [
        (torch.rand(60), None, r"advise: reading the training items: 'label': task 'classification' expects .*integer"),
        (
            torch.cat([torch.full((1, 3), 0.5), (torch.rand(59, 3) > 0.5).float()]),
            "multilabel",
            r"advise: reading the training items: 'label': task 'multilabel' expects multi-hot values 0 or 1; got 0\.5",
        ),
        (
            torch.cat([torch.full((1, 3), float("nan")), torch.rand(59, 3)]),
            "regression",
            r"advise: reading the training items: 'label': task 'regression': a non-finite target \(NaN or Inf\)",
        ),
        (torch.arange(60) % 4, None, r"reading the training items: .*values must lie in \[0, 3\), got min 0 and max 3"),
    ],
    ids=["fractions", "multilabel", "regression", "beyond-num-classes"],
)
def test_labels_the_task_does_not_allow_are_refused_from_a_dataset(labels, task, message):
    with pytest.raises(DataError, match=message):
        advise_dataset(Items(labels=labels, task=task), teacher="wide", student="narrow")


def test_labels_that_are_not_class_indices_are_refused_from_arrays():
    rng = np.random.default_rng(0)
    xa, xb = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    with pytest.raises(DataError, match=r"advise: labels must be class indices \(whole numbers\), got 0\.5"):
        advise(xa, xb, np.r_[np.zeros(20), np.ones(19), 0.5])  # was truncated to class 0 without a word
    with pytest.raises(DataError, match=r"advise: labels of shape \(40, 2\): expected one class index per example"):
        advise(xa, xb, np.eye(2)[np.arange(40) % 2])


def test_a_dataset_given_to_advise_on_arrays_points_to_advise_dataset():
    with pytest.raises(ConfigError, match=r"for a torch Dataset of dict items use mmdistill\.advisor\.advise_dataset"):
        advise(Items(), Items(), None)
