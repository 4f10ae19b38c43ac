"""Masking strategies: how a modality is *removed* from a batch.

Used by MSD (modality-only inputs), by saliency (input without one modality) and by
missing-modality evaluation. Every strategy replaces the removed modality ``m`` by a null
value of the same shape, so a model's ``forward`` needs no change:

* ``zeros``      x_m <- 0
* ``mean``       x_m <- mean of x_m over the training set (call :meth:`Masker.fit`)
* ``learned``    x_m <- a learned null token per modality (a parameter, trained with the student)
* ``attention``  token modalities: the attention mask ``m_mask`` <- 0 (ids kept); the model must
                 honour the mask. Float modalities under this strategy fall back to ``zeros``.

A :class:`Masker` may use a different strategy per modality (``per_modality``). Each strategy is a
:class:`NullValue` subclass registered in ``MASKERS``; a user's own one is registered the same way.

Partly paired data (rows that lack a modality, marked by its presence column ``<m>_present``: :mod:`mmdistill.batch`)
meet the same null values: :meth:`Masker.fill_absent` puts them in the absent rows before the teacher reads a batch,
:func:`missing_fractions` measures how many rows lack each modality, and :func:`check_pairing` refuses what cannot
be distilled (a row with no modality, a teacher modality missing in every row, a method whose terms cannot leave
rows out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, cast

import torch
from torch import Tensor, nn

from .batch import INDEX, LABEL, MASK_SUFFIX, PRESENT_SUFFIX, Batch, ModalitySpec, presence_keys
from .errors import BatchError, ConfigError, DataError
from .registry import MASKERS

if TYPE_CHECKING:
    from .config import MaskingConfig
    from .data.contracts.split import Split


class NullValue(nn.Module):
    """A masking strategy for one modality: what replaces ``x_m`` when the modality is removed.

    Register a subclass with ``@MASKERS.register("name")`` to make ``masking.strategy: name`` work from YAML.
    ``removes_tokens``/``removes_floats``: which modalities it can remove; ``changes_in_training``: its value is
    trained with the student (so teacher outputs on masked views cannot be cached). Parameters and buffers it
    creates in ``__init__`` are part of the masker's state.
    """

    removes_floats: ClassVar[bool] = True
    removes_tokens: ClassVar[bool] = False
    changes_in_training: ClassVar[bool] = False

    def __init__(self, spec: ModalitySpec) -> None:
        super().__init__()
        self.spec = spec

    @classmethod
    def for_modality(cls, spec: ModalitySpec) -> NullValue:
        """The strategy object for ``spec`` (a subclass may hand another strategy for a kind it does not handle)."""
        return cls(spec)

    def fit(self, mean: Tensor) -> None:
        """Called with the modality's training-set mean (:meth:`Masker.fit`); most strategies ignore it."""

    def forward(self, x: Tensor) -> Tensor:
        """The null value replacing ``x`` (same shape and dtype)."""
        raise NotImplementedError


@MASKERS.register("zeros")
class ZerosNull(NullValue):
    """x_m <- 0"""

    removes_tokens = True  # token ids 0, and the attention mask zeroed by the masker

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


@MASKERS.register("mean")
class MeanNull(NullValue):
    """x_m <- mean of x_m over the training set (needs :meth:`Masker.fit`)."""

    mean: Tensor  # a buffer (declared for the type checker: nn.Module types its attributes as Tensor | Module)

    def __init__(self, spec: ModalitySpec) -> None:
        super().__init__(spec)
        self.register_buffer("mean", torch.zeros(spec.shape))
        self.fitted = False

    def fit(self, mean: Tensor) -> None:
        self.mean.copy_(mean.to(self.mean))
        self.fitted = True

    def forward(self, x: Tensor) -> Tensor:
        if not self.fitted:
            raise ConfigError(
                "masking strategy 'mean' needs the training mean: call Masker.fit(train.feature_mean()) first"
            )
        return self.mean.to(x.dtype).expand_as(x)


@MASKERS.register("learned")
class LearnedNull(NullValue):
    """x_m <- a learned null token (a parameter trained with the student; starts at the training mean if fitted)."""

    changes_in_training = True

    def __init__(self, spec: ModalitySpec) -> None:
        super().__init__(spec)
        self.token = nn.Parameter(torch.zeros(spec.shape))

    @torch.no_grad()
    def fit(self, mean: Tensor) -> None:
        self.token.copy_(mean.to(self.token))

    def forward(self, x: Tensor) -> Tensor:
        return self.token.to(x.dtype).expand_as(x)


