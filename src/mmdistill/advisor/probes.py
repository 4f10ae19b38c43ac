"""The advisor's linear probes: cross-fitted ridge models, the gamma estimate and the CCH criterion.

Given paired training arrays ``x_a`` (N, d_a) for the teacher, ``x_b`` (N, d_b) for the student and labels
``y``, with ridge models fitted on one half and evaluated on the other (both ways):

**gamma** (Xue et al., ICLR 2023, Sec. 3: the share of decisive information both modalities hold).
With a linear teacher ``t(x_a)`` and a linear label model ``u(x_b)`` on the student's modality,

    R2_ab = R^2 of predicting t(x_a) from x_b   (~ s0 / (s0 + sa) = 1 - alpha on the Venn data)
    R2_ba = R^2 of predicting u(x_b) from x_a   (~ s0 / (s0 + sb) = 1 - beta)
    gamma_hat = 1 / (1 / R2_ab + 1 / R2_ba - 1)  (= s0 / (s0 + sa + sb) when both are exact)

each R^2 divided by the split-half reliability of the fitted output (Spearman-Brown corrected).
Also: R^2 of x_b from x_a and of x_a from x_b (how much of each modality the other explains) and
R^2 of the labels from each modality, all held-out.

**CCH criterion** (Xie, Xu and Sanguinetti, arXiv 2510.13182, 2025): crossmodal KD helps when
``I(T; S) > I(S; Y)``, with T the teacher's held-out logits and S the student modality's features
(principal components). Mutual information is the Gaussian (canonical-correlation) estimate

    I(A; B) = -1/2 sum_i log(1 - rho_i^2),   rho_i the canonical correlations of A and B,

exact for jointly Gaussian (A, B) (tested against the closed form); labels enter as one-hot
indicators (a linear lower bound on I(S; Y)). Uncertainty: a bootstrap over the held-out rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

# ---- estimators ------------------------------------------------------------------------------------


def gaussian_mi(a: Tensor, b: Tensor, ridge: float = 1e-6) -> float:
    """``-1/2 sum log(1 - rho_i^2)`` (nats) from the canonical correlations of a (N, p) and b (N, q)."""
    a, b = _as2d(a).double(), _as2d(b).double()
    if a.shape[0] != b.shape[0]:
        raise DataError(f"gaussian_mi: {a.shape[0]} vs {b.shape[0]} examples")
    a, b = a - a.mean(0), b - b.mean(0)
    n = a.shape[0]
    saa, sbb, sab = a.T @ a / n, b.T @ b / n, a.T @ b / n
    ia = _inv_sqrt(saa + ridge * _scale(saa) * torch.eye(saa.shape[0], dtype=a.dtype))
    ib = _inv_sqrt(sbb + ridge * _scale(sbb) * torch.eye(sbb.shape[0], dtype=a.dtype))
    rho = torch.linalg.svdvals(ia @ sab @ ib).clamp(0.0, 1.0 - 1e-12)
    return float(-0.5 * torch.log1p(-(rho**2)).sum())


def gaussian_mi_closed_form(cov: np.ndarray, p: int) -> float:
    """True MI (nats) of jointly Gaussian (A, B) with covariance ``cov``, A the first p coordinates."""
    cov = np.asarray(cov, float)
    return 0.5 * (np.linalg.slogdet(cov[:p, :p])[1] + np.linalg.slogdet(cov[p:, p:])[1] - np.linalg.slogdet(cov)[1])


def _as2d(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    return x.reshape(x.shape[0], -1)


def _scale(m: Tensor) -> float:
    return float(torch.diagonal(m).mean().clamp_min(1e-12))


def _inv_sqrt(m: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(m)
    return v @ torch.diag(w.clamp_min(1e-12).rsqrt()) @ v.T


def _ridge(x: Tensor, t: Tensor, lam: float) -> Tensor:
    """Weights (d+1, k) of ridge regression with an unpenalised intercept:
    ``w = (X^T X + lam I_d)^-1 X^T T``, solved as ``X^T (X X^T + lam I_n)^-1 T`` (the same w) when there are more
    columns than rows, so that a wide input (d = 3,000 on a few hundred rows) costs an n x n solve, not d x d."""
    mu_x, mu_t = x.mean(0), t.mean(0)
    xc, tc = x - mu_x, t - mu_t
    n, d = x.shape
    if d > n:
        w = xc.T @ torch.linalg.solve(xc @ xc.T + lam * torch.eye(n, dtype=x.dtype), tc)
    else:
        w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(d, dtype=x.dtype), xc.T @ tc)
    return torch.cat([w, (mu_t - mu_x @ w).unsqueeze(0)])


def _apply(w: Tensor, x: Tensor) -> Tensor:
    return x @ w[:-1] + w[-1]


def _ridge_prediction(x: Tensor, t: Tensor, lam: float, x_new: Tensor) -> Tensor:
    """``_apply(_ridge(x, t, lam), x_new)`` without forming the (d, k) weights when inputs and targets are both
    wider than the rows (one modality predicted from the other): ``(x_new - mu) X^T (X X^T + lam I)^-1 T``."""
    n, d = x.shape
    if d <= n or t.shape[1] <= n:
        return _apply(_ridge(x, t, lam), x_new)
    mu_x, mu_t = x.mean(0), t.mean(0)
    xc = x - mu_x
    alpha = torch.linalg.solve(xc @ xc.T + lam * torch.eye(n, dtype=x.dtype), t - mu_t)
    return ((x_new - mu_x) @ xc.T) @ alpha + mu_t


def _r2(pred: Tensor, target: Tensor) -> float:
    """Variance-weighted R^2 over the output columns."""
    sse = ((target - pred) ** 2).sum()
    sst = ((target - target.mean(0)) ** 2).sum().clamp_min(1e-12)
    return float(1 - sse / sst)


def _standardise(train: Tensor, other: Tensor) -> tuple[Tensor, Tensor]:
    mu, sd = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mu) / sd, (other - mu) / sd


def _pca(train: Tensor, other: Tensor, k: int) -> Tensor:
    _, _, vh = torch.linalg.svd(train - train.mean(0), full_matrices=False)
    return (other - train.mean(0)) @ vh[:k].T


def _correlation(a: Tensor, b: Tensor) -> Tensor:
    """Variance-weighted correlation of two multi-column outputs (a 0-d tensor)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum() / ((a * a).sum() * (b * b).sum()).sqrt().clamp_min(1e-12)


