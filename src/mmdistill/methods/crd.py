"""Contrastive representation distillation, CRD (Tian, Krishnan, Isola; ICLR 2020).

Hooked features of a student and a teacher layer are flattened, embedded by learned linear maps and
L2-normalised: ``v_s = g_s(h_s)``, ``v_t = g_t(h_t)`` (dimension ``feat_dim``). A memory bank holds one
student and one teacher embedding per training example (N rows each). For example i with K negatives
j_1..j_K drawn uniformly from the N rows (with replacement), the critic is::

    h(v, m) = exp(<v, m> / nce_t) / Z,     Z = N * mean(exp(<v, m> / nce_t)) on the first batch, then fixed

and the NCE loss of an anchor against bank rows ``m_i`` (its positive) and ``m_{j_k}`` is::

    NCE = -(1/B) sum_i [ log(h_0 / (h_0 + K/N + eps)) + sum_k log((K/N) / (h_k + K/N + eps)) ],   eps = 1e-7

Terms ``crd_s`` (anchor v_s against the teacher bank) and ``crd_t`` (anchor v_t against the student
bank), both weighted ``beta``, plus ``ce``. After each training step the bank rows of the batch are
updated with momentum: ``m_i <- normalise(nce_m * m_i + (1 - nce_m) * v_i)``. The bank rows are
initialised uniform in ``[-a, a]``, ``a = 1/sqrt(feat_dim/3)``, as the authors' code.

State: the banks and the two Z constants are buffers of the method, so they are in every checkpoint
and a resumed run is bitwise the same. DDP: the batch's (row index, v_s, v_t) are all-gathered and
every process applies the same update, so the banks stay identical on all ranks (one global bank,
not one per rank); the first-batch Z is averaged over the ranks. Negatives are drawn from the
method's own generator (:meth:`~.base.Method.generator`: seeded from the run's seed, checkpointed).
``losses`` changes no state (in training it records the step's update); :meth:`ContrastiveRD.after_step`
applies the bank update and the first step's Z. Defaults follow the paper (feat_dim 128, nce_t 0.07,
nce_m 0.5, beta 0.8) except ``nce_k`` (paper 16384; 4096 here: CPU-sized). The authors' code can also draw
negatives from other classes only ("exact" mode); that is not reconstructed.

Tasks: any task (negatives are examples, not classes); the bank needs the dataset's ``index``.
Before :meth:`prepare` (e.g. the pre-flight check) the current batch serves as the bank.

Computation (the same loss, to float rounding): both terms are scored in one batched matrix product of the two
anchors against the two banks (:func:`bank_scores`), and the NCE terms are summed in log space,
``-log(h_0 / (h_0 + c)) = softplus(-x_0)`` and ``-log((K/N) / (h_k + c)) = softplus(x_k) - log((K/N) / c)`` with
``x = log h - log c``, ``c = K/N + eps`` (:func:`nce_terms`): no exp, division and log per negative. When the bank
has no more rows than the K negatives, each example's negatives are scored once per bank row and counted
(a row drawn twice counts twice); otherwise the drawn rows' scores are picked from the product.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..batch import INDEX, Batch
from ..data.contracts.split import Split
from ..registry import METHODS
from .base import StudentOutputs, TeacherOutputs
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Count, Number, Weight

NCE_EPS = 1e-7


def nce_loss(scores: Tensor, n_data: int) -> Tensor:
    """``scores`` (B, 1 + K): column 0 the positive's ``h``, the rest the negatives'. Noise prob. 1/N."""
    k = scores.shape[1] - 1
    noise = k / n_data
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + NCE_EPS))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + NCE_EPS))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


def critic(anchor: Tensor, bank_rows: Tensor, nce_t: float) -> Tensor:
    """``exp(<anchor_i, bank_rows_i,k> / nce_t)``: anchor (B, d), bank_rows (B, 1 + K, d) -> (B, 1 + K)."""
    return torch.exp(torch.bmm(bank_rows, anchor.unsqueeze(2)).squeeze(2) / nce_t)


FULL_PRODUCT_ROWS = 32  # score against every bank row when the bank has at most this many rows per drawn row


@dataclass
class BankScores:
    """``<anchor, bank row> / nce_t`` of both terms (axis 0: the student's anchors against the teacher's bank, then the
    teacher's against the student's): each example's positive (2, B) and its negatives, either the K drawn rows
    (2, B, K) or every bank row (2, B, N) with ``counts`` (B, N), how often each row was drawn for the example."""

    positive: Tensor
    negative: Tensor
    k: int
    counts: Tensor | None = None

    def summed(self, per_row: Tensor) -> Tensor:
        """Sum over each side's drawn negatives of ``per_row`` (shaped as :attr:`negative`) -> (2,)."""
        if self.counts is None:
            return per_row.sum((1, 2))
        return per_row.flatten(1) @ self.counts.flatten()

    def mean_critic(self) -> Tensor:
        """The mean of ``h = exp(score)`` over each side's B x (1 + K) drawn entries (2,), without gradient."""
        with torch.no_grad():
            b = self.positive.shape[1]
            return (self.positive.exp().sum(1) + self.summed(self.negative.exp())) / (b * (1 + self.k))


