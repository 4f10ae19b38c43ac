"""The one KL divergence of the library: distillation losses, MSD saliency and the MFH reference trainer use it.

    KL(p || q) = sum_c p_c (log p_c - log q_c)                 (class axis last)
    KD_T(s, t) = T^2 * KL(softmax(t / T) || softmax(s / T))     (Hinton, Vinyals, Dean, 2015)

:func:`kd_per_example` gives KD for each example; :func:`kd_loss` is its batch mean (``batchmean``),
summed in the order of ``F.kl_div(..., reduction="batchmean", log_target=True)`` so that figures
computed before this module existed are reproduced bit for bit. A leaf module (torch only), so that
``methods``, ``saliency`` and ``mfh`` can all import it without an import cycle.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kl_summands(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``p_c (log p_c - log q_c)`` for each class c: ``KL(p || q)`` is their sum over the last axis."""
    return log_p.exp() * (log_p - log_q)


def kd_per_example(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` for each example: shape = the logits' leading dims."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return kl_summands(log_p_t, log_p_s).sum(-1) * temperature**2


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """The batch mean of :func:`kd_per_example` (every leading dimension counts as batch).

    Summed over all (example, class) summands at once, as ``F.kl_div``'s ``batchmean`` does; equal to
    ``kd_per_example(...).mean()`` up to float rounding.
    """
    c = student_logits.shape[-1]
    log_p_s = F.log_softmax(student_logits.reshape(-1, c) / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.reshape(-1, c) / temperature, dim=-1)
    return kl_summands(log_p_t, log_p_s).sum() / log_p_s.shape[0] * temperature**2
