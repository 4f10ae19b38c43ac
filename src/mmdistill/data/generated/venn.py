"""The modality Venn diagram: synthetic two-modality data with known shared/specific decisive features.

Xue et al., "The Modality Focusing Hypothesis", ICLR 2023, Sec. 3 and App. (official code ``gauss/``).
A latent decisive vector ``z ~ N(0, I)`` decides the label, ``y = 1[z . delta > 0]`` for a fixed
hyperplane ``delta`` (with ``num_classes = k > 2``: ``y = argmax_c z . W[:, c]``). Each modality
copies some latent coordinates into fixed channels; every other channel is i.i.d. N(0, 1) noise.
The latent coordinates are laid out as::

    [ b-only (sb) | shared (s0) | a-only (sa) | hidden ]

``hidden`` coordinates decide the label but neither modality sees them. Modality b holds latents
``0 .. sb+s0-1`` in channels ``0 .. sb+s0-1``; modality a holds latents ``sb .. sb+s0+sa-1`` in
channels ``a_offset .. a_offset+s0+sa-1``. Then (DESIGN.md 2)::

    gamma = s0 / (s0 + sa + sb)    alpha = sa / (s0 + sa)    beta = sb / (s0 + sb)

Beyond the paper: more classes, label noise (a label is replaced, with probability
``label_noise``, by a uniformly drawn *other* class) and a random orthogonal mixing of each
modality's channels (``mix``), so the decisive information is no longer axis-aligned.

The presets ``vary-gamma`` (Fig. 2), ``vary-alpha`` (Fig. 3) and ``modify-gamma`` (Table 2) draw
bit-for-bit the arrays of the official scripts: numpy's legacy ``RandomState``, the same draw order,
and the same float32 cast.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from ...errors import ConfigError
from ...registry import DATASETS
from ..contracts.card import dataset_card
from ..contracts.dataset import DataSplits, MultimodalDataset, NumClasses

HYPERPLANE_POOL = 500  # the official code draws a 500-dim hyperplane and uses its first coordinates


@dataclass(frozen=True)
class VennSpec:
    """Structure of one modality Venn diagram (see the module docstring for the layout).

    ``noise_order`` ("ba" or "ab") is the order in which the official scripts draw the two
    modalities' noise; ``test_stream`` is "seed+1" (Fig. 2/3 script: test data from a fresh
    ``RandomState(seed + 1)``) or "continue" (Table 2 script: one stream for everything).
    Both exist only so that the presets reproduce the official arrays exactly.
    """

    s0: int = 4
    sa: int = 6
    sb: int = 6
    hidden: int = 0
    dim_a: int = 25
    dim_b: int = 50
    a_offset: int = 0
    num_classes: int = 2
    hyperplane: str = "gaussian"
    label_noise: float = 0.0
    mix: bool = False
    noise_order: str = "ba"
    test_stream: str = "seed+1"

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def latent_dim(self) -> int:
        return self.sb + self.s0 + self.sa + self.hidden

    @property
    def gamma(self) -> float:
        return self.s0 / (self.s0 + self.sa + self.sb)

    @property
    def alpha(self) -> float:
        return self.sa / (self.s0 + self.sa)

    @property
    def beta(self) -> float:
        return self.sb / (self.s0 + self.sb)

    def ratios(self) -> dict[str, float]:
        return {"gamma": self.gamma, "alpha": self.alpha, "beta": self.beta}


def _validate(s: VennSpec) -> None:
    for name in ("dim_a", "dim_b"):
        value = getattr(s, name)
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"venn.{name}: must be a positive integer (dim > 0), got {value!r}")
    for name in ("s0", "sa", "sb", "hidden", "a_offset"):
        value = getattr(s, name)
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"venn.{name}: must be a non-negative integer (>= 0), got {value!r}")
    if s.s0 + s.sa < 1:
        raise ConfigError(f"venn: modality a sees no decisive latent (needs s0 + sa >= 1, got s0={s.s0}, sa={s.sa})")
    if s.s0 + s.sb < 1:
        raise ConfigError(f"venn: modality b sees no decisive latent (needs s0 + sb >= 1, got s0={s.s0}, sb={s.sb})")
    if s.a_offset + s.s0 + s.sa > s.dim_a:
        raise ConfigError(
            f"venn: more decisive channels than modality a has (needs a_offset + s0 + sa <= dim_a, "
            f"got {s.a_offset} + {s.s0} + {s.sa} > {s.dim_a})"
        )
    if s.s0 + s.sb > s.dim_b:
        raise ConfigError(
            f"venn: more decisive channels than modality b has (needs s0 + sb <= dim_b, got {s.s0} + {s.sb} > "
            f"{s.dim_b})"
        )
    if not isinstance(s.num_classes, (int, np.integer)) or s.num_classes < 2:
        raise ConfigError(f"venn.num_classes: must be an integer >= 2, got {s.num_classes!r}")
    if not 0.0 <= s.label_noise < 1.0:
        raise ConfigError(f"venn.label_noise: must lie in [0, 1), got {s.label_noise!r}")
    _choice("hyperplane", s.hyperplane, ("gaussian", "ones"))
    if s.hyperplane == "ones" and s.num_classes != 2:
        raise ConfigError(f"venn.hyperplane: 'ones' defines two classes only; got num_classes={s.num_classes}")
    _choice("noise_order", s.noise_order, ("ba", "ab"))
    _choice("test_stream", s.test_stream, ("seed+1", "continue"))


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"venn.{name}: must be one of {', '.join(allowed)}; got {value!r}")


def spec_from_ratios(gamma: float, alpha: float, decisive: int = 20, **kwargs) -> VennSpec:
    """The spec whose (gamma, alpha) is nearest the target with ``s0 + sa + sb = decisive``.

    ``s0 = round(gamma * decisive)``, ``sa = round(alpha * s0 / (1 - alpha))``, ``sb`` the rest.
    Since ``s0 + sa <= s0 + sa + sb``, every diagram has ``gamma <= 1 - alpha``: the Venn plane
    is a triangle, and a target outside it is an error. The realised ratios are on the spec.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"venn.gamma: must lie in [0, 1], got {gamma!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"venn.alpha: must lie in [0, 1], got {alpha!r}")
    if gamma > 1.0 - alpha + 1e-9:
        raise ConfigError(
            f"venn: needs gamma <= 1 - alpha (shared dims cannot exceed a's), got gamma={gamma}, alpha={alpha}"
        )
    if decisive < 1:
        raise ConfigError(f"venn.decisive: must be a positive integer (> 0), got {decisive!r}")
    s0 = int(round(gamma * decisive))
    if s0 == 0 and alpha < 1.0:
        raise ConfigError(f"venn: gamma={gamma} rounds to s0=0, where alpha is 1 by definition; got alpha={alpha}")
    sa = decisive - s0 if alpha >= 1.0 else int(round(alpha * s0 / (1.0 - alpha)))
    sa = min(sa, decisive - s0)
    return VennSpec(s0=s0, sa=sa, sb=decisive - s0 - sa, **kwargs)


