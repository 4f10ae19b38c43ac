"""MST-Distill: a mixture of specialised teachers with an instance-level router (Li, Yang, Chen, Dong, Chen, Wang,
ACM MM 2025, "MST-Distill: Mixture of Specialized Teachers for Cross-Modal Knowledge Distillation"; the authors'
code: github.com/Gray-OREO/MST-Distill, ``KD_methods/MST.py`` and ``main-MST-Distill.py``).

Teacher k becomes a specialised teacher by a mask on the features that enter its last layer::

    f_k = output of ``feature_layer``,   m_k = MaskNet_k(f_k) in (0, 1)^D_k,   z_k = head_k(m_k * f_k)

(``head_k``: the teacher's own frozen ``classifier_layer``). A router reads the student's logits s(x) and scores
the K specialised teachers per example, g(x) = softmax(W_2 (W_1 s(x) + b_1) + b_2); the student learns from the
``top_k`` teachers it picks::

    L = w_task CE(y, s) + w_kd L_kd + w_balance L_balance + L_mask
    L_kd      = mean_i (1/k) sum_{j in top_k(g(x_i))} T^2 KL(softmax(z_j(x_i)/T) || softmax(s(x_i)/T))   (z_j fixed)
    L_balance = (1/K) sum_j u_j (log u_j - log gbar_j),   gbar = mean_i g(x_i),   u_j = 1/K
    L_mask    = (1/K) sum_j T^2 KL(softmax(s/T) || softmax(z_j/T))      (s fixed: it trains the masks only)

MaskNet (the code's ``MaskNet_1d``): the D feature values as D tokens, each embedded to width h by one
``Linear(D, D * h)``, multi-head self-attention over the tokens, ``Linear(h, 1)`` and a sigmoid: one mask value per
feature, per example.

From the paper: the idea of specialised teachers from several multimodal and crossmodal teachers, the instance-level
router choosing among them per example (path selection), and a masking module trained apart from the student to
reconstruct each teacher's representation towards what the student can follow (knowledge drift).
From the code: the router's form (two linear layers without an activation between, on the student's logits), the
top-k choice with the KD term averaged over the k chosen (T = 4 there), the KL load-balancing term (``lb_mode:
KL``), MaskNet's architecture, and the masks' objective (the masked teacher's KL towards the detached student). As
there, the KD term uses only which teachers the router picks, not its scores, so the router learns from the
balancing term alone (which also reaches the student's logits).
Simplified here: (1) the teachers are the run's frozen teachers: the code's first stage, which co-trains teachers
and student, is left out; (2) the masks train in the same steps as the student, against the current student, where
the code trains them in a stage of their own against the co-trained student and then freezes them; (3) one masked
layer per teacher, the input of its last layer, so there are K specialised teachers (the code masks up to two
layers each, K * mask_layer_num), and the teachers' hooked features can be cached; (4) 2-D feature maps (the code's
``MaskNet_2d``) are not reconstructed: ``feature_layer`` must give (B, D) features; (5) the mask width ``mask_hidden``
is a parameter (the code: about D / 2).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from ..batch import Batch
from ..errors import ConfigError
from ..kl import kd_loss, kd_per_example
from ..models.hooks import FeatureHooks, find_module
from ..registry import METHODS
from .base import StudentOutputs, TeacherOutputs, TeacherRequest
from .multi_teacher_base import MultiTeacherMethod, member_outputs, teacher_modules
from .params import Count, MethodParams, Temperature, Weight, needs_class_distribution


class MSTParams(MethodParams):
    temperature: Temperature = Field(4.0, description="T of the KD and mask terms, in [0.05, 100]")
    top_k: Count = Field(1, ge=1, le=1024, description="teachers the router picks per example (at most K)")
    w_task: Weight = Field(1.0, description="weight of the student's CE")
    w_kd: Weight = Field(1.0, description="weight of the KD term from the top_k teachers")
    w_balance: Weight = Field(1.0, description="weight of the router's load-balancing term")
    feature_layer: str = Field(
        "head.0", min_length=1, max_length=500, description="teacher layer whose output is masked"
    )
    classifier_layer: str = Field("head.1", min_length=1, max_length=500, description="teacher layer it feeds (last)")
    mask_hidden: Count = Field(8, ge=1, le=1024, description="MaskNet: width h of each feature's token")
    mask_heads: Count = Field(1, ge=1, le=64, description="MaskNet: attention heads (must divide mask_hidden)")


class MaskNet(nn.Module):
    """One mask value in (0, 1) per feature of a (B, D) input, from self-attention over the D features as tokens."""

    def __init__(self, dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.embed = nn.Linear(dim, dim * hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.score = nn.Linear(hidden, 1)

    def forward(self, features: Tensor) -> Tensor:
        tokens = self.embed(features).reshape(len(features), self.dim, self.hidden)
        mixed, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.score(mixed).squeeze(-1).sigmoid()


def routed_kd(student_logits: Tensor, teacher_logits: Tensor, gate: Tensor, top_k: int, T: float) -> Tensor:
    """``L_kd``: mean over examples of the KD terms from the ``top_k`` teachers of largest gate score, averaged over
    those k. ``teacher_logits`` (B, K, C), ``gate`` (B, K)."""
    per_teacher = kd_per_example(student_logits.unsqueeze(1), teacher_logits, T)  # (B, K)
    chosen = torch.zeros_like(gate).scatter(1, gate.topk(top_k, dim=1).indices, 1.0 / top_k)
    return (chosen * per_teacher).sum(1).mean()


def balance_loss(gate: Tensor) -> Tensor:
    """``L_balance``: KL(uniform || mean gate) over the K teachers, divided by K (the code's ``KLDivLoss``
    ``batchmean`` over a 1-D input)."""
    mean_gate = gate.mean(0)
    uniform = torch.full_like(mean_gate, 1.0 / len(mean_gate))
    return (uniform * (uniform.log() - mean_gate.log())).sum() / len(mean_gate)


def mask_loss(student_logits: Tensor, masked_teacher_logits: Tensor, T: float) -> Tensor:
    """``L_mask``: mean over the K teachers of T^2 KL(softmax(s/T) || softmax(z_j/T)), the student fixed.
    ``masked_teacher_logits`` (B, K, C)."""
    target = student_logits.detach().unsqueeze(1).expand_as(masked_teacher_logits)
    return kd_loss(masked_teacher_logits, target, T)  # every (example, teacher) pair counts as one row


def _layer(teacher: nn.Module, path: str, key: str) -> str:
    """``path`` when ``teacher`` has that layer; else the error names ``method.params.<key>``."""
    try:
        find_module(teacher, path)
    except ConfigError as err:
        raise ConfigError(f"method.params.{key}: {err}") from None
    return path


@METHODS.register("mst_distill")
class MSTDistill(MultiTeacherMethod):
    Params = MSTParams
    params: MSTParams
    min_teachers = 2
    task_needs = (needs_class_distribution("its router and masks read one class distribution per example"),)

    def teacher_request(self) -> TeacherRequest:
        return TeacherRequest(features=(self.params.feature_layer,))

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        p = self.params
        k = self.check_group(teacher, "mst_distill")
        if p.top_k > k:
            raise ConfigError(f"method.params.top_k: {p.top_k} is above the run's {k} teachers; use 1 ... {k}")
        if p.mask_hidden % p.mask_heads:
            raise ConfigError(f"method.params.mask_heads: {p.mask_heads} does not divide mask_hidden {p.mask_hidden}")
        found = [self._teacher_head(member, sample_batch) for member in teacher_modules(teacher)]
        self.__dict__["_heads"] = [head for head, _, _ in found]  # the teachers' own frozen layers: not trained here
        self.masks = nn.ModuleList(MaskNet(dim, p.mask_hidden, p.mask_heads) for _, dim, _ in found)
        logits = found[0][2]
        classes = logits.shape[-1]
        self.router = nn.Sequential(nn.Linear(classes, 2 * classes), nn.Linear(2 * classes, k))
        self.masks.to(logits.device)
        self.router.to(logits.device)

    def _teacher_head(self, member: nn.Module, sample: Batch) -> tuple[nn.Module, int, Tensor]:
        """The teacher's ``classifier_layer`` and the width of ``feature_layer``, checked: the layer applied to the
        features gives the teacher's logits (so masking the features is masking what enters its last layer)."""
        p = self.params
        with torch.no_grad(), FeatureHooks(member, [_layer(member, p.feature_layer, "feature_layer")]) as feats:
            logits = member(sample)
        features = feats[p.feature_layer]
        if features.dim() != 2:
            raise ConfigError(
                f"method.params.feature_layer: {p.feature_layer!r} gives features of shape {tuple(features.shape)}; "
                "mst_distill masks (batch, features) outputs"
            )
        head = find_module(member, _layer(member, p.classifier_layer, "classifier_layer"))
        try:
            with torch.no_grad():
                fits = head(features).shape == logits.shape and torch.allclose(head(features), logits, 1e-4, 1e-4)
        except RuntimeError:  # the layer cannot read these features (another width)
            fits = False
        if not fits:
            raise ConfigError(
                f"method.params.classifier_layer: {p.classifier_layer!r} applied to the output of {p.feature_layer!r} "
                "does not give the teacher's logits; name the teacher's last layer and the layer whose output it reads"
            )
        return head, features.shape[1], logits

    def masked_teacher_logits(self, teacher_out: TeacherOutputs | None) -> Tensor:
        """(B, K, C) logits of the specialised teachers: each teacher's last layer on its masked features."""
        outs = []
        for mask_net, head, member in zip(self.masks, self.__dict__["_heads"], member_outputs(teacher_out)):
            features = member.features[self.params.feature_layer]
            outs.append(head(mask_net(features) * features))
        return torch.stack(outs, dim=1)

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        p = self.params
        masked = self.masked_teacher_logits(teacher_out)
        gate = self.router(student_out.logits).softmax(-1)
        return {
            "ce": self.supervised_loss(batch, student_out),
            "kd": routed_kd(student_out.logits, masked.detach(), gate, p.top_k, p.temperature),
            "balance": balance_loss(gate),
            "mask": mask_loss(student_out.logits, masked, p.temperature),
        }

    def loss_weights(self) -> dict[str, float]:
        return {"ce": self.params.w_task, "kd": self.params.w_kd, "balance": self.params.w_balance, "mask": 1.0}
