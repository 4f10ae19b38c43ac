"""Algorithm 1 of the Modality Focusing Hypothesis: which teacher channels carry modality-general decisive information.

Xue et al., "The Modality Focusing Hypothesis", ICLR 2023, Sec. 4 (Algorithm 1) and the official code
(DESIGN.md 2.2). A teacher ``t`` reads modality a, a student ``s`` reads modality b, on paired examples.

1. Train them, either **jointly** (the paper's variant; SGD lr 0.01, momentum 0.9)::

       L = CE(t(x_a), y) + CE(s(x_b), y) + MSE(t(x_a), s(x_b))

   or **separately** (two networks pretrained with CE alone), or pass networks already trained.
2. Let ``h = t_{<=l}(x_a)`` be the output of the teacher's layer ``l`` (N, C, ...) and
   ``D(h) = mean_{n,j} (t_{>l}(h)_nj - s(x_b)_nj)^2`` the distance of the two outputs. For every
   channel c and each of M permutations pi_m of the examples, ``h^(c,m)`` is h with channel c
   replaced by ``h[pi_m, c]``; the raw score is the mean growth of the distance::

       r_c = (1/M) sum_m D(h^(c,m)) - D(h)

3. Min-max normalise: ``score_c = (r_c - min r) / (max r - min r)`` in [0, 1]. A high score marks a
   channel both modalities agree on and that decides the label (permutation importance,
   Breiman 2001, measured on the crossmodal distance instead of the loss).

Vectorised: h is computed once; the C x M permuted copies go through the rest of the network as
one batch (in chunks that bound memory) by a forward hook that *replaces* the layer's output. When
everything after the layer depends on it alone (a sequential model), the front of the network runs
once on the N original examples and only the suffix sees the enlarged batch; otherwise the input is
repeated. :func:`channel_salience_loop` is the per-channel Python loop of the same computation
(the official code's shape), kept as the reference and for the benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..models.hooks import find_module

INPUT = "input"  # layer path naming the teacher's input tensor itself (e.g. the Gaussian channels of x_a)
Inputs = Tensor | Mapping[str, Tensor]


@dataclass
class Salience:
    """Channel scores of one teacher layer: ``scores`` (C,) in [0, 1] and the ``raw`` distance growth."""

    layer: str
    scores: Tensor
    raw: Tensor
    base_distance: float
    permutations: int
    seconds: float
    info: dict = field(default_factory=dict)

    def top(self, k: int) -> Tensor:
        """Indices of the k highest-scored channels (ties broken by channel index)."""
        return torch.sort(torch.argsort(self.scores, descending=True, stable=True)[:k]).values

    def bottom(self, k: int) -> Tensor:
        """Indices of the k lowest-scored channels."""
        return torch.sort(torch.argsort(self.scores, stable=True)[:k]).values


# ---- input handling --------------------------------------------------------------------------------


def num_examples(x: Inputs, who: str) -> int:
    if isinstance(x, Tensor):
        if x.dim() < 1:
            raise DataError(f"{who}: needs an example axis, got a scalar")
        return x.shape[0]
    sizes = {k: v.shape[0] for k, v in x.items()}
    if not sizes:
        raise DataError(f"{who}: no modality given")
    if len(set(sizes.values())) > 1:
        raise DataError(f"{who}: modalities have different example counts {sizes}")
    return next(iter(sizes.values()))


def check_paired(x_a: Inputs, x_b: Inputs, y: Tensor | None = None) -> int:
    """The common example count of teacher inputs, student inputs (and labels); else a DataError."""
    n_a, n_b = num_examples(x_a, "teacher inputs"), num_examples(x_b, "student inputs")
    counts = {"teacher inputs": n_a, "student inputs": n_b}
    if y is not None:
        counts["labels"] = len(y)
    if len(set(counts.values())) > 1:
        raise DataError(f"salience: examples must be paired, got mismatched example counts {counts}")
    if n_a < 2:
        raise DataError(f"salience: needs at least 2 examples to permute, got {n_a}")
    return n_a


def _repeat(x: Inputs, times: int) -> Inputs:
    if isinstance(x, Tensor):
        return x.repeat(times, *([1] * (x.dim() - 1)))
    return {k: v.repeat(times, *([1] * (v.dim() - 1))) for k, v in x.items()}


def _batch_index(x: Inputs, idx: Tensor) -> Inputs:
    return x[idx] if isinstance(x, Tensor) else {k: v[idx] for k, v in x.items()}


def _input_tensor(x: Inputs) -> tuple[Tensor, str | None]:
    if isinstance(x, Tensor):
        return x, None
    floats = [k for k, v in x.items() if v.is_floating_point()]
    if len(floats) != 1:
        raise ConfigError(f"salience: layer {INPUT!r} needs one float input tensor, the teacher gets {list(x)}")
    return x[floats[0]], floats[0]


def _check_features(h: object, layer: str, n: int) -> Tensor:
    if not isinstance(h, Tensor):
        raise ConfigError(f"salience: layer {layer!r} returns {type(h).__name__}, expected a tensor")
    if h.dim() < 2 or h.shape[0] != n:
        raise ConfigError(
            f"salience: layer {layer!r} must output a 2-D (N, C) or channel-first (N, C, ...) tensor with the N={n} "
            f"examples first; got shape {tuple(h.shape)}"
        )
    if not h.is_floating_point():
        raise ConfigError(f"salience: layer {layer!r} outputs {h.dtype}; channels must be real-valued")
    return h


# ---- the teacher split at a layer -----------------------------------------------------------------


class _SplitTeacher:
    """The teacher's layer output ``h`` on x_a, and the teacher's logits for substituted outputs.

    ``linear`` is set when ``h`` (N, C) feeds an ``nn.Linear`` and nothing else: the layer is followed
    by a Linear in the same ``nn.Sequential`` (or the teacher is, or starts with, a Linear and the
    layer is its input). A permuted channel then changes that Linear's output by a rank-one term,
    ``W h' = W h + W[:, c] (h'_c - h_c)``, so the copies are built at the Linear's width.
    """

    def __init__(self, teacher: nn.Module, x_a: Inputs, layer: str) -> None:
        self.teacher, self.x_a, self.layer = teacher, x_a, layer
        self.n = num_examples(x_a, "teacher inputs")
        self.cheap = True  # front of the network once, suffix on the enlarged batch
        self.key: str | None = None
        if layer == INPUT:
            h, self.key = _input_tensor(x_a)
            self.h = _check_features(h, layer, self.n)
            self.out = teacher(x_a)
            self.module = None
        else:
            self.module = find_module(teacher, layer)
            captured: list = []
            handle = self.module.register_forward_hook(lambda mod, inp, out: captured.append(out))
            try:
                self.out = teacher(x_a)
            finally:
                handle.remove()
            if not captured:
                raise ConfigError(f"salience: layer {layer!r} is not used by the teacher's forward pass")
            self.h = _check_features(captured[0], layer, self.n)
        self.linear = self._next_linear()

    def _next_linear(self) -> nn.Linear | None:
        if self.h.dim() != 2:
            return None
        if self.layer == INPUT:
            first = self.teacher
            while isinstance(first, nn.Sequential) and len(first) > 0:
                first = first[0]
            nxt = first if isinstance(self.teacher, (nn.Linear, nn.Sequential)) else None
        else:
            parent_path, _, name = self.layer.rpartition(".")
            parent = find_module(self.teacher, parent_path) if parent_path else self.teacher
            names = list(parent._modules) if isinstance(parent, nn.Sequential) else []
            nxt = parent._modules[names[names.index(name) + 1]] if name in names[:-1] else None
        if isinstance(nxt, nn.Linear) and nxt.in_features == self.h.shape[1]:
            return nxt
        return None

    @property
    def linear_is_output(self) -> bool:
        """The following Linear's output is the teacher's output (it is the teacher or its Sequential's last module)."""
        lin, t = self.linear, self.teacher
        while isinstance(t, nn.Sequential) and len(t) > 0 and t is not lin:
            t = t[-1]
        return lin is not None and t is lin

    def logits(self, sub: Tensor, at_linear: bool = False) -> Tensor:
        """Teacher logits with the layer's output (or, ``at_linear``, the next Linear's output)
        replaced by ``sub``: B*N rows, B copies of the batch."""
        copies = sub.shape[0] // self.n
        target = self.linear if at_linear else self.module
        if at_linear and target is self.teacher:
            return sub
        if target is None:  # the input itself
            if self.key is None:
                return self.teacher(sub)
            repeated = cast(Mapping[str, Tensor], _repeat(self.x_a, copies))  # a key is set for dict inputs only
            return self.teacher({**repeated, self.key: sub})
        # the module's own computation is skipped: its forward returns ``sub`` (restored below)
        target.forward = lambda *args, **kwargs: sub
        try:
            if self.cheap:
                try:
                    out = self.teacher(self.x_a)
                    if out.shape[0] == sub.shape[0]:
                        return out
                except RuntimeError:
                    pass
                self.cheap = False  # something after the layer also reads the input: repeat it
            return self.teacher(_repeat(self.x_a, copies))
        finally:
            del target.forward


def _permutations(n: int, m: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g) for _ in range(m)])


