"""FD-CMKD: frequency-decoupled crossmodal KD (Liu, Zhang, Huang, Xu, Yang; AAAI 2026, "Distilling Cross-Modal
Knowledge via Feature Disentanglement", arXiv 2511.19887).

The paper: low-frequency feature components agree across modalities, high-frequency ones hardly at all; so the
features of teacher and student are split by a Fourier transform into a low and a high band, the low band aligned
strongly (MSE), the high band loosely (an MSE of log-compressed values), after a scale normalisation, and a shared
classifier per band puts both models' band features into one space. The details come from the authors' code (a copy
of github.com/Johumliu/FD-CMKD: ``main_fd_cmkd.py``, ``utils/utils.py``: ``FDFilter``, ``norm_feat``, ``log``),
the paper's full text was not available to us. With ``h`` a hooked feature (B, D) (a map (B, D, *spatial) is
averaged over its spatial axes first), ``F`` the real FFT over the D channels, bin 0 the mean::

    low(h)  = F^-1(F(h) * 1[1 <= k <= K])         high(h) = F^-1(F(h) * 1[k > K])     (bin 0 in neither)
    K       = round(low_fraction * (D // 2))       (the code: D = 512, K = 128 of 256 bins; low_fraction 0.5)
    n(x)    = x / max(||x||_2, 1e-8) per example                                         (the scale normalisation)
    slog(x) = sign(x) * log(1 + |x|)
    low      = mean( (n(low(h_t)) - n(low(r(h_s))))^2 )                                  strong alignment
    high     = mean( (slog(n(high(h_t))) - slog(n(high(r(h_s)))))^2 )                   relaxed alignment
    align_b  = CE(y, A_b(relu(b(r(h_s))))) + CE(y, A_b(relu(b(h_t))))    b in {low, high}: the shared classifiers
    task_b   = CE(y, K_b(relu(b(r(h_s)))))                               the student's own band classifiers
    L = ce_weight * CE(y, s(x)) + low_weight * low + high_weight * high
        + align_weight * (align_low + align_high) + task_weight * (task_low + task_high)

``A_b``, ``K_b``: Linear(D, C) (the code's ``Classifier``: ReLU, then Linear); means over all B x D entries. The
teacher's band features are data (its outputs come from the cache), so only the student, ``r`` and the
classifiers learn. The code weighs every term 1.

What we assumed: the code's teacher and student features have the same width (512); here the student's feature
goes through a learned Linear ``r`` to the teacher's width D when they differ (identity when equal), as FitNets'
regressor, before the split. The code distils two students at once (audio <- visual teacher, visual <- audio
teacher); one run here is one direction. The code's evaluation takes the best of the student's three heads; here
the student's own output is evaluated, the band classifiers only train. Tasks: single-label classification.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..batch import LABEL, Batch
from ..errors import ConfigError
from ..registry import METHODS
from .base import StudentOutputs, TeacherOutputs
from .layer_pair import LayerPairMethod, LayerPairParams
from .params import Number, Weight, needs_class_distribution

BANDS = ("low", "high")
MIN_WIDTH = 4  # two frequency bins besides the mean: one for each band


def frequency_bands(h: Tensor, low_bins: int) -> tuple[Tensor, Tensor]:
    """``(low, high)``: ``h`` (B, D) with only real-FFT bins ``1..low_bins``, resp. the bins above, kept; in float32
    for a half-precision ``h`` (the FFT has no bfloat16 or float16 kernels)."""
    if h.dtype not in (torch.float32, torch.float64):
        h = h.float()
    spectrum = torch.fft.rfft(h, dim=-1)
    k = torch.arange(spectrum.shape[-1], device=h.device)
    low = torch.fft.irfft(spectrum * ((k >= 1) & (k <= low_bins)), n=h.shape[-1], dim=-1)
    high = torch.fft.irfft(spectrum * (k > low_bins), n=h.shape[-1], dim=-1)
    return low, high


def low_bin_count(width: int, low_fraction: float) -> int:
    """``K``: how many of the ``width // 2`` non-constant bins form the low band (at least 1, leaving 1 for high)."""
    bins = width // 2
    return min(max(round(low_fraction * bins), 1), bins - 1)