# ---- presets: the official protocols -------------------------------------------------------------


def _vary_gamma(overlap: int) -> VennSpec:
    """Fig. 2: x_a 25 dims, x_b 50 dims, 10 decisive each, ``overlap`` of them shared; gamma = o / (20 - o)."""
    o = int(overlap)
    if not 0 <= o <= 10:
        raise ConfigError(f"venn preset vary-gamma: setting (the overlap o) must lie in 0..10, got {overlap!r}")
    return VennSpec(s0=o, sa=10 - o, sb=10 - o, hidden=o, dim_a=25, dim_b=50, a_offset=10 - o)


def _vary_alpha(k: int) -> VennSpec:
    """Fig. 3: 50 latents decide the label; b holds 0..9, a holds 0..9+k; alpha = k / (k + 10), beta = 0."""
    k = int(k)
    if not 0 <= k <= 40:
        raise ConfigError(f"venn preset vary-alpha: setting (a-only dims k) must lie in 0..40, got {k!r}")
    return VennSpec(s0=10, sa=k, sb=0, hidden=40 - k, dim_a=50, dim_b=50)


def _modify_gamma(xs2: int) -> VennSpec:
    """Table 2: delta = ones; a holds latents 0..xs2+9, b holds 0..xs2-1 (xs1 = 10); one RNG stream."""
    xs2 = int(xs2)
    if not 1 <= xs2 <= 40:
        raise ConfigError(f"venn preset modify-gamma: setting (shared dims xs2) must lie in 1..40, got {xs2!r}")
    return VennSpec(
        s0=xs2, sa=10, sb=0, dim_a=50, dim_b=50, hyperplane="ones", noise_order="ab", test_stream="continue"
    )


PRESETS = {
    "vary-gamma": (_vary_gamma, (0, 2, 4, 6, 8, 10)),
    "vary-alpha": (_vary_alpha, (0, 10, 20, 30, 40)),
    "modify-gamma": (_modify_gamma, (5, 10, 15, 20, 25, 30)),
}


