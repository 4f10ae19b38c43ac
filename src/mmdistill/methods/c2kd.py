"""C2KD: bridging the modality gap for crossmodal KD (Huo, Xu, Guo, Wang, Guo; CVPR 2024).

Reconstructed from the paper's abstract (its full text was not available to us) and the authors' code
(github.com/huofushuo/C2KD, ``cramed/utils/helper.py: train_network_distill``). The abstract: the teacher
performs bidirectional distillation with the student; On-the-Fly Selection Distillation (OFSD) filters
out samples with misaligned soft labels and distils only non-target classes; proxy student and teacher
transfer knowledge progressively through bidirectional distillation. In the code:
Two learnable *proxies* map a hooked feature of each network to class logits: ``pi_s = P_s(h_s)``,
``pi_t = P_t(h_t)`` (``P``: spatial mean, Linear(d, d), LeakyReLU(0.1), Linear(d, C); the code's
1x1 conv + BatchNorm is a Linear here, without BatchNorm). With ``KL(p || q)`` summed over classes and
averaged over the batch, ``sg`` = stop-gradient, at temperature T (T^2 * KL; the code uses T = 1)::

    ce       = CE(y, s(x))
    proxy_s  = KL(softmax(sg s) || softmax(pi_s))        proxy learns its network's output
    output_s = KL(softmax(sg pi_s) || softmax(s))        ... and the output learns its proxy (bidirectional)
    proxy_t  = KL(softmax(sg t) || softmax(pi_t))
    ofsd_s   = (1/B) sum_i m_i * KL_nt(sg pi_t(i) || pi_s(i))    crossmodal, student proxy <- teacher proxy
    ofsd_t   = (1/B) sum_i m_i * KL_nt(sg pi_s(i) || pi_t(i))    crossmodal, teacher proxy <- student proxy

On-the-fly selection: ``m_i = 1[tau_b(pi_t(i), pi_s(i)) > krc_threshold]`` with Kendall's rank correlation
tau-b of the two proxies' logits over the classes (scipy's ``kendalltau``, as the code; no
correlation, e.g. all ties, selects nothing). ``KL_nt`` is the non-target KL of the code: both logit
vectors with the label's entry set to 0 (not removed), then softmax and KL. Weights: ``ce_weight``,
``self_weight`` (proxy_s, output_s, proxy_t), ``kd_weight`` (ofsd_s, ofsd_t); the code weighs all 1.

The teacher learns too when the run sets ``teacher.trainable: true`` (online distillation; its outputs are then
computed in each step, never cached), as in the code, which trains the teacher backbone in the same optimizer
step: its hooked feature feeds ``pi_t`` with gradients, ``proxy_t`` reads ``sg t``, and two terms are added::

    ce_t     = CE(y, t(x))                                the teacher's supervised term (weight ``ce_weight``)
    output_t = KL(softmax(sg pi_t) || softmax(t))         the teacher's output learns its proxy (``self_weight``)

With a frozen teacher (the default) only its proxy learns and those two terms are left out. The code's polynomial
learning-rate decay is left to the trainer's scheduler. Tasks: single-label classification (the non-target KL
needs one label per example).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..batch import LABEL, Batch
from ..registry import METHODS
from .base import StudentOutputs, TeacherOutputs
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Number, Temperature, Weight, needs_class_distribution


def kl_per_example(target_logits: Tensor, logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * KL(softmax(target/T) || softmax(logits/T))`` per example (B,)."""
    log_p = F.log_softmax(target_logits / temperature, -1)
    log_q = F.log_softmax(logits / temperature, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2


def non_target_kl(target_logits: Tensor, logits: Tensor, label: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-example KL with the label's logit set to 0 in both vectors (the authors' ``ntkl``)."""
    keep = 1.0 - F.one_hot(label, logits.shape[-1]).to(logits.dtype)
    return kl_per_example(target_logits * keep, logits * keep, temperature)


def kendall_tau_b(a: Tensor, b: Tensor) -> Tensor:
    """Kendall's tau-b between the rows of ``a`` and ``b`` (B, C) -> (B,); NaN where a row is all ties."""
    sa = torch.sign(a.unsqueeze(-1) - a.unsqueeze(-2))
    sb = torch.sign(b.unsqueeze(-1) - b.unsqueeze(-2))
    return (sa * sb).sum((-1, -2)) / (sa.abs().sum((-1, -2)) * sb.abs().sum((-1, -2))).sqrt()


def selection_mask(proxy_t: Tensor, proxy_s: Tensor, threshold: float) -> Tensor:
    """1 where the proxies' rank correlation exceeds ``threshold`` (NaN -> 0)."""
    tau = kendall_tau_b(proxy_t.detach(), proxy_s.detach())
    return (torch.nan_to_num(tau, nan=-2.0) > threshold).to(proxy_s.dtype)


def _proxy(dim: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1), nn.Linear(dim, num_classes))


def _pool(h: Tensor) -> Tensor:
    return h if h.dim() == 2 else h.flatten(2).mean(-1)


class C2KDParams(LayerPairParams):
    temperature: Temperature = Field(1.0, description="softmax temperature of every KL (the code: 1)")
    krc_threshold: Number = Field(0.0, ge=-1, lt=1, description="select examples whose proxies' Kendall tau is above")
    self_weight: Weight = Field(1.0, description="weight of proxy_s, output_s and proxy_t")
    kd_weight: Weight = Field(1.0, description="weight of the crossmodal terms ofsd_s and ofsd_t")


@METHODS.register("c2kd")
class C2KD(LayerPairMethod):
    Params = C2KDParams
    params: C2KDParams
    task_needs = (needs_class_distribution("its proxies and Kendall-tau selection read one class vector per example"),)
    teacher_training = "optional"

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        hs, ht = self.sample_features(sample_batch, student, teacher)
        with torch.no_grad():
            num_classes = student(sample_batch).shape[-1]
        self.proxy_s = _proxy(hs.shape[1], num_classes)
        self.proxy_t = _proxy(ht.shape[1], num_classes)

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        p, y, s = self.params, batch[LABEL], student_out.logits
        hs = student_out.features[p.student_layer]
        ht = teacher_out.features[p.teacher_layer].to(hs.dtype)
        pi_s, pi_t = self.proxy_s(_pool(hs)), self.proxy_t(_pool(ht))
        t, T = teacher_out.logits.to(s.dtype), p.temperature
        m = selection_mask(pi_t, pi_s, p.krc_threshold)
        terms = {
            "ce": F.cross_entropy(s, y),
            "proxy_s": kl_per_example(s.detach(), pi_s, T).mean(),
            "output_s": kl_per_example(pi_s.detach(), s, T).mean(),
            "proxy_t": kl_per_example(t.detach(), pi_t, T).mean(),
            "ofsd_s": (m * non_target_kl(pi_t.detach(), pi_s, y, T)).mean(),
            "ofsd_t": (m * non_target_kl(pi_s.detach(), pi_t, y, T)).mean(),
        }
        if self.teacher_learns:
            terms["ce_t"] = F.cross_entropy(t, y)
            terms["output_t"] = kl_per_example(pi_t.detach(), t, T).mean()
        return terms

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        weights = {
            "ce": p.ce_weight,
            "proxy_s": p.self_weight,
            "output_s": p.self_weight,
            "proxy_t": p.self_weight,
            "ofsd_s": p.kd_weight,
            "ofsd_t": p.kd_weight,
        }
        if self.teacher_learns:
            weights.update({"ce_t": p.ce_weight, "output_t": p.self_weight})
        return weights