@MASKERS.register("attention")
class AttentionNull(NullValue):
    """Token modalities: ids kept, the attention mask ``m_mask`` <- 0 (by the masker); float modalities: zeros."""

    removes_tokens = True

    @classmethod
    def for_modality(cls, spec: ModalitySpec) -> NullValue:
        return cls(spec) if spec.tokens else ZerosNull(spec)

    def forward(self, x: Tensor) -> Tensor:
        return x  # ids unchanged; the attention mask does the removal


STRATEGIES = ("zeros", "mean", "learned", "attention")


def strategy_name(null: NullValue) -> str:
    """The registered name of a strategy object (for the teacher cache key and messages)."""
    for name in MASKERS.names():
        if type(null) is MASKERS.get(name):
            return name
    return type(null).__qualname__


class Masker(nn.Module):
    """Removes modalities from batches, each by its configured strategy (a registered :class:`NullValue`).

    ``specs``: the modalities this masker may have to remove; ``strategy``: the default;
    ``per_modality``: overrides by modality name.
    """

    def __init__(
        self, specs: Sequence[ModalitySpec], strategy: str = "zeros", per_modality: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        self.specs = {s.name: s for s in specs}
        per_modality = dict(per_modality or {})
        for m in per_modality:
            if m not in self.specs:
                raise ConfigError(f"masking.per_modality.{m}: unknown modality; known: {', '.join(self.specs)}")
        nulls: dict[str, NullValue] = {}
        for m, spec in self.specs.items():
            key = f"masking.per_modality.{m}" if m in per_modality else "masking.strategy"
            name = per_modality.get(m, strategy)
            cls = MASKERS.get(name, key)  # raises a ConfigError listing the known strategies
            if not (isinstance(cls, type) and issubclass(cls, NullValue)):
                raise ConfigError(
                    f"{key}: masking strategy {name!r} is registered as {cls!r:.80}, not a NullValue subclass"
                )
            if spec.tokens and not cls.removes_tokens:
                raise ConfigError(
                    f"masking: strategy {name!r} cannot remove token modality {m!r}; use 'attention' or 'zeros'"
                )
            if not spec.tokens and not cls.removes_floats:
                raise ConfigError(
                    f"masking: strategy {name!r} cannot remove float modality {m!r}; use 'zeros' or 'mean'"
                )
            nulls[m] = cls.for_modality(spec)
        self.nulls = nn.ModuleDict(nulls)
        self.strategy = {m: strategy_name(null) for m, null in nulls.items()}

    def null(self, m: str) -> NullValue:
        """Modality ``m``'s strategy object."""
        return cast(NullValue, self.nulls[m])  # nn.ModuleDict types its values as Module; Masker puts NullValues

    def changes_in_training(self, m: str) -> bool:
        """Whether modality ``m``'s null value is trained with the student (e.g. 'learned')."""
        return self.null(m).changes_in_training

    @torch.no_grad()
    def fit(self, means: Mapping[str, Tensor]) -> Masker:
        """Hand training-set means (``Split.feature_mean()``) to the strategies (``mean``; ``learned``
        starts from the mean too)."""
        for m in self.nulls:
            if m in means:
                self.null(m).fit(means[m])
        return self

    def null_value(self, batch: Mapping[str, Tensor], m: str) -> Tensor:
        return self.nulls[m](batch[m])

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

    def fill_absent(self, batch: Mapping[str, Tensor]) -> Batch:
        """``batch`` with each modality's absent rows (presence column 0) replaced by its null value, so that a model
        reads there what this masker's strategy gives for a removed modality, never the data's filler."""
        out = dict(batch)
        for m, key in presence_keys(batch).items():
            if m not in self.specs or m not in batch:
                continue
            absent = batch[key].reshape(-1) == 0
            if not bool(absent.any()):
                continue
            removed = self.remove(batch, [m])
            for k in (m, m + MASK_SUFFIX):  # a token modality's attention mask too (built as ones when absent)
                if k in removed:
                    kept = batch[k] if k in batch else torch.ones_like(removed[k])
                    rows = absent.reshape(-1, *(1,) * (kept.dim() - 1))
                    out[k] = torch.where(rows, removed[k], kept)
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
        copies = [dict(batch)] + [self.keep_only(batch, v) for v in views]
        keys = [k for k in batch if k not in (LABEL, INDEX)]
        stacked = {k: torch.cat([c[k] for c in copies]) for k in keys}
        for k in (LABEL, INDEX):
            if k in batch:
                stacked[k] = batch[k].repeat(len(copies), *(1,) * (batch[k].dim() - 1))  # (B, ...) targets too
        return stacked


def split_variants(stacked: Tensor, n_views: int) -> Tensor:
    """(V*B, ...) -> (V, B, ...): undo :meth:`Masker.variants` on a model output."""
    return stacked.reshape(n_views, stacked.shape[0] // n_views, *stacked.shape[1:])


def fit_masker(cfg: MaskingConfig, train: Split) -> Masker:
    """The run's masker (``masking:`` section), fitted on the training split: its per-modality means are read (one
    pass over an item dataset) only when a strategy uses them (a null value whose ``fit`` does something)."""
    masker = Masker(train.specs(), cfg.strategy, cfg.per_modality)
    needed = [m for m in masker.nulls if type(masker.null(m)).fit is not NullValue.fit]
    means = train.feature_mean() if needed else {}
    return masker.fit({m: means[m] for m in needed if m in means})


def missing_fractions(split: Split) -> dict[str, float]:
    """modality -> the share of ``split``'s rows that lack it, for each modality with a presence column (``{}``: fully
    paired data). Column data read only their presence columns; item data that declare ``partly_paired`` are read
    once. A presence value other than 0 or 1, and a row that lacks every modality, are refused (DataError naming the
    column or the row). Computed once per split object."""
    known = getattr(split, "_missing_fractions", None)
    if known is not None:
        return known
    columns = _presence_columns(split)
    for key, values in columns.items():
        if not bool(((values == 0) | (values == 1)).all()):
            raise DataError(f"{split.name}: presence column {key!r} holds values other than 0 and 1")
    names = list(split.modality_names)
    if columns and all(m + PRESENT_SUFFIX in columns for m in names):
        none = torch.stack([columns[m + PRESENT_SUFFIX] == 0 for m in names]).all(0)
        if bool(none.any()):
            row = int(none.nonzero()[0, 0])
            keys = ", ".join(m + PRESENT_SUFFIX for m in names)
            raise DataError(
                f"{split.name}: row {row} lacks every modality ({keys} all 0), so no model sees an input there; "
                "drop the rows that hold no modality"
            )
    fractions = {k.removesuffix(PRESENT_SUFFIX): float((v == 0).float().mean()) for k, v in columns.items()}
    split._missing_fractions = fractions  # type: ignore[attr-defined]
    return fractions


def _presence_columns(split: Split) -> dict[str, Tensor]:
    """Each presence column of ``split`` as one (N,) tensor: the stored columns of column data, else (item data that
    declare ``partly_paired``) gathered batch by batch."""
    if getattr(split, "holds_columns", False):
        tensors = split.tensors
        return {k: torch.as_tensor(tensors[k]).reshape(-1) for k in tensors if k.endswith(PRESENT_SUFFIX)}
    if not getattr(split, "partly_paired", ()):
        return {}
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, len(split), 256):
        batch = split.__getitems__(range(start, min(start + 256, len(split))))
        for key in presence_keys(batch).values():
            parts.setdefault(key, []).append(batch[key].reshape(-1))
    return {k: torch.cat(v) for k, v in parts.items()}


def check_pairing(split: Split, method: str, partly_paired: bool, teacher_modalities: Sequence[str] | None) -> dict:
    """The missing fractions of the training ``split`` (:func:`missing_fractions`), checked for distilling with
    ``method`` from a teacher that reads ``teacher_modalities`` (None: every modality): a teacher modality missing
    in every row leaves nothing to distil; a method whose terms cannot leave rows out (``partly_paired`` False:
    terms that compare the rows of a batch, or read every row's features) is refused rather than fed the
    teacher's outputs on filler inputs."""
    missing = missing_fractions(split)
    lacking = {m: f for m, f in missing.items() if f > 0 and (teacher_modalities is None or m in teacher_modalities)}
    for m, share in lacking.items():
        if share >= 1.0:
            raise ConfigError(
                f"teacher.model.modalities: the teacher reads {m!r}, which every training row lacks ({m}"
                f"{PRESENT_SUFFIX} is 0 throughout), so there is nothing to distil from; give rows that hold {m!r}, or "
                "a teacher of the modalities the rows hold"
            )
    if lacking and not partly_paired:
        from .registry import METHODS

        able = [n for n in METHODS.names() if getattr(METHODS.get(n), "partly_paired", False)]
        m, share = next(iter(lacking.items()))
        raise ConfigError(
            f"method.name: {method!r} cannot leave out the rows that lack the teacher's modality {m!r} (missing in "
            f"{100 * share:.1f}% of the training rows): its terms compare the rows of a batch or read every row's "
            f"features; use one of {', '.join(able)}, or train on the paired rows only"
        )
    return missing