def preset_spec(name: str, setting: int) -> VennSpec:
    """The spec of preset ``name`` at ``setting`` (overlap o, a-only dims k, or shared dims xs2)."""
    if name not in PRESETS:
        raise ConfigError(f"venn.preset: unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name][0](setting)


def preset_settings(name: str) -> tuple[int, ...]:
    """The settings the paper sweeps for preset ``name``."""
    if name not in PRESETS:
        raise ConfigError(f"venn.preset: unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name][1]


# ---- sampling ------------------------------------------------------------------------------------


@dataclass
class VennSample:
    """One draw: ``xa`` (n, dim_a) and ``xb`` (n, dim_b) float32, ``y`` (n,) int64."""

    xa: Tensor
    xb: Tensor
    y: Tensor


@dataclass
class VennDraw:
    """The task's fixed parts (hyperplane, mixing matrices) and its train/test (and extra) samples."""

    spec: VennSpec
    seed: int
    hyperplane: np.ndarray
    train: VennSample
    test: VennSample
    extra: list[VennSample] = field(default_factory=list)
    mixing: tuple[np.ndarray, np.ndarray] | None = None


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))  # sign fix: Haar-distributed


@lru_cache(maxsize=8)
def _normals(seed: int, shapes: tuple[tuple[int, ...], ...]) -> tuple[tuple[np.ndarray, ...], Any]:
    """``RandomState(seed).randn(*shape)`` for each shape in turn, and the stream's state after them.

    Memoised: the settings of a sweep draw the very same numbers for one seed (only where the
    latents land differs), and the legacy generator is the slowest part of a sweep. Callers copy.
    """
    rng = np.random.RandomState(seed)
    arrays = tuple(rng.randn(*shape) for shape in shapes)
    for a in arrays:
        a.setflags(write=False)
    return arrays, rng.get_state()


class _Resumed:
    """The stream after the memoised draws, rebuilt only if something draws from it."""

    def __init__(self, state: Any) -> None:
        self._state = state  # RandomState.get_state()
        self._rng: np.random.RandomState | None = None

    def __getattr__(self, name: str):
        if self._rng is None:
            self._rng = np.random.RandomState(0)
            self._rng.set_state(self._state)
        return getattr(self._rng, name)


def _resume(state: Any) -> _Resumed:
    return _Resumed(state)


def _sample_shapes(spec: VennSpec, n: int) -> tuple[tuple[int, int], ...]:
    """Shapes of one sample's normal draws in the official order: latents, then each modality's noise."""
    return ((n, spec.latent_dim), *((n, spec.dim_a if m == "a" else spec.dim_b) for m in spec.noise_order))


def _sample(
    spec: VennSpec, hyperplane: np.ndarray, n: int, rng: np.random.RandomState | _Resumed, mixing, blocks=None
) -> VennSample:
    """One sample; ``blocks`` are its pre-drawn normals (else they are drawn from ``rng``)."""
    if blocks is None:
        blocks = [rng.randn(*shape) for shape in _sample_shapes(spec, n)]
    z = blocks[0]
    if spec.num_classes == 2:
        y = (np.dot(z, hyperplane) > 0).ravel().astype(np.int64)
    else:
        y = np.argmax(z @ hyperplane, axis=1).astype(np.int64)
    noise = {m: np.array(b) for m, b in zip(spec.noise_order, blocks[1:])}
    xb, xa = noise["b"], noise["a"]
    xb[:, 0 : spec.sb + spec.s0] = z[:, 0 : spec.sb + spec.s0]
    xa[:, spec.a_offset : spec.a_offset + spec.s0 + spec.sa] = z[:, spec.sb : spec.sb + spec.s0 + spec.sa]
    if spec.label_noise > 0:
        flip = rng.rand(n) < spec.label_noise
        shift = rng.randint(1, spec.num_classes, size=n)
        y = np.where(flip, (y + shift) % spec.num_classes, y)
    if mixing is not None:
        xa, xb = xa @ mixing[0], xb @ mixing[1]
    return VennSample(torch.Tensor(xa), torch.Tensor(xb), torch.LongTensor(y))