def scale_normalised(x: Tensor) -> Tensor:
    """Each example's vector divided by its L2 norm (at least 1e-8)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def signed_log(x: Tensor) -> Tensor:
    """``sign(x) * log(1 + |x|)``: the relaxed alignment's compression."""
    return torch.sign(x) * torch.log1p(x.abs())


def band_alignment(student_band: Tensor, teacher_band: Tensor, relaxed: bool) -> Tensor:
    """MSE of the scale-normalised bands (``relaxed``: of their signed logs)."""
    s, t = scale_normalised(student_band), scale_normalised(teacher_band)
    if relaxed:
        s, t = signed_log(s), signed_log(t)
    return F.mse_loss(s, t)


def _pool(h: Tensor) -> Tensor:
    return h if h.dim() == 2 else h.flatten(2).mean(-1)


def _classifier(width: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Linear(width, num_classes))


class FDCMKDParams(LayerPairParams):
    low_fraction: Number = Field(
        0.5, gt=0, lt=1, description="share of the feature's frequency bins (without the mean) in the low band"
    )
    low_weight: Weight = Field(1.0, description="weight of the low band's MSE")
    high_weight: Weight = Field(1.0, description="weight of the high band's log-MSE")
    align_weight: Weight = Field(1.0, description="weight of the shared classifiers' CE (align_low, align_high)")
    task_weight: Weight = Field(1.0, description="weight of the student's band classifiers' CE (task_low, task_high)")


@METHODS.register("fd_cmkd")
class FrequencyDecoupledCMKD(LayerPairMethod):
    Params = FDCMKDParams
    params: FDCMKDParams
    task_needs = (needs_class_distribution("its band classifiers are trained by cross-entropy over the classes"),)

    def setup(self, sample_batch: Batch, student: nn.Module, teacher: nn.Module | None) -> None:
        hs, ht = (_pool(h) for h in self.sample_features(sample_batch, student, teacher))
        width = ht.shape[1]
        if width < MIN_WIDTH:
            raise ConfigError(
                f"method.params.teacher_layer: FD-CMKD splits the layer's {width} channels into a low and a high "
                f"frequency band, which needs at least {MIN_WIDTH}; choose a wider layer"
            )
        with torch.no_grad():
            num_classes = student(sample_batch).shape[-1]
        self.project = nn.Identity() if hs.shape[1] == width else nn.Linear(hs.shape[1], width)
        self.low_bins = low_bin_count(width, self.params.low_fraction)
        self.shared = nn.ModuleDict({b: _classifier(width, num_classes) for b in BANDS})
        self.own = nn.ModuleDict({b: _classifier(width, num_classes) for b in BANDS})

    def losses(
        self, batch: Batch, student_out: StudentOutputs, teacher_out: TeacherOutputs | None
    ) -> dict[str, Tensor]:
        assert teacher_out is not None
        p, y = self.params, batch[LABEL]
        hs = self.project(_pool(student_out.features[p.student_layer]))
        ht = _pool(teacher_out.features[p.teacher_layer]).to(hs.dtype).detach()
        student_bands = dict(zip(BANDS, frequency_bands(hs, self.low_bins)))
        teacher_bands = dict(zip(BANDS, frequency_bands(ht, self.low_bins)))
        terms = {"ce": F.cross_entropy(student_out.logits, y)}
        for b in BANDS:
            terms[b] = band_alignment(student_bands[b], teacher_bands[b], relaxed=b == "high")
        for b in BANDS:
            shared = self.shared[b]
            terms[f"align_{b}"] = F.cross_entropy(shared(student_bands[b]), y) + F.cross_entropy(
                shared(teacher_bands[b]), y
            )
        for b in BANDS:
            terms[f"task_{b}"] = F.cross_entropy(self.own[b](student_bands[b]), y)
        return terms

    def loss_weights(self) -> dict[str, float]:
        p = self.params
        weights = {"ce": p.ce_weight, "low": p.low_weight, "high": p.high_weight}
        for b in BANDS:
            weights.update({f"align_{b}": p.align_weight, f"task_{b}": p.task_weight})
        return weights