def _normalise(raw: Tensor) -> Tensor:
    span = raw.max() - raw.min()
    return torch.zeros_like(raw) if span <= 0 else (raw - raw.min()) / span


def _distance(t: Tensor, s: Tensor) -> Tensor:
    """Mean squared difference per copy: t (B, N, k), s (N, k) -> (B,)."""
    return (t - s).square_().flatten(1).mean(1)


def _prepare(teacher, student, x_a, x_b, layer, permutations):
    if permutations < 1:
        raise ConfigError(f"salience.permutations: must be a positive integer, got {permutations}")
    n = check_paired(x_a, x_b)
    if layer != INPUT:
        find_module(teacher, layer)  # a missing path lists the layer names
    s_out = student(x_b)
    split = _SplitTeacher(teacher, x_a, layer)
    if split.out.shape != s_out.shape:
        raise ConfigError(
            f"salience: teacher outputs {tuple(split.out.shape)} but student {tuple(s_out.shape)}; "
            "the distance needs outputs of one shape"
        )
    return n, s_out, split


def channel_salience(
    teacher: nn.Module,
    student: nn.Module,
    x_a: Inputs,
    x_b: Inputs,
    layer: str = INPUT,
    *,
    permutations: int = 10,
    seed: int = 0,
    chunk_elements: int = 1 << 20,
    rank_one: bool = True,
) -> Salience:
    """Algorithm 1's scores for the channels (axis 1) of ``layer``'s output, all channels x permutations batched.

    The models are used as given (eval mode, no gradients). ``layer`` is a dotted module path of the
    teacher or :data:`INPUT`. Chunks hold at most about ``chunk_elements`` feature values.
    ``rank_one=False`` turns off the shortcut through a following Linear (see :class:`_SplitTeacher`).
    """
    start = time.perf_counter()
    modes = (teacher.training, student.training)
    teacher.eval(), student.eval()
    try:
        with torch.no_grad():
            n, s_out, split = _prepare(teacher, student, x_a, x_b, layer, permutations)
            h = split.h
            if not rank_one:
                split.linear = None
            channels = h.shape[1]
            perms = _permutations(n, permutations, seed)
            base = float(_distance(split.out.unsqueeze(0), s_out))
            cand_c = torch.arange(channels).repeat_interleave(permutations)
            cand_m = torch.arange(permutations).repeat(channels)
            lin = split.linear
            if lin is not None:
                # feature-major (B, d1, N): broadcasting over a short last axis is slow on CPU
                z_t = F.linear(h, lin.weight, lin.bias).t().contiguous()  # (d1, N)
                w_t = lin.weight.t().contiguous()  # (C, d1)
                h_t = h.t().contiguous()  # (C, N)
                shuffled_t = h_t[:, perms]  # (C, M, N)
                s_t = s_out.reshape(n, -1).t().contiguous()
                output_is_linear = split.linear_is_output
            per_copy = n * (lin.out_features if lin is not None else h[0].numel())
            chunk = max(1, min(len(cand_c), chunk_elements // max(per_copy, 1)))
            total = torch.zeros(channels, dtype=torch.float64)
            shuffled = None
            for lo in range(0, len(cand_c), chunk):
                c, m = cand_c[lo : lo + chunk], cand_m[lo : lo + chunk]
                b = len(c)
                if lin is not None:
                    delta = shuffled_t[c, m] - h_t[c]  # (B, N): the permuted channel's change
                    zp = torch.addcmul(z_t.unsqueeze(0), w_t[c].unsqueeze(2), delta.unsqueeze(1))  # (B, d1, N)
                    if output_is_linear:
                        dist = zp.sub_(s_t).square_().mean((1, 2))
                    else:
                        out = split.logits(zp.transpose(1, 2).reshape(b * n, -1), at_linear=True)
                        dist = _distance(out.view(b, n, -1), s_out.reshape(n, -1))
                else:
                    if shuffled is None:
                        shuffled = h[perms]  # (M, N, C, ...): every permutation of every channel
                    hp = h.unsqueeze(0).repeat(b, *([1] * h.dim()))  # (B, N, C, ...)
                    hp[torch.arange(b), :, c] = shuffled[m, :, c]
                    out = split.logits(hp.view(b * n, *h.shape[1:]))
                    dist = _distance(out.view(b, n, -1), s_out.reshape(n, -1))
                total.index_add_(0, c.cpu(), dist.double().cpu())  # the sum stays on the CPU, in float64
    finally:
        teacher.train(modes[0]), student.train(modes[1])
    raw = (total / permutations - base).float()
    return Salience(
        layer,
        _normalise(raw),
        raw,
        base,
        permutations,
        time.perf_counter() - start,
        {"channels": channels, "examples": n, "cheap_suffix": split.cheap, "rank_one": lin is not None},
    )


def channel_salience_loop(
    teacher: nn.Module,
    student: nn.Module,
    x_a: Inputs,
    x_b: Inputs,
    layer: str = INPUT,
    *,
    permutations: int = 10,
    seed: int = 0,
) -> Salience:
    """The same scores as :func:`channel_salience`, one forward pass per (channel, permutation) as the
    official code loops. The reference for tests and the benchmark, not for use."""
    start = time.perf_counter()
    teacher.eval(), student.eval()
    with torch.no_grad():
        n, s_out, split = _prepare(teacher, student, x_a, x_b, layer, permutations)
        h = split.h
        perms = _permutations(n, permutations, seed)
        base = float(_distance(split.out.unsqueeze(0), s_out))
        raw = torch.zeros(h.shape[1])
        for c in range(h.shape[1]):
            growth = 0.0
            for m in range(permutations):
                hp = h.clone()
                hp[:, c] = h[perms[m], c]
                growth += float(_distance(split.logits(hp).unsqueeze(0), s_out))
            raw[c] = growth / permutations - base
    return Salience(
        layer,
        _normalise(raw),
        raw,
        base,
        permutations,
        time.perf_counter() - start,
        {"channels": h.shape[1], "examples": n},
    )


# ---- step 1: training the pair ----------------------------------------------------------------------


def train_pair(
    teacher: nn.Module,
    student: nn.Module,
    x_a: Inputs,
    x_b: Inputs,
    y: Tensor,
    *,
    joint: bool = True,
    epochs: int = 500,
    lr: float = 0.01,
    momentum: float = 0.9,
    batch_size: int | None = None,
    mse_weight: float = 1.0,
    seed: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """Train teacher and student in place: jointly with ``CE + CE + mse_weight * MSE(t(x_a), s(x_b))``
    (Algorithm 1, step 1) or, with ``joint=False``, each alone with CE. SGD with momentum; full batch
    unless ``batch_size``; ``epochs`` passes over the data."""
    n = check_paired(x_a, x_b, y)
    if epochs < 1:
        raise ConfigError(f"salience.epochs: must be a positive integer, got {epochs}")
    y = torch.as_tensor(y).long()
    params = list(teacher.parameters()) + list(student.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    bs = n if batch_size is None else int(batch_size)
    teacher.train(), student.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g) if bs < n else None
        for lo in range(0, n, bs):
            idx = None if order is None else order[lo : lo + bs]
            xa = x_a if idx is None else _batch_index(x_a, idx)
            xb = x_b if idx is None else _batch_index(x_b, idx)
            yy = y if idx is None else y[idx]
            t, s = teacher(xa), student(xb)
            loss = F.cross_entropy(t, yy) + F.cross_entropy(s, yy)
            if joint:
                loss = loss + mse_weight * F.mse_loss(t, s)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    teacher.eval(), student.eval()
    return teacher, student


def algorithm1(
    teacher: nn.Module,
    student: nn.Module,
    x_a: Inputs,
    x_b: Inputs,
    y: Tensor,
    layer: str = INPUT,
    *,
    variant: str = "joint",
    permutations: int = 10,
    seed: int = 0,
    **train_kwargs,
) -> Salience:
    """Algorithm 1 end to end: train the pair (``variant`` "joint", "separate", or "pretrained" to use
    the networks as given), then score ``layer``'s channels on the same examples."""
    if variant not in ("joint", "separate", "pretrained"):
        raise ConfigError(f"salience.variant: must be one of joint, separate, pretrained; got {variant!r}")
    check_paired(x_a, x_b, y)
    if layer != INPUT:
        find_module(teacher, layer)  # fail before training
    if variant != "pretrained":
        train_pair(teacher, student, x_a, x_b, y, joint=variant == "joint", seed=seed, **train_kwargs)
    result = channel_salience(teacher, student, x_a, x_b, layer, permutations=permutations, seed=seed)
    result.info["variant"] = variant
    return result


def precision_at(selected: Tensor, truth: Tensor) -> float:
    """Share of the ``selected`` channels that are in ``truth``."""
    sel = set(torch.as_tensor(selected).tolist())
    return len(sel & set(torch.as_tensor(truth).tolist())) / max(len(sel), 1)