def draw(spec: VennSpec, seed: int, n_train: int = 200, n_test: int = 1000, n_extra: tuple[int, ...] = ()) -> VennDraw:
    """Draw the hyperplane and the train sample from ``RandomState(seed)``, then test (and extra) samples.

    With ``test_stream == "seed+1"`` the test sample and any extra samples come from
    ``RandomState(seed + 1)`` (official Fig. 2/3 script); with ``"continue"`` everything comes
    from the one stream (official Table 2 script: train, test, then the fresh KD-stage sample).
    The mixing matrices come from a separate ``default_rng((seed, 1))`` so that the unmixed
    arrays stay identical.
    """
    for name, n in (("n_train", n_train), ("n_test", n_test), *((f"n_extra[{i}]", v) for i, v in enumerate(n_extra))):
        if n <= 0:
            raise ConfigError(f"venn.{name}: must be a positive integer (> 0), got {n!r}")
    d = spec.latent_dim
    if spec.hyperplane == "ones":
        head: tuple[tuple[int, ...], ...] = ()
    elif spec.num_classes == 2:
        head = ((max(HYPERPLANE_POOL, d),),)
    else:
        head = ((d, spec.num_classes),)
    blocks, state = _normals(seed, head + _sample_shapes(spec, n_train))
    rng = _resume(state)
    hyperplane = np.ones(d) if not head else (blocks[0][:d] if spec.num_classes == 2 else blocks[0]).copy()
    mixing = None
    if spec.mix:
        mrng = np.random.default_rng((seed, 1))
        mixing = (_orthogonal(mrng, spec.dim_a), _orthogonal(mrng, spec.dim_b))
    train = _sample(spec, hyperplane, n_train, rng, mixing, blocks[len(head) :])
    if spec.test_stream == "seed+1":
        test_blocks, test_state = _normals(seed + 1, _sample_shapes(spec, n_test))
        test_rng = _resume(test_state)
        test = _sample(spec, hyperplane, n_test, test_rng, mixing, test_blocks)
    else:
        test_rng = rng
        test = _sample(spec, hyperplane, n_test, test_rng, mixing)
    extra = [_sample(spec, hyperplane, n, test_rng, mixing) for n in n_extra]
    return VennDraw(spec, seed, hyperplane, train, test, extra, mixing)


# ---- the dataset-registry entry ------------------------------------------------------------------

_SPEC_FIELDS = [f.name for f in fields(VennSpec)]


Dim = Annotated[int, Field(strict=True, ge=0, le=65536)]  # data.params bounds, checked by build_splits
Rows = Annotated[int, Field(strict=True, ge=1, le=1_000_000)]


@DATASETS.register("venn")
@dataset_card(
    modalities="a, b vectors (widths set by the preset or s0, sa, sb)",
    rows="per preset (200 train / 200 val / 1,000 test by default)",
    task="classification, 2 classes (num_classes)",
    source="the MFH modality Venn diagram generator (Xue et al., ICLR 2023), in memory",
)
def venn(
    seed: int = 0,
    preset: str | None = None,
    setting: int | None = None,
    s0: Dim | None = None,
    sa: Dim | None = None,
    sb: Dim | None = None,
    hidden: Dim | None = None,
    dim_a: Dim | None = None,
    dim_b: Dim | None = None,
    a_offset: Dim | None = None,
    num_classes: NumClasses | None = None,
    hyperplane: str | None = None,
    label_noise: float | None = None,
    mix: bool | None = None,
    n_train: Rows = 200,
    n_val: Rows = 200,
    n_test: Rows = 1000,
) -> DataSplits:
    """A modality Venn diagram as train/val/test splits with modalities "a" and "b".

    ``preset`` + ``setting`` select an official protocol (see :data:`PRESETS`); any structural
    parameter given explicitly overrides the preset's (or the default spec's). Train and test are
    the official draws for ``seed``; val is drawn after test from the test stream.
    """
    overrides = {k: v for k, v in locals().items() if k in _SPEC_FIELDS and v is not None}
    if preset is not None:
        if setting is None:
            raise ConfigError(f"venn.setting: preset {preset!r} needs a setting, e.g. one of {preset_settings(preset)}")
        base = preset_spec(preset, setting)
    elif setting is not None:
        raise ConfigError("venn.setting: only meaningful with a preset")
    else:
        base = VennSpec()
    spec = replace(base, **overrides)
    d = draw(spec, seed, n_train=n_train, n_test=n_test, n_extra=(n_val,))
    name = f"venn[{preset}={setting}]" if preset else "venn"

    def split(sample: VennSample, part: str) -> MultimodalDataset:
        return MultimodalDataset({"a": sample.xa, "b": sample.xb}, sample.y, spec.num_classes, f"{name}/{part}")

    r = spec.ratios()
    splits = DataSplits(
        split(d.train, "train"),
        split(d.extra[0], "val"),
        split(d.test, "test"),
        description=f"{name} (gamma={r['gamma']:.2f}, alpha={r['alpha']:.2f}, beta={r['beta']:.2f}):",
        info={"spec": spec, **r},
    )
    return splits
