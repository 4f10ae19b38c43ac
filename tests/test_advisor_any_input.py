"""The advisor on every input a user has: each run folder the library writes (``train`` on column data, ``train`` on a
``data.dataset`` factory, ``distill(train=...)``), ``advise --config`` with own models and a ``data.dataset`` factory,
and a torch Dataset from Python; wide inputs cost an n x n solve, not d x d.

This module is importable by name in the tests (``test_advisor_any_input:splits`` is a ``data.dataset`` factory,
``test_advisor_any_input:own_model`` a model factory).
"""

from __future__ import annotations

import json
import math

import torch
from torch import nn
from torch.utils.data import Dataset

from mmdistill.cli import main


class Pairs(Dataset):
    """Three classes; ``narrow`` holds 12 values a row, ``wide`` 5,000 (wider than the 4,096 read flattened)."""

    modalities = ("narrow", "wide")
    num_classes = 3

    def __init__(self, n: int, seed: int, wide: int = 5000) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.narrow = torch.randn(n, 12, generator=g) + 0.8 * self.y[:, None].float()
        self.wide = torch.randn(n, wide, generator=g) + 0.3 * self.y[:, None].float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"narrow": self.narrow[i], "wide": self.wide[i], "label": self.y[i]}


def splits(n_train: int = 60) -> dict:
    return {"train": Pairs(n_train, 0), "val": Pairs(30, 1), "test": Pairs(30, 2)}


class OwnModel(nn.Module):
    """A user's model on one modality or several (a linear map of the flattened inputs)."""

    def __init__(self, specs, num_classes: int, modalities: str = "narrow") -> None:
        super().__init__()
        self.modalities = tuple(modalities.split(","))
        width = sum(math.prod(s.shape) for s in specs if s.name in self.modalities)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.linear(torch.cat([batch[m].flatten(1) for m in self.modalities], 1))


def own_model(specs, num_classes: int, modalities: str = "narrow") -> nn.Module:
    return OwnModel(specs, num_classes, modalities)


FACTORY_RUN = """\
seed: 0
data: {{dataset: "test_advisor_any_input:splits"}}
teacher: {{model: {{factory: "test_advisor_any_input:own_model", params: {{modalities: "narrow,wide"}}}}}}
student: {{model: {{{student}}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
trainer: {{epochs: 1, batch_size: 32, num_threads: 1}}
cache: {{enabled: false}}
"""
OWN_STUDENT = 'factory: "test_advisor_any_input:own_model", params: {modalities: wide}'


def advise_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["advise", *argv, "--json", "--bootstrap", "2"]) == 0
    return json.loads(capsys.readouterr().out)


def a_prediction_or_an_abstention(out: dict) -> bool:
    if out["abstained"]:
        return out["predicted_gain"] is None and bool(out["outside"]) and out["recommendation"].startswith("cannot")
    low, high = out["predicted_gain_interval"]
    return low <= out["predicted_gain"] <= high


def test_advise_run_on_a_train_folder_of_column_data(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config(epochs=1)), "--out", str(run)]) == 0
    out = advise_json(capsys, "--run", str(run))
    assert out["student"] == "b" and a_prediction_or_an_abstention(out)
    assert out["representation"] == "teacher side: seed_0/teacher's logits; student side: b flattened"
    assert 0 <= out["teacher_accuracy_student_modalities"] <= 1  # the a+b teacher given b alone


def test_advise_run_on_a_train_folder_of_a_dataset_factory_with_own_models(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(FACTORY_RUN.format(student=OWN_STUDENT))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    out = advise_json(capsys, "--run", str(run))
    assert out["student"] == "wide" and a_prediction_or_an_abstention(out)
    assert out["representation"].endswith("student side: the no-KD student's logits")  # 5,000 values a row


def test_advise_run_on_a_distill_folder_of_datasets_given_in_python(tmp_path, capsys):
    from mmdistill.config import TrainerConfig
    from mmdistill.data.contracts.item_dataset import as_split
    from mmdistill.engine.api import distill
    from mmdistill.models import build_model
    from mmdistill.models.custom import CustomModelConfig

    data, trainer = splits(), TrainerConfig(epochs=1, batch_size=32, num_threads=1)
    specs = as_split(data["train"], "train").specs()
    own = lambda mods: CustomModelConfig(factory="test_advisor_any_input:own_model", params={"modalities": mods})  # noqa: E731
    torch.manual_seed(0)
    teacher, student = build_model(own("narrow,wide"), specs, 3), build_model(own("wide"), specs, 3)
    for model, out, kind in ((teacher, "teacher", "supervised"), (student, "kd", "kd")):
        distill(model, teacher if kind == "kd" else None, train=data["train"], val=data["val"], test=data["test"],
                out_dir=tmp_path / out, method=kind, trainer=trainer, quiet=True)  # fmt: skip
    out = advise_json(capsys, "--run", str(tmp_path / "kd"), "--data", "test_advisor_any_input:splits")
    assert out["student"] == "wide" and a_prediction_or_an_abstention(out)
    assert out["representation"].endswith("student side: wide as a random projection to 64 values")  # no no-KD


def test_advise_config_reads_a_dataset_factory_and_own_models(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(FACTORY_RUN.format(student=OWN_STUDENT))
    out = advise_json(capsys, "--config", str(config))
    assert (out["teacher"], out["student"]) == ("narrow+wide", "wide") and a_prediction_or_an_abstention(out)
    assert out["representation"] == (
        "teacher side: narrow flattened; wide as a random projection to 64 values; "
        "student side: wide as a random projection to 64 values"
    )
    assert out["examples"] == 60


def test_advise_dataset_reads_a_torch_dataset_from_python():
    from mmdistill.advisor import advise_dataset

    advice = advise_dataset(Pairs(300, 0, wide=200), teacher="narrow", student="wide", bootstrap=2, max_rows=250)
    assert advice.examples == 250 and advice.features["d_b_per_n"] == 64 / 250  # 200 values: 64 components
    assert advice.abstained or advice.predicted_gain_interval[0] <= advice.predicted_gain


def test_wide_ridge_probes_equal_the_narrow_form():
    """More columns than rows: the ridge fit solves the n x n system; the predictions are the d x d solve's."""
    from mmdistill.advisor.probes import _apply, _ridge, _ridge_prediction

    g = torch.Generator().manual_seed(0)
    x, t, new = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((30, 80), (30, 70), (7, 80)))
    xc, tc = x - x.mean(0), t - t.mean(0)
    w = torch.linalg.solve(xc.T @ xc + 5.0 * torch.eye(80, dtype=torch.float64), xc.T @ tc)
    primal = (new - x.mean(0)) @ w + t.mean(0)
    assert torch.allclose(_apply(_ridge(x, t, 5.0), new), primal, atol=1e-9)
    assert torch.allclose(_ridge_prediction(x, t, 5.0, new), primal, atol=1e-9)


def test_the_pilot_reads_a_bounded_projection_of_inputs_far_wider_than_the_rows(monkeypatch):
    """A side wider than twice the rows (beyond every calibration suite): the pilot reads 66 principal components."""
    import mmdistill.advisor.predict as predict

    seen = []
    real = predict.pilot_gain
    monkeypatch.setattr(predict, "pilot_gain", lambda xa, xb, *a, **k: seen.append(xb.shape) or real(xa, xb, *a, **k))
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    predict.advise(torch.randn(200, 10, generator=g), torch.randn(200, 3000, generator=g), y, bootstrap=2)
    assert seen == [(200, 66)]
