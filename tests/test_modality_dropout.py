"""``supervised``'s ``modality_dropout``: training examples keep one modality with probability p (ModDrop)."""

import pytest
import torch
from torch import nn

from mmdistill.batch import INDEX, LABEL
from mmdistill.config import TrainerConfig
from mmdistill.engine.api import distill
from mmdistill.errors import ConfigError
from mmdistill.masking import Masker
from mmdistill.methods.supervised import drop_modalities

torch.set_num_threads(1)


def test_each_dropped_example_keeps_exactly_one_modality_and_the_rest_are_untouched(toy_splits):
    batch = toy_splits.train.__getitems__(range(200))
    masker = Masker(toy_splits.train.specs(), "zeros")
    torch.manual_seed(0)
    out = drop_modalities(batch, masker, 0.5)
    a_gone = (out["a"] == 0).all(1)
    b_gone = (out["b"] == 0).all(1)
    assert not (a_gone & b_gone).any(), "never both removed"
    dropped = a_gone | b_gone
    assert 70 < int(dropped.sum()) < 130, "about half of the examples"
    assert 20 < int(a_gone.sum()) and 20 < int(b_gone.sum()), "either modality is kept"
    for m in ("a", "b"):
        kept = ~(out[m] == 0).all(1)
        assert torch.equal(out[m][kept], batch[m][kept]), "a kept modality is the input itself"
    assert out[LABEL] is batch[LABEL] and out[INDEX] is batch[INDEX]
    torch.manual_seed(0)
    again = drop_modalities(batch, masker, 0.5)
    assert all(torch.equal(again[k], out[k]) for k in out), "seeded: the same draw"
    mean_masker = Masker(toy_splits.train.specs(), "mean").fit(toy_splits.train.feature_mean())
    torch.manual_seed(0)
    by_mean = drop_modalities(batch, mean_masker, 0.5)
    assert torch.allclose(by_mean["a"][a_gone], toy_splits.train.feature_mean()["a"].expand(int(a_gone.sum()), -1))


class Recorder(nn.Module):
    """A linear student on both modalities that records, per forward pass, the rows with a modality all zeros."""

    modalities = ("a", "b")

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(32, 4)
        self.seen: list[tuple[bool, int]] = []

    def forward(self, batch):
        zero = ((batch["a"] == 0).all(1) | (batch["b"] == 0).all(1)).sum()
        self.seen.append((self.training, int(zero)))
        return self.lin(torch.cat([batch["a"], batch["b"]], 1))


@pytest.mark.parametrize("p", [0.0, 0.6])
def test_distill_drops_modalities_in_training_only(toy_splits, tmp_path, p):
    student = Recorder()
    cfg = TrainerConfig(epochs=2, batch_size=100)
    distill(student, None, toy_splits, tmp_path, "supervised", {"modality_dropout": p}, trainer=cfg, quiet=True)
    train = [z for training, z in student.seen if training]
    evals = [z for training, z in student.seen if not training]
    assert evals and all(z == 0 for z in evals), "evaluation sees the full input"
    assert (sum(train) > 0.4 * 100 * len(train)) if p else sum(train) == 0


def test_modality_dropout_must_be_a_probability_below_one(toy_splits, tmp_path):
    with pytest.raises(ConfigError, match="modality_dropout"):
        distill(Recorder(), None, toy_splits, tmp_path, "supervised", {"modality_dropout": 1.0}, quiet=True)


def test_a_dropped_example_keeps_the_modality_drawn_for_it_of_three():
    """The draws are ``rand(n) < p`` (dropped) then ``randint(M, (n,))`` (which modality stays), in that order;
    small batches, so that some modality has no dropped example in some draws."""
    from mmdistill.batch import ModalitySpec

    mods = ("a", "b", "c")
    masker = Masker([ModalitySpec(m, (2,)) for m in mods], "zeros")
    for seed in range(30):
        g = torch.Generator().manual_seed(100 + seed)
        batch = {m: torch.rand(5, 2, generator=g) + 1 for m in mods}  # never zero
        batch[LABEL], batch[INDEX] = torch.zeros(5, dtype=torch.long), torch.arange(5)
        torch.manual_seed(seed)
        dropped, kept = torch.rand(5) < 0.5, torch.randint(3, (5,))
        torch.manual_seed(seed)
        out = drop_modalities(batch, masker, 0.5)
        for row in range(5):
            for i, m in enumerate(mods):
                expect_kept = not dropped[row] or kept[row] == i
                assert torch.equal(out[m][row], batch[m][row] if expect_kept else torch.zeros(2)), (seed, row, m)


def test_no_dropout_leaves_the_batch_and_the_global_rng_alone(toy_splits):
    from mmdistill.methods.supervised import Supervised, SupervisedParams

    masker = Masker(toy_splits.train.specs(), "zeros")
    method = Supervised(SupervisedParams(), masker)
    student = Recorder()
    batch = toy_splits.train.__getitems__(range(8))
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    method.forward_student(student, batch)
    assert torch.equal(torch.rand(4), expected), "no random draw at p = 0"
    assert student.seen == [(True, 0)], "the full batch"
    with pytest.raises(ConfigError, match=r"^method\.params\.modality_dropout: needs the run's masker"):
        Supervised(SupervisedParams(modality_dropout=0.3), None).forward_student(student, batch)


def test_a_dropped_token_modality_gets_a_zero_attention_mask_even_without_one_in_the_batch():
    from mmdistill.batch import MASK_SUFFIX, ModalitySpec

    masker = Masker([ModalitySpec("a", (2,)), ModalitySpec("t", (3,), tokens=True)], "zeros")
    batch = {"a": torch.ones(64, 2), "t": torch.full((64, 3), 7), LABEL: torch.zeros(64, dtype=torch.long)}
    torch.manual_seed(0)
    out = drop_modalities(batch, masker, 0.5)
    t_gone = out["t" + MASK_SUFFIX].sum(1) == 0
    a_gone = (out["a"] == 0).all(1)
    assert 5 < int(t_gone.sum()) < 60 and 5 < int(a_gone.sum()) < 60 and not (t_gone & a_gone).any()
    assert (out["t" + MASK_SUFFIX][~t_gone] == 1).all(), "a kept token modality attends every token"
    assert (out["t"][~t_gone] == 7).all()