def bank_scores(
    anchors: Tensor, banks: tuple[Tensor, Tensor], rows: Tensor, negatives: Tensor, nce_t: float
) -> BankScores:
    """Scores of ``anchors`` (2, B, d) against ``banks`` (two (N, d) tensors, one per anchor): bank row ``rows[i]`` is
    example i's positive, ``negatives[i]`` (K indices) its negatives, the same draws for both terms.

    A bank of at most :data:`FULL_PRODUCT_ROWS` x (1 + K) rows is scored whole, both terms in one batched product of
    a copy of the banks (no (B, K, d) copy of bank rows; the banks' in-place update after the step leaves the
    product's saved input alone); a larger one through the drawn rows only. Scores are float32 at least."""
    n, (b, k) = len(banks[0]), negatives.shape
    scaled = anchors / nce_t
    if n > FULL_PRODUCT_ROWS * (1 + k):
        drawn = torch.cat([rows.unsqueeze(1), negatives], 1)
        picked = [bank[drawn].to(scaled.dtype) for bank in banks]  # (B, 1 + K, d) each
        scored = _at_least_float32(torch.stack([torch.bmm(picked[i], scaled[i].unsqueeze(2)) for i in (0, 1)]))
        return BankScores(scored[:, :, 0, 0], scored[:, :, 1:, 0], k)
    copied = torch.stack(banks).to(scaled.dtype)
    every = _at_least_float32(torch.bmm(scaled, copied.transpose(1, 2)))  # (2, B, N)
    positive = _at_least_float32((scaled * copied[:, rows]).sum(2))  # (2, B): no (2, B, N) gather to undo
    if n <= k:
        counts = torch.zeros(b, n, dtype=every.dtype, device=every.device)
        counts.scatter_add_(1, negatives, torch.ones((), dtype=every.dtype, device=every.device).expand(b, k))
        return BankScores(positive, every, k, counts)
    return BankScores(positive, every.gather(2, negatives.unsqueeze(0).expand(2, b, k)), k)


