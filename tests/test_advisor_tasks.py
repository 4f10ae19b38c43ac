"""The advisor on multilabel and regression data: the pilot distillation in the task's own loss, KD term and
monitored metric, reported as uncalibrated evidence (an abstention from a calibrated interval), the class-label
probes named as not applicable, and bad targets refused in one line.

This module is importable by name in the tests (``test_advisor_tasks:splits`` is a ``data.dataset`` factory).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Dataset

from mmdistill.advisor import advise, advise_dataset
from mmdistill.cli import main
from mmdistill.errors import DataError

CLASS_ONLY = {"gamma", "cch_margin", "accuracy", "predicted_gain"}


def shared_latent(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latent z (n, 4), teacher inputs (n, 10): all of z and noise, student inputs (n, 10): half of z, noisy)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, generator=g)
    xa = torch.cat([z, torch.randn(n, 6, generator=g)], 1)
    xb = torch.cat([z[:, :2] + 0.5 * torch.randn(n, 2, generator=g), torch.randn(n, 8, generator=g)], 1)
    return z, xa, xb


def regression_target(z: torch.Tensor) -> torch.Tensor:
    return 10 * (z @ torch.tensor([1.0, -0.5, 0.8, 0.3])) + 100  # far from 0 and 1: the pilot standardises it


def multilabel_target(z: torch.Tensor) -> torch.Tensor:
    return (z[:, :3] > 0).float()


class Items(Dataset):
    """Dict items ``{"a", "b", "label"}`` of the shared-latent data, as a regression or a multilabel dataset."""

    modalities = ("a", "b")

    def __init__(self, n: int, seed: int, task: str) -> None:
        z, self.a, self.b = shared_latent(n, seed)
        self.task = task
        self.y = regression_target(z) if task == "regression" else multilabel_target(z)
        self.num_classes = 1 if task == "regression" else 3

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"a": self.a[i], "b": self.b[i], "label": self.y[i]}


def splits(task: str = "regression", n_train: int = 90) -> dict:
    return {"train": Items(n_train, 0, task), "val": Items(30, 1, task), "test": Items(30, 2, task)}


def assert_uncalibrated(advice, task: str, metric: str, higher_is_better: bool) -> None:
    """An abstention from any calibrated interval that carries the pilot's estimate and spread in the task's metric,
    with the class-label probes named as not applicable."""
    assert advice.task == task and advice.metric == metric and advice.metric_higher_is_better is higher_is_better
    assert advice.abstained and advice.predicted_gain is None and advice.predicted_gain_interval is None
    assert advice.basis == "uncalibrated" and "no calibration covers it" in advice.outside[0]
    assert torch.isfinite(torch.tensor([advice.pilot_gain, advice.pilot_gain_se])).all()
    assert set(advice.not_applicable) == CLASS_ONLY
    assert advice.gamma is None and advice.cch_margin is None and advice.teacher_accuracy is None
    text = advice.text()
    assert text.startswith(f"cannot predict: task {task!r}: no calibration covers it")
    assert f"metric {metric} ({'higher' if higher_is_better else 'lower'} is better)" in text
    assert "(uncalibrated)" in text and "not applicable: gamma:" in text and "not applicable: cch_margin:" in text


def test_regression_arrays_get_the_pilots_uncalibrated_mae_improvement():
    z, xa, xb = shared_latent(120, 0)
    advice = advise(xa, xb, regression_target(z), task="regression", bootstrap=2)
    assert_uncalibrated(advice, "regression", "mae", higher_is_better=False)
    scores = advice.pilot_scores
    # lower MAE is better: the gain is the no-KD student's error minus the KD student's, in the target's units
    assert advice.pilot_gain == pytest.approx(scores["no_kd"] - scores["kd"], abs=1e-4)
    assert 0 < scores["teacher"] < scores["no_kd"]  # the teacher sees all of the latent, the student half of it
    assert scores["unit"] == "(MAE units)"


def test_multilabel_items_get_the_pilots_uncalibrated_micro_f1_gain_in_points():
    advice = advise_dataset(Items(120, 0, "multilabel"), teacher="a", student="b", bootstrap=2)
    assert_uncalibrated(advice, "multilabel", "f1_micro", higher_is_better=True)
    scores = advice.pilot_scores
    assert advice.pilot_gain == pytest.approx(scores["kd"] - scores["no_kd"], abs=1e-4)
    assert all(0 <= scores[key] <= 100 for key in ("teacher", "no_kd", "kd")) and scores["unit"] == "points"
    assert scores["teacher"] > scores["no_kd"]


def test_the_closed_form_monitor_values_equal_the_tasks_metrics():
    """The pilot scores with ``monitor_value``; for these tasks it is the evaluation's metric in closed form."""
    from mmdistill.tasks import get_task

    g = torch.Generator().manual_seed(3)
    for name, target in (("regression", torch.randn(50, 2, generator=g)), ("multilabel", multilabel_target(
            torch.randn(50, 4, generator=g)))):  # fmt: skip
        task, output = get_task(name), torch.randn(*target.shape, generator=g)
        metrics = task.metrics(target.shape[1])
        task.update_metrics(metrics, output, target)
        expected = float(metrics.compute()[task.default_monitor])
        assert task.monitor_value(output, target) == pytest.approx(expected, abs=1e-5), name