def _spearman_brown(rho_half: float) -> float:
    """Reliability of a model fitted on all the data from that of two half-data fits: 2 rho / (1 + rho)."""
    rho = min(max(rho_half, 0.05), 1.0)
    return 2 * rho / (1 + rho)


def gamma_from_r2(r2_ab: float, r2_ba: float) -> float:
    """``1 / (1/R2_ab + 1/R2_ba - 1)``, each R^2 clipped to [0.01, 1]."""
    a, b = min(max(r2_ab, 0.01), 1.0), min(max(r2_ba, 0.01), 1.0)
    return 1.0 / (1.0 / a + 1.0 / b - 1.0)


def linear_probes(
    xa: Tensor, xb: Tensor, y: Tensor, k: int, *, bootstrap: int = 20, seed: int = 0, max_components: int = 32
) -> dict:
    """Cross-fitted (2 folds) linear estimates on (xa, xb, y): gamma, the R^2 probes, CCH; bootstrap intervals."""
    n = xa.shape[0]
    onehot = torch.nn.functional.one_hot(y, k).double()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    folds = [perm[: n // 2], perm[n // 2 :]]
    keys = ("t", "t_hat", "u", "u_hat", "s", "y", "a", "a_hat", "b", "b_hat", "ya", "yb")
    held: dict[str, list[Tensor]] = {key: [] for key in keys}
    for f in (0, 1):
        tr, te = folds[f], folds[1 - f]
        a_tr, a_te = _standardise(xa[tr], xa[te])
        b_tr, b_te = _standardise(xb[tr], xb[te])
        lam_a, lam_b = float(a_tr.shape[1]), float(b_tr.shape[1])  # ridge ~ one unit per input dimension
        wt = _ridge(a_tr, onehot[tr], lam_a)  # linear teacher on a
        wu = _ridge(b_tr, onehot[tr], lam_b)  # linear label model on b
        t_tr, u_tr = _apply(wt, a_tr), _apply(wu, b_tr)
        w_ab = _ridge(b_tr, t_tr, lam_b)  # teacher's output from the student's modality
        w_ba = _ridge(a_tr, u_tr, lam_a)  # the student-side model's output from the teacher's modality
        held["t"].append(_apply(wt, a_te))
        held["t_hat"].append(_apply(w_ab, b_te))
        held["u"].append(_apply(wu, b_te))
        held["u_hat"].append(_apply(w_ba, a_te))
        held["a"].append(a_te)
        held["a_hat"].append(_ridge_prediction(b_tr, a_tr, lam_b, b_te))
        held["b"].append(b_te)
        held["b_hat"].append(_ridge_prediction(a_tr, b_tr, lam_a, a_te))
        held["ya"].append(held["t"][-1])
        held["yb"].append(held["u"][-1])
        held["s"].append(_pca(b_tr, b_te, min(max_components, b_tr.shape[1], max(1, len(tr) // 8))))
        held["y"].append(onehot[te])
        # split-half reliability of each fitted output on the held-out rows (Spearman-Brown corrected below)
        half = tr[torch.randperm(len(tr), generator=g)]
        h1, h2 = half[: len(half) // 2], half[len(half) // 2 :]
        for key, x_all, x_te, lam in (("rel_t", xa, a_te, lam_a), ("rel_u", xb, b_te, lam_b)):
            mu, sd = x_all[tr].mean(0), x_all[tr].std(0).clamp_min(1e-6)
            outs = [_apply(_ridge((x_all[h] - mu) / sd, onehot[h], lam), x_te) for h in (h1, h2)]
            held.setdefault(key, []).append(_correlation(outs[0], outs[1]).expand(len(te)))
    parts = {key: torch.cat(v) for key, v in held.items()}
    labels = y[torch.cat([folds[1], folds[0]])]

    def estimate(idx: Tensor) -> tuple[float, float, float, float, float]:
        p = {key: v[idx] for key, v in parts.items()}
        r_ab = _r2(p["t_hat"], p["t"]) / _spearman_brown(float(p["rel_t"].mean()))
        r_ba = _r2(p["u_hat"], p["u"]) / _spearman_brown(float(p["rel_u"].mean()))
        mi_ts = gaussian_mi(p["t"][:, :-1], p["s"])
        mi_sy = gaussian_mi(p["s"], p["y"][:, :-1])
        return gamma_from_r2(r_ab, r_ba), r_ab, r_ba, mi_ts, mi_sy

    full = estimate(torch.arange(n))
    boots = np.array([estimate(torch.randint(0, n, (n,), generator=g)) for _ in range(bootstrap)])
    margins = boots[:, 3] - boots[:, 4]
    return {
        "gamma": full[0],
        "gamma_interval": _interval(boots[:, 0]),
        "r2_teacher_from_student": full[1],
        "r2_student_from_teacher": full[2],
        "mi_teacher_student": full[3],
        "mi_student_label": full[4],
        "cch_margin": full[3] - full[4],
        "cch_margin_interval": _interval(margins),
        "cch_helps_probability": float((margins > 0).mean()),
        "r2_b_from_a": _r2(parts["b_hat"], parts["b"]),
        "r2_a_from_b": _r2(parts["a_hat"], parts["a"]),
        "r2_y_from_a": _r2(parts["ya"], parts["y"]),
        "r2_y_from_b": _r2(parts["yb"], parts["y"]),
        "linear_teacher_accuracy": float((parts["t"].argmax(1) == labels).double().mean()),
        "linear_student_accuracy": float((parts["u"].argmax(1) == labels).double().mean()),
    }


def _interval(values: np.ndarray) -> tuple[float, float]:
    """The bootstrap's 10th-90th percentile (80%) interval."""
    return float(np.percentile(values, 10)), float(np.percentile(values, 90))


def label_moments(xa: Tensor, xb: Tensor, y: Tensor, k: int, max_rows: int = 600, seed: int = 0) -> dict:
    """Unbiased moment estimates of the label information each modality holds and the two share.

    With standardised x_a, x_b and centred one-hot labels Y, ``mu_a = E[x_a Y^T]``, ``mu_b = E[x_b Y^T]`` and
    ``C = E[x_a x_b^T]``, the U-statistics (distinct rows i, j, k; no model is fitted, so no small-n shrinkage bias)

        S_a = ||mu_a||_F^2,   S_b = ||mu_b||_F^2,   S_0 = tr(mu_a^T C mu_b)

    On the Venn data with y = sign(z . delta), E[x_j y] = sqrt(2/pi) delta_j / ||delta|| on a latent channel,
    so S_a, S_b and S_0 are (2/pi) times the delta-weighted shares of s0 + sa, s0 + sb and s0 (rotation
    invariant), and gamma_m = S_0 / (S_a + S_b - S_0), beta_m = 1 - S_0 / S_b (DESIGN.md 2).
    """
    rows = _subsample(y.shape[0], max_rows, seed)
    xa, xb, y = xa[rows], xb[rows], y[rows]
    n = y.shape[0]
    labels = torch.nn.functional.one_hot(y, k).double()
    yy = (labels - labels.mean(0)) @ (labels - labels.mean(0)).T  # y_i . y_k
    ga, gb = _standardised_gram(xa), _standardised_gram(xb)
    s_a, s_b = _off_diagonal_mean(ga * yy), _off_diagonal_mean(gb * yy)
    # sum over distinct (i, j, k) of (x_a,i . x_a,j)(x_b,j . x_b,k)(y_i . y_k), by inclusion-exclusion
    m = yy @ gb.T
    total = (ga * m).sum()
    i_eq_j = (ga.diagonal() * m.diagonal()).sum()
    j_eq_k = (ga * yy * gb.diagonal()[None, :]).sum()
    i_eq_k = (ga * gb.T * yy.diagonal()[:, None]).sum()
    all_eq = (ga.diagonal() * gb.diagonal() * yy.diagonal()).sum()
    s_0 = float((total - i_eq_j - j_eq_k - i_eq_k + 2 * all_eq) / (n * (n - 1) * (n - 2)))
    eps = 1e-3
    return {
        "s_a": s_a,
        "s_b": s_b,
        "s_0": s_0,
        "gamma_m": s_0 / max(s_a + s_b - s_0, eps),
        "beta_m": 1 - s_0 / max(s_b, eps),
    }


def covariance_moments(xa: Tensor, xb: Tensor, max_rows: int = 600, seed: int = 0) -> dict:
    """Unbiased U-statistics of the modalities' second moments (standardised columns, distinct rows i != j):

        shared_rank  = ||C_ab||_F^2 = mean_{i != j} (x_a,i . x_a,j)(x_b,i . x_b,j)     C_ab = E[x_a x_b^T]
        redundancy_b = ||C_bb||_F^2 / d_b                                             (likewise redundancy_a)

    ``shared_rank`` counts the dimensions the two modalities share: on the Venn data C_ab has s0 singular
    values 1 and no others, so it is s0 exactly, mixed or not (rotation invariant); ``redundancy`` is 1 for
    uncorrelated columns and grows with their correlation (d_eff = d / redundancy is the participation ratio).
    """
    rows = _subsample(xa.shape[0], max_rows, seed)
    xa, xb = _as2d(xa)[rows], _as2d(xb)[rows]
    ga, gb = _standardised_gram(xa), _standardised_gram(xb)
    return {
        "shared_rank": _off_diagonal_mean(ga * gb),
        "redundancy_a": _off_diagonal_mean(ga * ga) / xa.shape[1],
        "redundancy_b": _off_diagonal_mean(gb * gb) / xb.shape[1],
    }


def _subsample(n: int, max_rows: int, seed: int) -> Tensor:
    """All row indices, or ``max_rows`` of them drawn at random (seeded) when there are more."""
    if n <= max_rows:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows]


def _standardised_gram(x: Tensor) -> Tensor:
    """``Z Z^T`` of the columns standardised one by one (float64): entry (i, j) is x_i . x_j."""
    z = x.double()
    z = (z - z.mean(0)) / z.std(0).clamp_min(1e-6)
    return z @ z.T


def _off_diagonal_mean(g: Tensor) -> float:
    """Mean of ``g[i, j]`` over i != j (the U-statistic of a pairwise kernel)."""
    n = g.shape[0]
    return float((g.sum() - g.diagonal().sum()) / (n * (n - 1)))
