"""CRD (methods/crd.py): the parts of its specification the hand-worked tests leave open."""

import math

import torch
from torch import nn

from mmdistill.batch import INDEX, LABEL
from mmdistill.methods.base import StudentOutputs, TeacherOutputs, term_value, weighted_total
from mmdistill.methods.crd import ContrastiveRD, bank_scores, critic, momentum_update, nce_loss

torch.set_num_threads(1)


class Rows:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_nce_loss_is_the_mean_over_the_batch():
    a, b = torch.tensor([[1.5, 0.5, 0.25]]), torch.tensor([[0.2, 1.0, 2.0]])
    both = nce_loss(torch.cat([a, b]), n_data=4)
    torch.testing.assert_close(both, (nce_loss(a, 4) + nce_loss(b, 4)) / 2)


def test_momentum_update_normalises_each_row_on_its_own():
    bank = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    momentum_update(bank, torch.tensor([0, 1]), torch.tensor([[1.0, 0.0], [0.0, 3.0]]), 0.5)
    # row 0: .5 [0, 1] + .5 [1, 0] -> [1, 1] / sqrt 2; row 1: .5 [0, 1] + .5 [0, 3] = [0, 2] -> [0, 1]
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(bank, torch.tensor([[r, r], [0.0, 1.0], [1.0, 0.0]]))


def scored(anchor, bank, idx, nce_t):
    """Both terms' scores of one anchor against one bank (the same anchor and bank twice), as (B, 1 + K) h values."""
    scores = bank_scores(torch.stack([anchor, anchor]), (bank, bank), idx[:, 0], idx[:, 1:], nce_t)
    negative = scores.negative[0] if scores.counts is None else scores.negative[0].gather(1, idx[:, 1:])
    return torch.cat([scores.positive[0].unsqueeze(1), negative], 1).exp()


def test_bank_scores_take_a_low_precision_anchor_against_a_float32_bank():
    torch.manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(100, 4), dim=1)
    anchor = torch.nn.functional.normalize(torch.randn(3, 4), dim=1).bfloat16()
    for idx in (torch.randint(100, (3, 2)), torch.randint(100, (3, 20)), torch.randint(100, (3, 120))):  # 3 paths
        out = scored(anchor, bank, idx, 0.5)
        assert out.dtype == torch.float32  # scored in bfloat16, summed in float32
        torch.testing.assert_close(out, critic(anchor.float(), bank[idx], 0.5), rtol=0.05, atol=0.05)


def test_bank_scores_gradient_survives_the_in_place_bank_update():
    """The bank is updated after the scores are computed and before backward (as in ``losses``)."""
    torch.manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    anchor = torch.randn(2, 4, requires_grad=True)
    for idx in (torch.randint(8, (2, 5)), torch.randint(8, (2, 12))):  # picked from the product; every row counted
        expected = torch.autograd.grad(critic(anchor, bank.clone()[idx], 0.5).sum(), anchor)[0]
        scores = scored(anchor, bank, idx, 0.5)
        momentum_update(bank, torch.arange(8), torch.randn(8, 4), 0.5)
        torch.testing.assert_close(torch.autograd.grad(scores.sum(), anchor)[0], expected)


def test_banks_start_uniform_in_plus_minus_a_from_their_own_seed():
    method = ContrastiveRD(ContrastiveRD.Params(student_layer="s", teacher_layer="t", feat_dim=12))
    a = 1 / math.sqrt(12 / 3)  # 0.5
    rng = torch.get_rng_state()
    method.prepare(Rows(2000), None, torch.device("cpu"))
    assert torch.equal(rng, torch.get_rng_state()), "the global RNG (negatives, checkpointed) is not consumed"
    first = (method.bank_s.clone(), method.bank_t.clone())
    for bank in first:
        assert bank.shape == (2000, 12)
        assert bank.min() >= -a and bank.max() <= a
        assert bank.min() < -a + 0.01 and bank.max() > a - 0.01 and abs(float(bank.mean())) < 0.01
    assert not torch.equal(*first), "two banks, two draws"
    method.prepare(Rows(2000), None, torch.device("cpu"))
    assert torch.equal(method.bank_s, first[0]) and torch.equal(method.bank_t, first[1]), "same banks every time"


def _method(**params):
    p = ContrastiveRD.Params(student_layer="s", teacher_layer="t", feat_dim=2, nce_k=3, nce_t=0.5, **params)
    method = ContrastiveRD(p)
    model = nn.Sequential(nn.Linear(3, 3))
    model.modalities = ("x",)
    sample = {"x": torch.zeros(2, 3), LABEL: torch.zeros(2, dtype=torch.long)}
    method.sample_features = lambda batch, s, t: (torch.zeros(2, 2, 3), torch.zeros(2, 5))
    method.setup(sample, model, model)
    return method