CONFIG = """\
seed: 0
data: {{dataset: "test_advisor_tasks:splits", params: {{task: {task}}}}}
task: {task}
teacher: {{model: {{modalities: [a, b], encoder: {{hidden: [16], out_dim: 8}}}}}}
student: {{model: {{modalities: [b], encoder: {{hidden: [16], out_dim: 8}}}}}}
method: {{name: kd, params: {{lam: 0.5}}}}
trainer: {{epochs: 1, batch_size: 16, num_threads: 1, monitor: {monitor}}}
"""


@pytest.mark.parametrize("task,metric", [("regression", "mae"), ("multilabel", "f1_micro")])
def test_advise_config_on_regression_and_multilabel_data_exits_0_naming_the_metric(tmp_path, capsys, task, metric):
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.format(task=task, monitor=metric))
    capsys.readouterr()
    assert main(["advise", "--config", str(path), "--json", "--bootstrap", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == task and out["metric"] == metric and out["basis"] == "uncalibrated"
    assert out["abstained"] is True and out["predicted_gain"] is None and out["examples"] == 90
    assert set(out["not_applicable"]) == CLASS_ONLY and out["gamma"] is None
    assert out["representation"] == "teacher side: a flattened; b flattened; student side: b flattened"
    assert main(["advise", "--config", str(path), "--bootstrap", "2"]) == 0
    text = capsys.readouterr().out
    assert f"task {task!r}: no calibration covers it" in text and f"metric {metric} (" in text


@pytest.mark.parametrize(
    "rows,target,message",
    [
        (40, lambda z: regression_target(z).index_put((torch.tensor([5]),), torch.tensor(float("nan"))),
         r"advise: labels: 'label': task 'regression': a non-finite target \(NaN or Inf\) at example index 5"),
        (12, regression_target, r"advise: needs at least 20 paired examples, got 12"),
        (40, lambda z: torch.full((len(z),), 2.5), r"advise: labels: every example has the same target \(\[2\.5\]\)"),
        (40, lambda z: multilabel_target(z)[:, 0], r"advise: labels: 'label': task 'multilabel' expects a float "
         r"multi-hot tensor \(B, None\), one column per label"),
    ],
    ids=["regression-nan", "fewer-than-20-rows", "constant-target", "multilabel-one-column-vector"],
)  # fmt: skip
def test_bad_targets_for_these_tasks_are_one_clear_error(rows, target, message):
    z, xa, xb = shared_latent(rows, 1)
    task = "multilabel" if "multilabel" in message else "regression"
    with pytest.raises(DataError, match=message):
        advise(xa, xb, target(z), task=task)


def test_the_cli_refuses_a_regression_target_with_nan_in_one_line(tmp_path, capsys, monkeypatch):
    import test_advisor_tasks as here

    real = here.regression_target
    monkeypatch.setattr(here, "regression_target", lambda z: real(z).index_put((torch.tensor([3]),), torch.tensor(
        float("nan"))))  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.format(task="regression", monitor="mae"))
    capsys.readouterr()
    assert main(["advise", "--config", str(path), "--bootstrap", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "a non-finite target (NaN or Inf)" in err[0]


def test_advise_run_on_a_multilabel_run_folder_reads_its_teachers_outputs(tmp_path, capsys):
    """``advise --run``: the trained teacher's outputs stand for the teacher side; the advice is in micro-F1."""
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.format(task="multilabel", monitor="f1_micro"))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-baseline"]) == 0
    capsys.readouterr()
    assert main(["advise", "--run", str(tmp_path / "run"), "--json", "--bootstrap", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "multilabel" and out["metric"] == "f1_micro" and out["abstained"] is True
    assert out["representation"] == "teacher side: seed_0/teacher's logits; student side: b flattened"
    assert out["teacher_accuracy_student_modalities"] is None  # an accuracy: not computed for these labels
