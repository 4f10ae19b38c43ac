"""Each trainer setting has its observable effect: scheduler, grad_clip, precision, early stopping's min_delta."""

import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.batch import LABEL
from mmdistill.config import TrainerConfig
from mmdistill.engine.system.launch import make_fabric
from mmdistill.engine.trainer import DistillationModule, fit
from mmdistill.methods.base import Method, NoParams

SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.0}


class ConstantLogits(nn.Module):
    """The same logits ``b`` for every example: the gradient of ``logits.mean(0).sum()`` is all ones."""

    def __init__(self, init: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(init))

    def forward(self, batch):
        return self.b.expand(len(batch[LABEL]), -1)


class LinearOnA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 4)

    def forward(self, batch):
        return self.lin(batch["a"])


class OneTerm(Method):
    """A method with one term ``fn(batch, logits)``; records the dtype of the student's logits."""

    needs_teacher = False

    def __init__(self, fn) -> None:
        super().__init__(NoParams())
        self.fn, self.dtypes = fn, set()

    def losses(self, batch, student_out, teacher_out):
        self.dtypes.add(student_out.logits.dtype)
        return {"term": self.fn(batch, student_out.logits)}


def train(splits, tmp_path, student, fn, **trainer):
    cfg = TrainerConfig(**{"batch_size": len(splits.train), "optimizer": SGD, "test_checkpoint": "last", **trainer})
    method = OneTerm(fn)
    fabric = make_fabric(cfg)
    result = fit(
        fabric,
        DistillationModule(student, method),
        splits.train,
        splits.train,
        cfg,
        seed=0,
        out_dir=tmp_path,
        quiet=True,
    )  # validated on its training split: the val loss is the loss minimised
    return result, method


def sum_of_mean_logits(batch, logits):
    return logits.mean(0).sum()


@pytest.mark.parametrize(
    "scheduler, lrs",
    [
        ({"name": "step", "step_size": 1, "gamma": 0.5}, [0.1, 0.05, 0.025]),
        ({"name": "step", "step_size": 2, "gamma": 0.5}, [0.1, 0.1, 0.05]),
        ({"name": "cosine"}, [0.1 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]),
        ({"name": "none"}, [0.1, 0.1, 0.1]),
    ],
)
def test_the_scheduler_sets_the_lr_of_each_epoch(toy_splits, tmp_path, scheduler, lrs):
    student = ConstantLogits()
    result, _ = train(toy_splits, tmp_path, student, sum_of_mean_logits, epochs=3, scheduler=scheduler)
    # one full-batch step per epoch with gradient 1: b moves by exactly the lr used in that epoch
    torch.testing.assert_close(student.b.detach(), torch.full((4,), -sum(lrs)))
    logged = [row["lr"] for row in result.history]  # the lr after the epoch's scheduler step: the next epoch's
    assert logged == pytest.approx(lrs[1:] + [logged[-1]])


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # the plain PyTorch step and Fabric's
def test_grad_clip_bounds_the_global_gradient_norm(toy_splits, tmp_path, precision):
    def steep(batch, logits):
        return 1000.0 * logits.mean(0).sum()  # gradient norm 1000 * sqrt(4)

    clipped, free = ConstantLogits(), ConstantLogits()
    train(
        toy_splits,
        tmp_path / "c",
        clipped,
        steep,
        epochs=1,
        grad_clip=0.5,
        precision=precision,
        optimizer={**SGD, "lr": 1.0},
    )
    train(toy_splits, tmp_path / "f", free, steep, epochs=1, precision=precision, optimizer={**SGD, "lr": 1.0})
    assert clipped.b.detach().norm().item() == pytest.approx(0.5, rel=1e-4)
    assert free.b.detach().norm().item() == pytest.approx(2000.0, rel=1e-4)


def test_bf16_mixed_runs_the_student_forward_in_bfloat16(toy_splits, tmp_path):
    def ce(batch, logits):
        return F.cross_entropy(logits.float(), batch[LABEL])

    torch.manual_seed(0)
    mixed, full = LinearOnA(), LinearOnA()
    full.load_state_dict(mixed.state_dict())
    _, m_mixed = train(toy_splits, tmp_path / "m", mixed, ce, epochs=1, precision="bf16-mixed")
    _, m_full = train(toy_splits, tmp_path / "f", full, ce, epochs=1)
    assert m_mixed.dtypes == {torch.bfloat16} and m_full.dtypes == {torch.float32}
    assert not torch.equal(mixed.lin.weight, full.lin.weight), "a bf16 forward gives other gradients"
    torch.testing.assert_close(mixed.lin.weight, full.lin.weight, rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("min_delta, epochs_run", [(0.0, 6), (1e-5, 6), (0.05, 3)])
def test_early_stopping_counts_only_improvements_larger_than_min_delta(toy_splits, tmp_path, min_delta, epochs_run):
    def ce(batch, logits):
        return F.cross_entropy(logits, batch[LABEL])

    # full-batch gradient descent on the validation split's own loss (balanced classes): it falls every epoch,
    # by 1e-3 to 1e-2
    result, _ = train(
        toy_splits,
        tmp_path,
        ConstantLogits((1.0, 0.0, 0.0, 0.0)),
        ce,
        epochs=6,
        monitor="loss",
        early_stopping={"patience": 2, "min_delta": min_delta},
    )
    val = [row["val/loss"] for row in result.history]
    assert all(b < a for a, b in pairwise(val)) and all(a - b < 0.05 for a, b in pairwise(val))
    assert result.epochs_run == epochs_run
    assert result.stopped_early == (epochs_run < 6)
    assert result.best_epoch == (1 if epochs_run < 6 else 6)
