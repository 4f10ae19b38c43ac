"""The method contract: unweighted terms, weights as data, one total; the trainer minimises exactly that total."""

import pytest
import torch
from torch import nn

from mmdistill.batch import INDEX, LABEL
from mmdistill.config import TrainerConfig
from mmdistill.engine.system.launch import make_fabric
from mmdistill.engine.trainer import DistillationModule, fit
from mmdistill.methods.base import Method, NoParams, PerExample, StudentOutputs, term_value, weighted_total


class ConstantLogits(nn.Module):
    """A student that predicts the same logits ``b`` for every example: d(logits.mean(0)[c])/db = e_c."""

    def __init__(self, init: list[float]) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(init))

    def forward(self, batch):
        return self.b.expand(len(batch[LABEL]), -1)


class FixedTerms(Method):
    """A method whose terms and weights the test chooses; records the calls the trainer makes."""

    needs_teacher = False

    def __init__(self, terms, weights=None) -> None:
        super().__init__(NoParams())
        self.terms, self.weights, self.calls = terms, weights or {}, []

    def before_step(self, student, batch, teacher_out) -> None:
        self.calls.append(("before_step", student))

    def losses(self, batch, student_out, teacher_out):
        self.calls.append(("losses", None))
        return self.terms(batch, student_out.logits)

    def loss_weights(self):
        return self.weights


def one_sgd_step(splits, tmp_path, student, method):
    cfg = TrainerConfig(
        epochs=1,
        batch_size=len(splits.train),
        optimizer={"name": "sgd", "lr": 1.0, "momentum": 0.0},
        test_checkpoint="last",
    )
    return fit(
        make_fabric(cfg),
        DistillationModule(student, method),
        splits.train,
        splits.val,
        cfg,
        seed=0,
        out_dir=tmp_path,
        quiet=True,
    )


def example_weights(batch):
    return (batch[INDEX] % 3).float()  # 0, 1 or 2: data, not a constant


def test_total_is_the_weighted_sum_with_per_example_weights_and_default_weight_one():
    x = torch.tensor(2.0, requires_grad=True)
    terms = {"a": x**2, "b": 3 * x, "c": PerExample(torch.stack([x, 2 * x]), torch.tensor([1.0, 3.0]))}
    total = weighted_total(terms, {"a": 0.5})  # b and c are not listed: they weigh 1
    (grad,) = torch.autograd.grad(total, x)
    assert total.item() == pytest.approx(0.5 * 4 + 6 + (2 + 12) / 2)
    assert grad.item() == pytest.approx(0.5 * 2 * 2 + 3 + (1 + 6) / 2)
    assert term_value(terms["c"]).item() == pytest.approx(7.0), "a PerExample counts as mean(weights * values)"


def test_the_trainer_steps_on_the_weighted_total_and_logs_each_term_before_its_weight(toy_splits, tmp_path):
    def terms(batch, logits):
        mean = logits.mean(0)
        return {"a": mean[0], "b": mean[1], "c": PerExample(logits[:, 2], example_weights(batch))}

    student = ConstantLogits([1.0, 2.0, 3.0, 4.0])
    result = one_sgd_step(toy_splits, tmp_path, student, FixedTerms(terms, {"a": 2.0, "b": 0.25}))
    w_mean = example_weights(toy_splits.train.__getitems__(range(len(toy_splits.train)))).mean().item()
    assert 0.5 < w_mean < 1.5
    # SGD at lr 1: b <- b - grad, grad = (2, 0.25, mean(w), 0)
    torch.testing.assert_close(student.b.detach(), torch.tensor([1.0 - 2.0, 2.0 - 0.25, 3.0 - w_mean, 4.0]))
    logged = result.history[0]
    assert logged["train/a"] == pytest.approx(1.0) and logged["train/b"] == pytest.approx(2.0)
    assert logged["train/c"] == pytest.approx(3.0 * w_mean, rel=1e-5), "logged with its per-example weights"
    assert logged["train/loss"] == pytest.approx(2.0 * 1.0 + 0.25 * 2.0 + 3.0 * w_mean, rel=1e-5)


def test_before_step_gets_the_bare_student_once_per_step_before_the_losses(toy_splits, tmp_path):
    student = ConstantLogits([0.0, 0.0, 0.0, 0.0])
    method = FixedTerms(lambda batch, logits: {"a": logits.mean()})
    cfg = TrainerConfig(epochs=2, batch_size=80, optimizer={"name": "sgd", "lr": 0.1})
    fit(
        make_fabric(cfg),
        DistillationModule(student, method),
        toy_splits.train,
        toy_splits.val,
        cfg,
        seed=0,
        out_dir=tmp_path,
        quiet=True,
    )
    steps = 2 * 3  # 240 examples, batches of 80
    assert [name for name, _ in method.calls] == ["before_step", "losses"] * steps
    assert all(s is student for name, s in method.calls if name == "before_step")


def test_a_method_without_loss_weights_sums_its_terms():
    student = StudentOutputs(torch.zeros(2, 3))
    method = FixedTerms(lambda batch, logits: {"x": torch.tensor(1.5), "y": torch.tensor(2.0)})
    terms = method.losses({LABEL: torch.zeros(2, dtype=torch.long)}, student, None)
    assert weighted_total(terms, method.loss_weights()).item() == 3.5