def _at_least_float32(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def nce_terms(scores: BankScores, z: Tensor, n_data: int) -> Tensor:
    """:func:`nce_loss` of both terms (2,) from their scores and normalisers ``z`` (2,), in log space:
    ``(1/B) sum_i [softplus(-x_i0) + sum_k softplus(x_ik)] - K log((K/N) / c)``, ``x = score - log(Z c)``,
    ``c = K/N + eps``."""
    noise = scores.k / n_data
    shift = torch.log(z.to(scores.positive.dtype) * (noise + NCE_EPS))
    positive = F.softplus(shift.unsqueeze(1) - scores.positive).sum(1)
    negative = scores.summed(F.softplus(scores.negative - shift.view(2, 1, 1)))
    constant = scores.k * math.log(noise / (noise + NCE_EPS))
    return (positive + negative) / scores.positive.shape[1] - constant


def momentum_update(bank: Tensor, rows: Tensor, v: Tensor, momentum: float) -> None:
    """``bank[rows] <- normalise(momentum * bank[rows] + (1 - momentum) * v)`` in place."""
    new = F.normalize(bank[rows] * momentum + v * (1 - momentum), dim=1)
    bank.index_copy_(0, rows, new)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_gather(x: Tensor) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def negatives_note(nce_k: int, rows: int) -> str | None:
    """A note when the K negatives per example are as many as the N rows of the bank or more: drawn with
    replacement, each row then comes back about K / N times for every example (the paper: 16384 of ~50000 rows)."""
    if nce_k < rows:
        return None
    return (
        f"mmdistill: note: method.params.nce_k: {nce_k} negatives per example from {rows} training rows, so each row "
        f"is drawn about {nce_k / rows:.1f} times per example (with replacement); set nce_k below {rows} "
        f"(e.g. {max(1, rows // 4)}) for distinct negatives"
    )


class CRDParams(LayerPairParams):
    feat_dim: Count = Field(128, ge=1, le=65536, description="embedding dimension")
    nce_k: Count = Field(4096, ge=1, le=1 << 20, description="negatives per example (paper: 16384)")
    nce_t: Number = Field(0.07, gt=0, le=100, description="critic temperature (on cosine similarities)")
    nce_m: Number = Field(0.5, ge=0, lt=1, description="momentum of the memory-bank update")
    beta: Weight = Field(0.8, description="weight of each contrastive term")


@dataclass
class BankUpdate:
    """What a training step changes in CRD's state: the batch's bank rows and embeddings, and Z on the first step."""

    rows: Tensor
    v_s: Tensor
    v_t: Tensor
    z_s: Tensor
    z_t: Tensor
    bank_rows: bool  # the rows are bank rows (after prepare), else the batch served as the bank


@METHODS.register("crd")
class ContrastiveRD(LayerPairMethod):
    Params = CRDParams
    params: CRDParams
    step_update: BankUpdate | None = None
    bank_s: Tensor  # buffers made in setup (declared for the type checker: nn.Module types them Tensor | Module)
    bank_t: Tensor
    z_s: Tensor
    z_t: Tensor

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        hs, ht = self.sample_features(sample_batch, student, teacher)
        d = self.params.feat_dim
        self.embed_s = nn.Linear(hs[0].numel(), d)
        self.embed_t = nn.Linear(ht[0].numel(), d)
        self.register_buffer("bank_s", torch.zeros(0, d))
        self.register_buffer("bank_t", torch.zeros(0, d))
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def prepare(self, train: Split, teacher: nn.Module | None, device: torch.device) -> Split:
        d, n = self.params.feat_dim, len(train)
        note = negatives_note(self.params.nce_k, n)
        if note and not (_distributed() and torch.distributed.get_rank() != 0):
            print(note, file=sys.stderr, flush=True)
        a = 1.0 / math.sqrt(d / 3)
        g = torch.Generator().manual_seed(0)  # same banks on every rank; the global RNG is not consumed
        self.bank_s = (torch.rand(n, d, generator=g) * 2 * a - a).to(device)
        self.bank_t = (torch.rand(n, d, generator=g) * 2 * a - a).to(device)
        return train

    def _z(self, scores: BankScores, n: int) -> Tensor:
        """The stored Z of both terms (2,), or (before the first training step has fixed them) this batch's
        ``N * mean(h)``, averaged over the processes under DDP."""
        stored = torch.stack([self.z_s, self.z_t])
        if bool((stored >= 0).all()):
            return stored
        value = scores.mean_critic() * n
        if _distributed():
            torch.distributed.all_reduce(value)
            value /= torch.distributed.get_world_size()
        return torch.where(stored >= 0, stored.to(value.dtype), value)

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        p = self.params
        hs = student_out.features[p.student_layer]
        ht = teacher_out.features[p.teacher_layer].to(hs.dtype)
        v_s = F.normalize(self.embed_s(hs.flatten(1)), dim=1)
        v_t = F.normalize(self.embed_t(ht.flatten(1)), dim=1)
        prepared = len(self.bank_s) > 0
        if prepared:
            rows, bank_s, bank_t = batch[INDEX].to(v_s.device), self.bank_s, self.bank_t
        else:
            rows = torch.arange(len(v_s), device=v_s.device)
            bank_s, bank_t = v_s.detach(), v_t.detach()
        n = len(bank_s)
        negatives = torch.randint(n, (len(rows), p.nce_k), device=rows.device, generator=self.generator(rows.device))
        scores = bank_scores(torch.stack([v_s, v_t]), (bank_t, bank_s), rows, negatives, p.nce_t)
        z = self._z(scores, n)
        if self.training:  # applied by after_step, once the step is taken
            self.step_update = BankUpdate(rows, v_s.detach().float(), v_t.detach().float(), z[0], z[1], prepared)
        terms = nce_terms(scores, z, n)
        return {"ce": self.supervised_loss(batch, student_out), "crd_s": terms[0], "crd_t": terms[1]}

    def after_step(self, step: int, epoch: int) -> None:
        """The momentum update of the batch's bank rows (all processes' rows under DDP) and, after the first step,
        the fixed Z constants."""
        update, self.step_update = self.step_update, None
        if update is None:
            return
        with torch.no_grad():
            if update.bank_rows:
                r, vs, vt = update.rows, update.v_s, update.v_t
                if _distributed():
                    r, vs, vt = _all_gather(r), _all_gather(vs), _all_gather(vt)
                momentum_update(self.bank_s, r, vs, self.params.nce_m)
                momentum_update(self.bank_t, r, vt, self.params.nce_m)
            if self.z_s < 0:
                self.z_s.copy_(update.z_s)
                self.z_t.copy_(update.z_t)

    def loss_weights(self) -> dict[str, float]:
        return {"ce": self.params.ce_weight, "crd_s": self.params.beta, "crd_t": self.params.beta}
