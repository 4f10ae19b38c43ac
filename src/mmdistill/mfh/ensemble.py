"""Train many tiny models at once: R linear models or small MLPs as one batched ensemble.

The MFH studies train hundreds of models of a few hundred parameters each; a Python loop over
them is dominated by per-call overhead. Here the runs' weights are stacked, ``(R, out, in)``,
every layer is one batched matrix product, and the gradient of the full-batch loss is written
out, so one SGD step of all R runs is a handful of tensor operations.

Loss of run r (Xue et al. 2023, official ``gauss/main.py``; Hinton et al. 2015 at T = 1)::

    L_r = w0_r * CE(s, y)  +  w1_r * sum_{i,c} t_ic (log t_ic - log softmax(s)_ic) / (n * k)

The second term is torch's ``KLDivLoss`` with its default 'mean' reduction (divided by the
number of *elements*, n x k), written out. Its gradient with respect to the logits is
``w0 (p - onehot(y)) / n + w1 (p - t) / (n k)`` with ``p = softmax(s)``, back-propagated by
hand through the layers (ReLU between them).

Two layout choices make it fast: activations are kept feature-major, ``(R, features, n)``
(a softmax over a last axis of size 2 is very slow on CPU), and runs that read the *same*
inputs and labels (a no-KD and a KD student on one draw of x_b, say) are grouped, so their
first layers are one matrix product ``(M*h, d) @ (d, n)`` per input instead of M thin ones.
Runs with narrower inputs are zero-padded: a zero input channel gives its first-layer weights
a zero gradient, so padding changes nothing. ``tests/test_mfh_ensemble.py`` checks that every
run equals the same run trained alone by :func:`fit_sequential`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..kl import kd_per_example


def make_mlp(in_features: int, hidden: Sequence[int] = (), num_classes: int = 2) -> nn.Module:
    """``nn.Linear(in, classes)`` if ``hidden`` is empty, else Linear-ReLU-...-Linear (torch's default init)."""
    if not hidden:
        return nn.Linear(in_features, num_classes)
    dims = [in_features, *hidden]
    mods: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        mods += [nn.Linear(d_in, d_out), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(dims[-1], num_classes))


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of a linear model or of an ``nn.Sequential`` of Linear/ReLU."""
    if isinstance(model, nn.Linear):
        return [model]
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    others = [m for m in model.modules() if not isinstance(m, (nn.Linear, nn.ReLU, nn.Sequential))]
    if not layers or others:
        raise ConfigError(
            f"ensemble: models must be nn.Linear or nn.Sequential of Linear/ReLU; got {type(model).__name__}"
        )
    return layers


@dataclass
class Run:
    """One model to train: its initialised module, inputs ``x`` (n, d), labels ``y`` (n,),
    optional teacher probabilities ``soft_targets`` (n, k) and the loss weights [w0, w1]."""

    model: nn.Module
    x: Tensor
    y: Tensor
    soft_targets: Tensor | None = None
    ce_weight: float = 1.0
    kd_weight: float = 0.0


@dataclass
class TrainedRuns:
    """Trained weights of R runs, ``weights[l]`` (R, out, in) with first layers zero-padded to ``width``."""

    weights: list[Tensor]
    biases: list[Tensor]
    width: int

    def _logits_t(self, xs: Sequence[Tensor]) -> Tensor:
        dtype = self.weights[0].dtype
        h = torch.stack([F.pad(x.to(dtype), (0, self.width - x.shape[1])) for x in xs]).transpose(1, 2)
        with torch.no_grad():
            for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
                h = torch.baddbmm(b.unsqueeze(2), w, h)
                if layer < len(self.weights) - 1:
                    h = torch.relu(h)
        return h  # (R, k, n)

    def logits(self, xs: Sequence[Tensor]) -> Tensor:
        """Each run's logits on its own inputs (same number of examples): ``xs[r]`` (n, d_r) -> (R, n, k)."""
        return self._logits_t(xs).transpose(1, 2)

    def accuracy(self, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
        """(R,) fraction of each run's examples whose argmax logit is the label."""
        h = self._logits_t(xs)
        pred = (h[:, 1] > h[:, 0]).long() if h.shape[1] == 2 else h.argmax(1)  # argmax over a size-2 axis is slow
        return (pred == torch.stack(list(ys))).float().mean(1)

    def layer_params(self, r: int, in_features: int) -> list[tuple[Tensor, Tensor]]:
        """Run r's (weight, bias) per layer, the first weight cut back to ``in_features`` columns."""
        out = [(w[r], b[r]) for w, b in zip(self.weights, self.biases)]
        out[0] = (out[0][0][:, :in_features], out[0][1])
        return out


def _input_key(x: Tensor, y: Tensor) -> str:
    h = hashlib.sha1()
    for t in (x, y):
        t = t.detach().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _group_size(sizes: Sequence[int]) -> int:
    """Runs per input group: minimises the modelled step cost, groups x (read the input + per x one run).

    A group of m runs costs about one input pass plus m thin products; measured on 2 CPU cores
    one input pass (200 x 50) costs about four runs' worth, hence the 4.0 below.
    """

    def cost(per: int) -> float:
        return sum(-(-s // per) * (4.0 + per) for s in sizes)

    return min(range(max(sizes), 0, -1), key=cost)


def train_runs(
    runs: Sequence[Run], *, lr: float = 0.1, epochs: int = 1000, group_shared_inputs: bool = True
) -> TrainedRuns:
    """Full-batch SGD (no momentum, ``epochs`` steps) of every run on its own loss, all at once.

    Runs must have the same layer shapes (input widths may differ) and the same number of
    examples. With ``group_shared_inputs`` runs whose (x, y) are equal share one matrix
    product per layer-1 pass; groups are padded to one size with inert runs (zero loss weights).
    """
    if not runs:
        raise ConfigError("ensemble: no runs to train")
    layers = [linear_layers(r.model) for r in runs]
    shape = [(lin.out_features, lin.in_features) for lin in layers[0][1:]] + [layers[0][0].out_features]
    n = runs[0].y.shape[0]
    for i, (run, ls) in enumerate(zip(runs, layers)):
        if [(lin.out_features, lin.in_features) for lin in ls[1:]] + [ls[0].out_features] != shape:
            raise ConfigError(f"ensemble: run {i} has other layer shapes than run 0 (only the input width may differ)")
        if run.y.shape != (n,) or run.x.shape[0] != n:
            raise ConfigError(
                f"ensemble: run {i} has {run.x.shape[0]} inputs / {tuple(run.y.shape)} labels; run 0 has {n}"
            )
        _kd_targets(i, run)
    width = max(r.x.shape[1] for r in runs)
    k = layers[0][-1].out_features
    dtype = runs[0].x.dtype if runs[0].x.is_floating_point() else torch.float32

    # group runs by identical inputs; slot -1 marks an inert padding run
    groups: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(_input_key(run.x, run.y) if group_shared_inputs else str(i), []).append(i)
    per = _group_size([len(g) for g in groups.values()])
    slots = []
    for g in groups.values():
        for start in range(0, len(g), per):
            chunk = g[start : start + per]
            slots.append(chunk + [-1] * (per - len(chunk)))
    order = [i for g in slots for i in g]
    first = [g[0] for g in slots]

    x = torch.stack([F.pad(runs[i].x.to(dtype), (0, width - runs[i].x.shape[1])) for i in first])  # (G, n, d)
    xt = x.transpose(1, 2).contiguous()  # (G, d, n)
    y = torch.stack([runs[i].y for i in first])  # (G, n)
    onehot = F.one_hot(y, k).to(dtype).transpose(1, 2).repeat_interleave(per, 0)  # (R, k, n)
    zeros_t = torch.zeros(n, k, dtype=dtype)
    soft = torch.stack([zeros_t if i < 0 or (t := runs[i].soft_targets) is None else t.to(dtype) for i in order])
    w0 = torch.tensor([runs[i].ce_weight if i >= 0 else 0.0 for i in order], dtype=dtype).view(-1, 1, 1)
    w1 = torch.tensor([runs[i].kd_weight if i >= 0 else 0.0 for i in order], dtype=dtype).view(-1, 1, 1)
    # d L / d logits = w0 (p - onehot)/n + w1 (p - t)/(n k) = coef_p * p - target_term
    coef_p = w0 / n + w1 / (n * k)
    target_term = w0 / n * onehot + w1 / (n * k) * soft.transpose(1, 2)

    weights, biases = [], []
    for depth in range(len(layers[0])):
        ws, bs = [], []
        for i in order:
            src = layers[i if i >= 0 else first[0]][depth]
            w = src.weight.detach().to(dtype)
            ws.append(F.pad(w, (0, width - w.shape[1])) if depth == 0 else w)
            bs.append(src.bias.detach().to(dtype))
        weights.append(torch.stack(ws).contiguous())
        biases.append(torch.stack(bs).unsqueeze(2).contiguous())  # (R, out, 1)

    _sgd(weights, biases, x, xt, coef_p, target_term, per, lr, epochs)

    back = {i: pos for pos, i in enumerate(order) if i >= 0}
    idx = torch.tensor([back[i] for i in range(len(runs))])
    return TrainedRuns([w[idx] for w in weights], [b[idx].squeeze(2) for b in biases], width)


def _output_grad(h: Tensor, coef_p: Tensor, neg_target: Tensor, p: Tensor, out: Tensor) -> Tensor:
    """``coef_p * softmax(h) - target`` over axis 1 of (R, k, n), into ``out`` (``p``: scratch).

    For k = 2 the softmax is ``sigmoid(h_1 - h_0)``: the same numbers, and much faster on CPU
    than a softmax (or an argmax) over an axis of size 2.
    """
    if h.shape[1] == 2:
        torch.sub(h[:, 1], h[:, 0], out=p[:, 0])
        torch.sigmoid(p[:, 0], out=p[:, 1])
        torch.sub(1.0, p[:, 1], out=p[:, 0])
    else:
        torch.softmax(h, dim=1, out=p)
    return torch.addcmul(neg_target, p, coef_p, out=out)


def _sgd(weights, biases, x, xt, coef_p, target_term, per, lr, epochs) -> None:
    """The training loop proper, in place: G inputs, ``per`` runs on each, feature-major activations.

    Layer 1 is one ``(per*h, d) @ (d, n)`` product per input group, and its update is fused
    into one ``baddbmm_``: ``W -= lr * grad @ x``.
    """
    groups, n, d = x.shape
    runs = groups * per
    depth = len(weights)
    w_first = weights[0].view(groups, -1, d)
    b_first = biases[0].view(groups, -1, 1)
    k = target_term.shape[1]
    neg_target = -target_term
    p = torch.empty(runs, k, n, dtype=x.dtype)
    out = torch.empty(runs, k, n, dtype=x.dtype)
    grad_b = torch.empty(runs, k, 1, dtype=x.dtype)
    with torch.no_grad():
        for _ in range(epochs):
            h = torch.baddbmm(b_first, w_first, xt).view(runs, -1, n)
            acts = []
            for layer in range(1, depth):
                h = torch.relu_(h)
                acts.append(h)
                h = torch.baddbmm(biases[layer], weights[layer], h)
            grad = _output_grad(h, coef_p, neg_target, p, out)  # (R, k, n)
            for layer in range(depth - 1, 0, -1):
                a = acts[layer - 1]
                grad_w = torch.bmm(grad, a.transpose(1, 2))
                grad_bias = grad.sum(2, keepdim=True)
                grad = torch.bmm(weights[layer].transpose(1, 2), grad).mul_(a > 0)
                weights[layer].sub_(grad_w, alpha=lr)
                biases[layer].sub_(grad_bias, alpha=lr)
            bias_grad = torch.sum(grad, 2, keepdim=True, out=grad_b) if depth == 1 else grad.sum(2, keepdim=True)
            w_first.baddbmm_(grad.view(groups, -1, n), x, alpha=-lr)
            b_first.sub_(bias_grad.view(groups, -1, 1), alpha=lr)


# ---- the reference: one model at a time, as the paper's code does ---------------------------------


def kd_kl_mean(student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
    """KL(t || softmax(s)) summed over elements and divided by n x k (``KLDivLoss`` 'mean' reduction).

    The engine's KD at T = 1 (:func:`mmdistill.kl.kd_per_example`) on the teacher's log-probabilities; a
    probability of exactly 0 is taken as the smallest positive float (its summand is then ~0, not NaN).
    """
    teacher_log_probs = teacher_probs.clamp_min(torch.finfo(teacher_probs.dtype).tiny).log()
    return kd_per_example(student_logits, teacher_log_probs).sum() / student_logits.numel()


def _kd_targets(i: int, run: Run) -> Tensor | None:
    """Run ``i``'s soft targets when it has a KD term, None without one; a KD weight without them is refused."""
    if not run.kd_weight:
        return None
    if run.soft_targets is None:
        raise ConfigError(f"ensemble: run {i} has kd_weight {run.kd_weight} but no soft_targets")
    return run.soft_targets


def fit_sequential(runs: Sequence[Run], *, lr: float = 0.1, epochs: int = 1000) -> list[nn.Module]:
    """Train each run's module alone, in place, with ``torch.optim.SGD`` and autograd."""
    for i, run in enumerate(runs):
        soft = _kd_targets(i, run)
        model = run.model
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(epochs):
            out = model(run.x)
            loss = run.ce_weight * F.cross_entropy(out, run.y)
            if soft is not None:
                loss = loss + run.kd_weight * kd_kl_mean(out, soft)
            loss.backward()
            opt.step()
            opt.zero_grad()
    return [r.model for r in runs]