def test_setup_sizes_the_embeddings_by_the_features_per_example_and_leaves_the_banks_empty():
    method = _method()
    assert method.embed_s.in_features == 6 and method.embed_t.in_features == 5
    assert method.embed_s.out_features == method.embed_t.out_features == 2
    assert method.bank_s.shape == method.bank_t.shape == (0, 2), "empty until prepare: the batch serves as the bank"
    assert float(method.z_s) < 0 and float(method.z_t) < 0, "Z not yet fixed"


def test_before_prepare_the_batch_is_the_bank_and_z_is_fixed_on_the_first_training_batch():
    method = _method().train()
    torch.manual_seed(0)
    hs, ht = torch.randn(4, 2, 3), torch.randn(4, 5)
    batch = {LABEL: torch.tensor([0, 1, 2, 0])}
    out = method.losses(
        batch, StudentOutputs(torch.zeros(4, 3), {"s": hs}), TeacherOutputs(torch.zeros(4, 3), {"t": ht})
    )
    method.after_step(1, epoch=1)  # the trainer, after the optimizer step
    assert len(method.bank_s) == 0, "no bank is created by a check"
    assert float(method.z_s) > 0 and float(method.z_t) > 0
    assert torch.isfinite(term_value(out["crd_s"])) and torch.isfinite(term_value(out["crd_t"]))


def test_total_weighs_ce_by_ce_weight_and_each_contrastive_term_by_beta():
    method = _method(beta=0.5, ce_weight=0.25).train()
    torch.manual_seed(1)
    hs, ht = torch.randn(4, 2, 3), torch.randn(4, 5)
    batch = {LABEL: torch.tensor([0, 1, 2, 0])}
    student_logits = torch.randn(4, 3)
    out = method.losses(batch, StudentOutputs(student_logits, {"s": hs}), TeacherOutputs(torch.zeros(4, 3), {"t": ht}))
    ce = torch.nn.functional.cross_entropy(student_logits, batch[LABEL])
    torch.testing.assert_close(term_value(out["ce"]), ce)
    expected = 0.25 * ce + 0.5 * (term_value(out["crd_s"]) + term_value(out["crd_t"]))
    torch.testing.assert_close(weighted_total(out, method.loss_weights()), expected)


def test_setup_takes_a_one_example_sample_batch():
    method = ContrastiveRD(ContrastiveRD.Params(student_layer="s", teacher_layer="t", feat_dim=2))
    method.sample_features = lambda batch, s, t: (torch.zeros(1, 2, 3), torch.zeros(1, 5))
    method.setup({}, nn.Identity(), nn.Identity())
    assert method.embed_s.in_features == 6 and method.embed_t.in_features == 5


def test_each_embedding_is_normalised_on_its_own_row():
    p = ContrastiveRD.Params(student_layer="s", teacher_layer="t", feat_dim=2, nce_k=3, nce_t=0.5, nce_m=0.25)
    method = ContrastiveRD(p)
    method.embed_s, method.embed_t = nn.Identity(), nn.Identity()
    for name in ("bank_s", "bank_t"):
        method.register_buffer(name, torch.zeros(0, 2))
    method.register_buffer("z_s", torch.tensor(-1.0))
    method.register_buffer("z_t", torch.tensor(-1.0))
    method.prepare(Rows(6), None, torch.device("cpu"))
    method.eval()
    bank_s, bank_t = method.bank_s.clone(), method.bank_t.clone()
    v_s, v_t = torch.tensor([[3.0, 4.0], [0.0, 0.5]]), torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    batch = {LABEL: torch.tensor([1, 0]), INDEX: torch.tensor([2, 4])}
    method.generator("cpu").manual_seed(5)  # the method's own random stream
    out = method.losses(
        batch, StudentOutputs(torch.zeros(2, 2), {"s": v_s}), TeacherOutputs(torch.zeros(2, 2), {"t": v_t})
    )
    negatives = torch.randint(6, (2, 3), generator=torch.Generator().manual_seed(5))
    idx = torch.cat([torch.tensor([[2], [4]]), negatives], 1)
    unit_s, unit_t = torch.tensor([[0.6, 0.8], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    h_s, h_t = critic(unit_s, bank_t[idx], 0.5), critic(unit_t, bank_s[idx], 0.5)
    torch.testing.assert_close(term_value(out["crd_s"]), nce_loss(h_s / (h_s.mean() * 6), 6))
    torch.testing.assert_close(term_value(out["crd_t"]), nce_loss(h_t / (h_t.mean() * 6), 6))
