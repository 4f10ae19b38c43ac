"""Pilot distillation: a small, cross-fitted KD-vs-no-KD experiment on the training sample itself.

The advisor's most direct estimate of the KD gain. The training rows are split into K
folds, R times over; for each split and fold a teacher is trained on the other folds' x_a, and a
no-KD and a KD student on the same folds' x_b (KD = ``w0 CE + w1 KL(t || s)``, T = 1, the paper's
loss, :mod:`.ensemble`); both students are scored on the held-out fold. Everything is one batched
ensemble per stage (R x K teachers, then 2 x R x K students), so the pilot costs a few ms on the
tiny models of the Venn protocol. Reported, averaged over the R splits:

    gain_acc  = mean over held-out rows of [KD correct] - [no-KD correct]          (points)
    gain_prob = mean over held-out rows of p_KD(y | x_b) - p_noKD(y | x_b)          (points; smoother)

and their standard errors across the R splits, plus the cross-validated teacher and no-KD accuracy
(the "naive rule" teacher - student). The students see (K-1)/K of the rows and train for fewer,
larger steps than the protocol (``lr * epochs`` kept near the protocol's 0.1 x 1000): the advisor's
calibration (:mod:`.advisor`), fitted on Venn development suites, maps these signals to the gain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..mfh.ensemble import Run, make_mlp, train_runs


@dataclass
class PilotResult:
    gain_acc: float
    gain_prob: float
    gain_acc_se: float
    gain_prob_se: float
    teacher_accuracy: float
    student_accuracy: float
    models: int


def _folds(n: int, k: int, gen: torch.Generator) -> list[Tensor]:
    perm = torch.randperm(n, generator=gen)
    return [perm[i::k] for i in range(k)]


def cross_fit_splits(n: int, folds: int, repeats: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """``repeats`` x ``folds`` (training rows, held-out rows) of ``n`` rows (``folds`` kept within 2 and n // 4),
    every training part cut to one size, so that the runs stack into batched ensembles."""
    folds = max(2, min(folds, n // 4))
    gen = torch.Generator().manual_seed(seed)
    m = n - -(-n // folds)
    splits = []
    for _ in range(repeats):
        parts = _folds(n, folds, gen)
        splits += [(torch.cat([parts[j] for j in range(folds) if j != f])[:m], parts[f]) for f in range(folds)]
    return splits


def pilot_gain(
    xa: Tensor,
    xb: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    folds: int = 5,
    repeats: int = 4,
    epochs: int = 250,
    lr: float = 0.4,
    hidden: Sequence[int] = (),
    kd_weights: tuple[float, float] = (1.0, 1.0),
    seed: int = 0,
) -> PilotResult:
    """Cross-fitted pilot of no-KD vs KD students on (xa, xb, y); see the module docstring."""
    n = y.shape[0]
    folds = max(2, min(folds, n // 4))
    splits = cross_fit_splits(n, folds, repeats, seed)
    xa, xb = xa.float(), xb.float()
    state = torch.random.get_rng_state()
    try:
        torch.random.default_generator.manual_seed(seed)
        nets = [[make_mlp(d, hidden, num_classes) for d in (xa.shape[1], xb.shape[1], xb.shape[1])] for _ in splits]
    finally:
        torch.random.set_rng_state(state)
    teachers = train_runs([Run(net[0], xa[tr], y[tr]) for net, (tr, _) in zip(nets, splits)], lr=lr, epochs=epochs)
    soft = torch.softmax(teachers.logits([xa[tr] for tr, _ in splits]), -1)
    runs = []
    for net, (tr, _), p in zip(nets, splits, soft):
        runs += [Run(net[1], xb[tr], y[tr]), Run(net[2], xb[tr], y[tr], p, kd_weights[0], kd_weights[1])]
    students = train_runs(runs, lr=lr, epochs=epochs)
    acc_diff, prob_diff, t_acc, s_acc = (np.zeros((repeats, n)) for _ in range(4))
    for j, (_, held) in enumerate(splits):
        r = j // folds
        t_logits = _logits(teachers, j, xa.shape[1], xa[held])
        nokd, kd = (_logits(students, 2 * j + i, xb.shape[1], xb[held]) for i in (0, 1))
        yh = y[held]
        p_nokd, p_kd = (torch.softmax(z, -1).gather(1, yh[:, None]).squeeze(1) for z in (nokd, kd))
        c_nokd, c_kd = ((z.argmax(1) == yh).double() for z in (nokd, kd))
        acc_diff[r, held] = (c_kd - c_nokd).numpy()
        prob_diff[r, held] = (p_kd - p_nokd).double().numpy()
        t_acc[r, held] = (t_logits.argmax(1) == yh).double().numpy()
        s_acc[r, held] = c_nokd.numpy()
    per_acc, per_prob = 100 * acc_diff.mean(1), 100 * prob_diff.mean(1)
    se = lambda v: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")  # noqa: E731
    return PilotResult(
        float(per_acc.mean()),
        float(per_prob.mean()),
        se(per_acc),
        se(per_prob),
        float(t_acc.mean()),
        float(s_acc.mean()),
        3 * len(splits),
    )


def _logits(trained, r: int, width: int, x: Tensor) -> Tensor:
    """Run r's logits on x (its first layer cut back to ``width`` columns)."""
    h = x
    params = trained.layer_params(r, width)
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = torch.relu(h)
    return h
