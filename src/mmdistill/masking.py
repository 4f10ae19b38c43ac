"""Masking strategies: how a modality is *removed* from a batch.

Used by MSD (modality-only inputs), by saliency (input without one modality) and by
missing-modality evaluation. Every strategy replaces the removed modality ``m`` by a null
value of the same shape, so a model's ``forward`` needs no change:

* ``zeros``      x_m <- 0
* ``mean``       x_m <- mean of x_m over the training set (call :meth:`Masker.fit`)
* ``learned``    x_m <- a learned null token per modality (a parameter, trained with the student)
* ``attention``  token modalities: the attention mask ``m_mask`` <- 0 (ids kept); the model must
                 honour the mask. Float modalities under this strategy fall back to ``zeros``.

A :class:`Masker` may use a different strategy per modality (``per_modality``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from torch import Tensor, nn

from .batch import INDEX, LABEL, MASK_SUFFIX, Batch, ModalitySpec
from .errors import BatchError, ConfigError
from .registry import MASKERS

if TYPE_CHECKING:
    from .config import MaskingConfig
    from .data.dataset import MultimodalDataset

STRATEGIES = ("zeros", "mean", "learned", "attention")
for _name in STRATEGIES:
    MASKERS.register(_name)(_name)


class Masker(nn.Module):
    """Removes modalities from batches, each by its configured strategy.

    ``specs``: the modalities this masker may have to remove; ``strategy``: the default;
    ``per_modality``: overrides by modality name.
    """

    def __init__(self, specs: Sequence[ModalitySpec], strategy: str = "zeros", per_modality: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.specs = {s.name: s for s in specs}
        per_modality = dict(per_modality or {})
        for m in per_modality:
            if m not in self.specs:
                raise ConfigError(f"masking.per_modality.{m}: unknown modality; known: {', '.join(self.specs)}")
        self.strategy = {m: per_modality.get(m, strategy) for m in self.specs}
        for m, s in self.strategy.items():
            MASKERS.get(s)  # raises a ConfigError listing the known strategies
            if s == "attention" and self.specs[m].tokens is False:
                self.strategy[m] = "zeros"
        self.null_tokens = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(self.specs[m].shape)) for m, s in self.strategy.items() if s == "learned"}
        )
        for m, s in self.strategy.items():
            if s in ("mean", "learned") and self.specs[m].tokens:
                raise ConfigError(f"masking: strategy {s!r} cannot remove token modality {m!r}; use 'attention' or 'zeros'")
            if s == "mean":
                self.register_buffer(f"mean_{m}", torch.zeros(self.specs[m].shape))
        self._fitted = False

    @torch.no_grad()
    def fit(self, means: Mapping[str, Tensor]) -> "Masker":
        """Store training-set means (``MultimodalDataset.feature_mean()``) for the ``mean`` strategy.

        Learned null tokens start from the mean too, when one is given.
        """
        for m, s in self.strategy.items():
            if s in ("mean", "learned") and m in means:
                target = getattr(self, f"mean_{m}") if s == "mean" else self.null_tokens[m]
                target.copy_(means[m].to(target))
        self._fitted = True
        return self

    def null_value(self, batch: Mapping[str, Tensor], m: str) -> Tensor:
        x = batch[m]
        s = self.strategy[m]
        if s == "mean":
            if not self._fitted:
                raise ConfigError("masking strategy 'mean' needs the training mean: call Masker.fit(train.feature_mean()) first")
            return getattr(self, f"mean_{m}").to(x.dtype).expand_as(x)
        if s == "learned":
            return self.null_tokens[m].to(x.dtype).expand_as(x)
        if s == "attention":
            return x  # ids unchanged; the attention mask does the removal
        return torch.zeros_like(x)

    def remove(self, batch: Mapping[str, Tensor], modalities: Sequence[str]) -> Batch:
        """A copy of ``batch`` in which each modality in ``modalities`` is replaced by its null value."""
        out = dict(batch)
        for m in modalities:
            if m not in self.specs:
                raise BatchError(f"cannot remove modality {m!r}: the masker knows {', '.join(self.specs)}")
            if m not in batch:
                raise BatchError(f"cannot remove modality {m!r}: it is not in the batch")
            out[m] = self.null_value(batch, m)
            if self.specs[m].tokens:
                mask_key = m + MASK_SUFFIX
                base = batch.get(mask_key, torch.ones(batch[m].shape[:2], dtype=torch.long, device=batch[m].device))
                out[mask_key] = torch.zeros_like(base)
        return out

    def keep_only(self, batch: Mapping[str, Tensor], keep: str | Sequence[str]) -> Batch:
        """``batch`` with every known modality except ``keep`` removed (``x^(m)`` in MSD)."""
        keep = [keep] if isinstance(keep, str) else list(keep)
        return self.remove(batch, [m for m in self.specs if m not in keep and m in batch])

    def variants(self, batch: Mapping[str, Tensor], views: Sequence[str | Sequence[str]]) -> Batch:
        """The full batch followed by one copy per view (a modality or a set kept), stacked on the example axis.

        For one batched forward pass over ``1 + len(views)`` inputs; split the outputs
        with :func:`split_variants`.
        """
        views = [dict(batch)] + [self.keep_only(batch, v) for v in views]
        keys = [k for k in batch if k not in (LABEL, INDEX)]
        stacked = {k: torch.cat([v[k] for v in views]) for k in keys}
        for k in (LABEL, INDEX):
            if k in batch:
                stacked[k] = batch[k].repeat(len(views))
        return stacked


def split_variants(stacked: Tensor, n_views: int) -> Tensor:
    """(V*B, ...) -> (V, B, ...): undo :meth:`Masker.variants` on a model output."""
    return stacked.reshape(n_views, stacked.shape[0] // n_views, *stacked.shape[1:])


def fit_masker(cfg: MaskingConfig, train: MultimodalDataset) -> Masker:
    """The run's masker (``masking:`` section), fitted on the training split (its per-modality means)."""
    return Masker(train.specs(), cfg.strategy, cfg.per_modality).fit(train.feature_mean())
