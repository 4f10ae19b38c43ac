"""Validate the crossmodal-KD advisor on suites of modality-Venn settings against the measured KD gain.

    python benchmarks/advisor_validation.py --suite dev --fit   # development suite: fit / tune freely
    python benchmarks/advisor_validation.py --suite test-3      # held-out suites: evaluate once, at the end

A suite is drawn from the Venn generator (:mod:`mmdistill.data.generated.venn`) with its own seed range:
decisive dims s0 0-12, sa 0-10, sb 0-8; extra noise dims 0-20 for the teacher's modality a and
20-70 for the student's modality b; n_train 50, 100 or 200; 30% of settings with a random rotation
of each modality's features, in "mixed" suites 25% with a nonlinear view (a fixed random one-layer tanh
network applied to each modality's features, then standardised), the rest plain. The KD gain of a setting
is measured by the paper's protocol (linear teacher on x_a, no-KD and KD students on x_b, full-batch
SGD lr 0.1, 1000 epochs, KD = CE + KL at T = 1, test n = 1000) over 10 seeds, as batched ensembles.
The advisor sees the training sample of the first seed only.

Scored, for every predictor of the measured mean gain: Spearman overall and at n <= 100, sign
accuracy (predicted gain > 0 vs measured gain > 0) against the trivial "KD never helps", and, where
the predictor has one, the coverage of its 80% interval. Reference predictors in the same table: the
true gamma of the setting (an oracle) and the naive rule teacher accuracy - no-KD student accuracy
(from the protocol's own test accuracies, an oracle too, and from the advisor's cross-validation).
Measured gains are cached in ``docs/results/advisor/<suite>_measured.json``; ``--remeasure`` redoes them.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from scipy.stats import spearmanr

from mmdistill.data.generated.venn import VennSpec, draw
from mmdistill.io import write_text
from mmdistill.mfh.ensemble import Run, train_runs
from mmdistill.studies.mfh_synthetic import _official_inits

# name: (seed base, number of settings, views). "mixed": 30% rotated, 25% nonlinear, the rest plain; "issue":
# 30% rotated, the rest plain (the family of the 40-setting held-out suite the targets were set on). The first 200
# settings of "dev" are the 200-setting dev suite of the first calibration (the same seeds, so the same draws).
SUITES = {
    "dev": (1000, 1000, "mixed"),
    "test": (7000, 40, "mixed"),
    "test-large": (9000, 120, "mixed"),
    "test-3": (11000, 200, "mixed"),
    "test-issue": (13000, 200, "issue"),
    "dev-multiclass": (15000, 200, "multiclass"),
    "test-multiclass": (17000, 100, "multiclass"),
}
SEEDS = 10
GRID = {"lam": (0.3, 1.0, 3.0), "gamma": (0.02, 0.033, 0.06, 0.1, 0.17)}  # the calibration's kernel ridge, by 5-fold CV
FOLDS = 5
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "advisor"


@dataclass(frozen=True)
class Setting:
    label: str
    spec: VennSpec
    n: int
    view: str  # plain | rotated | nonlinear
    seeds: tuple[int, ...]


def make_suite(base: int, count: int, views: str = "mixed") -> list[Setting]:
    out = []
    for i in range(count):
        rng = np.random.default_rng((base, i))
        while True:
            s0, sa, sb = int(rng.integers(0, 13)), int(rng.integers(0, 11)), int(rng.integers(0, 9))
            if s0 + sa >= 1 and s0 + sb >= 1:
                break
        extra_a, extra_b = int(rng.integers(0, 21)), int(rng.integers(20, 71))
        n = int(rng.choice([50, 100, 200]))
        u = rng.random()
        view = "rotated" if u < 0.3 else "nonlinear" if u < 0.55 and views != "issue" else "plain"
        k = 2
        if views == "multiclass":  # outside the calibration's domain: more classes and rows (drawn last)
            k, n = int(rng.choice([3, 5, 10])), int(rng.choice([300, 600, 1200]))
        spec = VennSpec(
            s0=s0, sa=sa, sb=sb, dim_a=s0 + sa + extra_a, dim_b=s0 + sb + extra_b, mix=view == "rotated", num_classes=k
        )
        seeds = tuple(base + 100 * i + s for s in range(SEEDS))
        name = f"{base}/{i} s{s0}/{sa}/{sb} d{spec.dim_a}/{spec.dim_b} n{n} {view}" + (f" k{k}" if k > 2 else "")
        out.append(Setting(name, spec, n, view, seeds))
    return out


def _nonlinear(x_train: torch.Tensor, x_test: torch.Tensor, seed: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random network ``tanh(g x W / sqrt(d) + c)`` (g ~ U(1.5, 3)), standardised by the training rows."""
    rng = np.random.default_rng(seed)
    d = x_train.shape[1]
    w = torch.tensor(rng.standard_normal((d, d)) / np.sqrt(d), dtype=torch.float32)
    c = torch.tensor(rng.normal(0, 0.5, d), dtype=torch.float32)
    g = float(rng.uniform(1.5, 3.0))
    tr, te = torch.tanh(g * x_train @ w + c), torch.tanh(g * x_test @ w + c)
    mu, sd = tr.mean(0), tr.std(0).clamp_min(1e-6)
    return (tr - mu) / sd, (te - mu) / sd


def setting_data(s: Setting, seed: int, n_test: int = 1000) -> dict:
    """Train/test arrays of one seed of a setting (the view applied)."""
    d = draw(s.spec, seed, n_train=s.n, n_test=n_test)
    data = {
        "xa": d.train.xa,
        "xb": d.train.xb,
        "y": d.train.y,
        "xa_test": d.test.xa,
        "xb_test": d.test.xb,
        "y_test": d.test.y,
    }
    if s.view == "nonlinear":
        index = s.seeds[0]  # one network per setting, the same for all its seeds
        data["xa"], data["xa_test"] = _nonlinear(data["xa"], data["xa_test"], (index, 0))
        data["xb"], data["xb_test"] = _nonlinear(data["xb"], data["xb_test"], (index, 1))
    return data


def measure(settings: list[Setting]) -> tuple[list[dict], float]:
    """Per setting: the 10 seeds' KD gains (points), mean teacher and no-KD accuracy; batched per (n_train, classes)."""
    start = time.perf_counter()
    results: dict[str, dict] = {}
    for n, k in sorted({(s.n, s.spec.num_classes) for s in settings}):  # one batch per shape
        jobs = []
        for s in (s for s in settings if (s.n, s.spec.num_classes) == (n, k)):
            for seed in s.seeds:
                data = setting_data(s, seed)
                dims = (s.spec.dim_a, s.spec.dim_b, s.spec.dim_b)
                nets = _official_inits(seed + 1, dims, (), s.spec.num_classes)
                jobs.append((s, data, nets))
        teachers = train_runs([Run(t, d["xa"], d["y"]) for _, d, (t, _, _) in jobs], lr=0.1, epochs=1000)
        probs = torch.softmax(teachers.logits([d["xa"] for _, d, _ in jobs]), -1)
        runs = []
        for (_, d, (_, kd, nokd)), p in zip(jobs, probs):
            runs += [Run(nokd, d["xb"], d["y"]), Run(kd, d["xb"], d["y"], soft_targets=p, ce_weight=1.0, kd_weight=1.0)]
        students = train_runs(runs, lr=0.1, epochs=1000)
        t_acc = teachers.accuracy([d["xa_test"] for _, d, _ in jobs], [d["y_test"] for _, d, _ in jobs])
        s_acc = students.accuracy(
            [d["xb_test"] for _, d, _ in jobs for _ in (0, 1)], [d["y_test"] for _, d, _ in jobs for _ in (0, 1)]
        )
        for i, (s, _, _) in enumerate(jobs):
            r = results.setdefault(s.label, {"gains": [], "teacher": [], "nokd": []})
            r["gains"].append(100 * float(s_acc[2 * i + 1] - s_acc[2 * i]))
            r["teacher"].append(100 * float(t_acc[i]))
            r["nokd"].append(100 * float(s_acc[2 * i]))
    rows = []
    for s in settings:
        r = results[s.label]
        g = np.array(r["gains"])
        rows.append(
            {
                "label": s.label,
                "n": s.n,
                "view": s.view,
                "gamma": s.spec.gamma,
                "gain": float(g.mean()),
                "gain_se": float(g.std(ddof=1) / np.sqrt(len(g))),
                "gains": r["gains"],
                "teacher": float(np.mean(r["teacher"])),
                "nokd": float(np.mean(r["nokd"])),
            }
        )
    return rows, time.perf_counter() - start


def measured(suite: str, remeasure: bool = False) -> tuple[list[Setting], list[dict]]:
    settings = make_suite(*SUITES[suite])
    path = RESULTS / f"{suite}_measured.json"
    if path.exists() and not remeasure:
        saved = json.loads(path.read_text())
        if [r["label"] for r in saved["rows"]] == [s.label for s in settings]:
            return settings, saved["rows"]
    rows, seconds = measure(settings)
    write_text(path, json.dumps({"suite": suite, "seconds": seconds, "rows": rows}, indent=1))
    return settings, rows


# ---- scoring -------------------------------------------------------------------------------------


def score(pred: np.ndarray, gain: np.ndarray, n: np.ndarray, interval: tuple | None = None) -> dict:
    small = n <= 100
    out = {
        "spearman": float(spearmanr(pred, gain).statistic),
        "spearman_small": float(spearmanr(pred[small], gain[small]).statistic) if small.sum() > 2 else float("nan"),
        "sign_accuracy": float(np.mean((pred > 0) == (gain > 0))),
    }
    if interval is not None:
        out["coverage"] = float(np.mean((interval[0] <= gain) & (gain <= interval[1])))
    return out


def advisor_predictions(settings: list[Setting], **kwargs) -> list[dict]:
    """The advice on each setting's first training sample; ``{"label", "refused"}`` where advise refuses the
    sample (multi-class draws can leave a class with fewer than 5 rows)."""
    from mmdistill.advisor.predict import advise
    from mmdistill.errors import DataError

    out = []
    for s in settings:
        d = setting_data(s, s.seeds[0])
        try:
            a = advise(d["xa"], d["xb"], d["y"], num_classes=s.spec.num_classes, seed=0, **kwargs)
        except DataError as e:
            out.append({"label": s.label, "refused": str(e)})
            continue
        out.append({"label": s.label, **a.to_dict()})
    return out


def advised(rows: list[dict], preds: list[dict]) -> tuple[list[dict], list[dict], int]:
    """The settings the advisor predicted (rows and predictions), and how many it refused or abstained on."""
    keep = [i for i, p in enumerate(preds) if "refused" not in p and not p.get("abstained")]
    return [rows[i] for i in keep], [preds[i] for i in keep], len(preds) - len(keep)


def _krr(f: np.ndarray, gain: np.ndarray, lam: float, gamma: float) -> dict:
    """Kernel ridge regression (RBF, intercept = the mean gain) on standardised, clipped signals ``f``."""
    mean, sd = f.mean(0), f.std(0) + 1e-12
    z = np.clip((f - mean) / sd, -4.0, 4.0)
    k = np.exp(-gamma * ((z[:, None] - z[None]) ** 2).sum(-1))
    alpha = np.linalg.solve(k + lam * np.eye(len(z)), gain - gain.mean())
    return {"mean": mean, "sd": sd, "centers": z, "alpha": alpha, "intercept": float(gain.mean()), "gamma": gamma}


def fit_calibration(preds: list[dict], rows: list[dict], features: list[str] | None = None) -> tuple[dict, np.ndarray]:
    """The kernel ridge calibration, (lambda, gamma) picked on the grid by 5-fold cross-validation (the sum of the
    Spearman overall and at n <= 100), the interval constants from its cross-validated residuals, and the
    cross-validated predictions (each setting predicted by a fit on the other four folds)."""
    from mmdistill.advisor import calibration as cal
    from mmdistill.advisor.predict import predict_gain

    names = features or cal.FEATURES
    f = np.array([[p["features"][name] for name in names] for p in preds])
    gain, n = np.array([r["gain"] for r in rows]), np.array([r["n"] for r in rows])
    order = np.random.default_rng(0).permutation(len(gain))
    folds = [order[i::FOLDS] for i in range(FOLDS)]

    def cross_validated(lam: float, gamma: float) -> np.ndarray:
        out = np.zeros(len(gain))
        for held in folds:
            keep = np.setdiff1d(order, held)
            c = {**_krr(f[keep], gain[keep], lam, gamma), "features": names, "q80": 0.0, "scale0": 0.0}
            out[held] = [predict_gain(preds[i]["features"], 0.0, c)[0] for i in held]
        return out

    best = None
    for lam in GRID["lam"]:
        for gamma in GRID["gamma"]:
            cv = cross_validated(lam, gamma)
            sc = score(cv, gain, n)
            if best is None or sc["spearman"] + sc["spearman_small"] > best[0]:
                best = (sc["spearman"] + sc["spearman_small"], lam, gamma, cv)
    _, lam, gamma, cv = best
    se = np.array([p["pilot_gain_se"] for p in preds])
    resid = np.abs(gain - cv)
    scale0 = float(resid.mean())
    calib = {
        "features": names,
        **_krr(f, gain, lam, gamma),
        "lam": lam,
        "scale0": scale0,
        "q80": float(np.quantile(resid / (scale0 + se), 0.8)),
    }
    return calib, cv


def fit_pilot_interval(preds: list[dict], rows: list[dict]) -> dict:
    """Interval constants around the pilot's own estimate: ``q80 (s0 + se_pilot)`` with s0 the mean absolute
    residual |gain - pilot gain| and q80 the 80th percentile of residual / (s0 + se_pilot) (split-conformal)."""
    gain = np.array([r["gain"] for r in rows])
    pilot, se = (np.array([p[k] for p in preds]) for k in ("pilot_gain", "pilot_gain_se"))
    resid = np.abs(gain - pilot)
    scale0 = float(resid.mean())
    suite = SUITES["dev-multiclass"]
    return {
        "scale0": scale0,
        "q80": float(np.quantile(resid / (scale0 + se), 0.8)),
        "suite": f"dev-multiclass: {len(rows)} Venn settings, seed base {suite[0]}",
    }


def suite_domain(preds: list[dict]) -> dict:
    """The domain a suite covers, from its own stored signals: its class counts and training rows (their range), and
    the 1st-99th percentile range of each signal the calibration reads (``advise`` abstains outside it)."""
    from mmdistill.advisor import calibration as cal

    classes = [int(p["label"].rsplit(" k", 1)[1]) if " k" in p["label"] else 2 for p in preds]
    rows = [round(float(np.exp(p["features"]["log_n"]))) for p in preds]
    signals = {}
    for name in cal.FEATURES:
        values = np.array([p["features"][name] for p in preds], dtype=float)
        signals[name] = [round(float(np.percentile(values, 1)), 6), round(float(np.percentile(values, 99)), 6)]
    return {"classes": [min(classes), max(classes)], "rows": [min(rows), max(rows)], "signals": signals}


def write_domains() -> Path:
    """Write both suites' domains into the shipped calibration, from the stored advice (no refit)."""
    stored = {s: json.loads((RESULTS / f"{s}_advice.json").read_text()) for s in ("dev", "dev-multiclass")}
    shipped = _shipped()
    shipped["domain"] = suite_domain(stored["dev"])
    shipped["outside"] = {**shipped["outside"], "domain": suite_domain(stored["dev-multiclass"])}
    return write_calibration({k: v for k, v in shipped.items() if k not in ("fitted_by", "suite")})


def _shipped() -> dict:
    """The calibration file as it stands (empty if there is none)."""
    from mmdistill.advisor import calibration as cal

    return json.loads(cal.PATH.read_text()) if cal.PATH.exists() else {}


def write_calibration(calib: dict) -> Path:
    from mmdistill.advisor import calibration as cal

    suite = SUITES["dev"]
    out = {
        "fitted_by": "benchmarks/advisor_validation.py --suite dev --fit; outside: --suite dev-multiclass --fit; "
        "domains: --domain",
        "suite": f"dev: {suite[1]} Venn settings, seed base {suite[0]}",
        **{k: (np.round(v, 6).tolist() if isinstance(v, np.ndarray) else v) for k, v in calib.items()},
    }
    write_text(cal.PATH, json.dumps(out, separators=(",", ":")) + "\n")
    cal.load.cache_clear()
    return cal.PATH


def joint_probe(xa: torch.Tensor, xb: torch.Tensor, y: torch.Tensor, steps: int = 150, seed: int = 0) -> list[float]:
    """Learned-representation signal (MFH Algorithm 1's objective): linear t(x_a) and s(x_b) trained jointly on
    ``CE(t) + CE(s) + MSE(t, s)`` (SGD, momentum 0.9), 2-fold cross-fitted; returns the held-out correlation of
    their logit margins and each one's held-out accuracy."""
    import torch.nn.functional as F

    n = len(y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    folds = [perm[: n // 2], perm[n // 2 :]]
    margin_t, margin_s = torch.zeros(n), torch.zeros(n)
    for f in (0, 1):
        tr, te = folds[f], folds[1 - f]
        torch.manual_seed(seed + f)
        t, s = torch.nn.Linear(xa.shape[1], 2), torch.nn.Linear(xb.shape[1], 2)
        opt = torch.optim.SGD([*t.parameters(), *s.parameters()], lr=0.05, momentum=0.9, weight_decay=1e-2)
        for _ in range(steps):
            lt, ls = t(xa[tr]), s(xb[tr])
            loss = F.cross_entropy(lt, y[tr]) + F.cross_entropy(ls, y[tr]) + F.mse_loss(lt, ls)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            margin_t[te], margin_s[te] = (
                (lambda z: z[:, 1] - z[:, 0])(t(xa[te])),
                (lambda z: z[:, 1] - z[:, 0])(s(xb[te])),
            )
    agree = float(torch.corrcoef(torch.stack([margin_t, margin_s]))[0, 1])
    return [
        agree,
        float(((margin_t > 0).long() == y).float().mean()),
        float(((margin_s > 0).long() == y).float().mean()),
    ]


def try_joint(settings: list[Setting], rows: list[dict], preds: list[dict]) -> list[str]:
    """Dev suite only: the joint-probe signal alone, and the cross-validated score of the calibration with it added."""
    gain, n = np.array([r["gain"] for r in rows]), np.array([r["n"] for r in rows])
    extra = np.array([joint_probe(*(setting_data(s, s.seeds[0])[k] for k in ("xa", "xb", "y"))) for s in settings])
    lines = ["", "Learned-representation (joint probe) signals on this suite:", ""]
    for i, name in enumerate(
        ("held-out agreement of the jointly trained logits", "its teacher accuracy", "its student accuracy")
    ):
        sc = score(extra[:, i], gain, n)
        lines.append(f"- {name}: Spearman {sc['spearman']:+.2f}, at n <= 100 {sc['spearman_small']:+.2f}")
    for p, e in zip(preds, extra):
        p["features"] = {**p["features"], "joint_agree": e[0], "joint_t": e[1], "joint_s": e[2]}
    from mmdistill.advisor import calibration as cal

    _, cv = fit_calibration(preds, rows, cal.FEATURES + ["joint_agree", "joint_t", "joint_s"])
    sc = score(cv, gain, n)
    lines.append(
        f"- the calibration with these 3 signals added, cross-validated: Spearman {sc['spearman']:+.2f}, "
        f"at n <= 100 {sc['spearman_small']:+.2f}, sign accuracy {sc['sign_accuracy']:.2f}"
    )
    return lines


def table(rows: list[dict], preds: list[dict]) -> list[str]:
    gain, n = np.array([r["gain"] for r in rows]), np.array([r["n"] for r in rows])
    trivial = float(np.mean(gain <= 0))
    entries = [
        (
            "advisor: predicted gain (`advise`)",
            np.array([p["predicted_gain"] for p in preds]),
            (
                np.array([p["predicted_gain_interval"][0] for p in preds]),
                np.array([p["predicted_gain_interval"][1] for p in preds]),
            ),
        ),
        ("advisor: pilot-distillation gain alone", np.array([p["pilot_gain"] for p in preds]), None),
        ("advisor: gamma estimate alone", np.array([p["gamma"] for p in preds]) - 0.5, None),
        ("advisor: CCH margin I(T;S) - I(S;Y) alone", np.array([p["cch_margin"] for p in preds]), None),
        ("advisor: teacher's cross-validated accuracy alone", np.array([p["teacher_accuracy"] for p in preds]), None),
        (
            "naive rule, advisor's cross-validated teacher - student acc.",
            100 * np.array([p["teacher_accuracy"] - p["student_accuracy"] for p in preds]),
            None,
        ),
        ("oracle: true gamma of the setting", np.array([r["gamma"] for r in rows]) - 0.5, None),
        (
            "oracle naive rule: protocol teacher acc. - no-KD acc. (test data)",
            np.array([r["teacher"] - r["nokd"] for r in rows]),
            None,
        ),
    ]
    lines = [
        f"Settings: {len(rows)} ({int((n <= 100).sum())} with n <= 100); "
        f"measured gain > 0 in {int((gain > 0).sum())}; "
        f"trivial 'KD never helps' sign accuracy {trivial:.2f}.",
        "",
        "| predictor | Spearman | Spearman n<=100 | sign accuracy | 80% interval coverage |",
        "|---|---|---|---|---|",
    ]
    for name, pred, interval in entries:
        sc = score(pred, gain, n, interval)
        sign = f"{sc['sign_accuracy']:.2f}" if "gamma" not in name and "accuracy alone" not in name else "-"
        cov = f"{sc['coverage']:.2f}" if "coverage" in sc else "-"
        small = "-" if np.isnan(sc["spearman_small"]) else f"{sc['spearman_small']:+.2f}"
        lines.append(f"| {name} | {sc['spearman']:+.2f} | {small} | {sign} | {cov} |")
    lines.append(f"| trivial: KD never helps | - | - | {trivial:.2f} | - |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), default="dev")
    ap.add_argument("--remeasure", action="store_true", help="measure the KD gains again (else read the cache)")
    ap.add_argument(
        "--fit",
        action="store_true",
        help="dev suite only: refit the shipped calibration "
        "(src/mmdistill/advisor/calibration.json) and score its cross-validated predictions",
    )
    ap.add_argument(
        "--domain",
        action="store_true",
        help="write the two development suites' domains (classes, rows, each signal's 1st-99th percentile range) "
        "into the shipped calibration from their stored advice, and stop",
    )
    ap.add_argument(
        "--try-joint",
        action="store_true",
        help="dev suite only: score the joint-probe (learned "
        "representation) signals, alone and added to the calibration (not shipped)",
    )
    args = ap.parse_args()
    if args.domain:
        print(f"wrote the domains into {write_domains()}")
        return
    if (args.fit and not args.suite.startswith("dev")) or (args.try_joint and args.suite != "dev"):
        raise SystemExit("--fit: only on a development suite; --try-joint: only on dev")
    torch.set_num_threads(1)
    settings, rows = measured(args.suite, args.remeasure)
    start = time.perf_counter()
    if args.fit:  # the signals do not depend on the calibration; a placeholder lets advise() run before the fit
        from mmdistill.advisor import calibration as cal

        with mock.patch.object(cal, "load", _placeholder_calibration):
            preds = advisor_predictions(settings)
    else:
        preds = advisor_predictions(settings)
    seconds = time.perf_counter() - start
    rows, preds, refused = advised(rows, preds)
    note = "shipped calibration"
    if args.fit:
        from mmdistill.advisor.predict import predict_gain

        if args.suite == "dev-multiclass":  # outside the calibrated domain: only the pilot's interval is fitted
            outside = {**fit_pilot_interval(preds, rows), "domain": suite_domain(preds)}
            write_calibration({**_shipped(), "outside": outside})
            for p in preds:  # in-sample: the interval constants are fitted on these very residuals
                half = outside["q80"] * (outside["scale0"] + p["pilot_gain_se"])
                p["predicted_gain_interval"] = [p["pilot_gain"] - half, p["pilot_gain"] + half]
            note = "the pilot's own estimate; interval constants fitted on this suite (in-sample coverage)"
        else:
            calib, cv = fit_calibration(preds, rows)
            write_calibration({**calib, "domain": suite_domain(preds), "outside": _shipped().get("outside")})
            for p, g in zip(preds, cv):  # score the cross-validated predictions; intervals from the refitted constants
                half = predict_gain(p["features"], p["pilot_gain_se"], calib)[1]
                p["predicted_gain"], p["predicted_gain_interval"] = float(g), [float(g - half), float(g + half)]
            note = (
                f"{FOLDS}-fold cross-validated predictions of a calibration fitted on this suite "
                f"(kernel ridge, lambda {calib['lam']}, gamma {calib['gamma']}, picked by the same cross-validation)"
            )
    base, count, views = SUITES[args.suite]
    head = f"Suite {args.suite} (seed base {base}, {count} settings, {views} views; advisor's predicted gain: {note}): "
    lines = [head] + table(rows, preds) + draws_of_40(rows, preds)
    if refused:
        lines += [
            "",
            f"Refused by the advisor (a class with fewer than 5 training rows) or abstained on (outside its "
            f"domain), left out: {refused} settings.",
        ]
    lines += ["", f"Advice: {1e3 * seconds / len(settings):.0f} ms per setting (mean, 1 thread)."]
    if args.try_joint:
        print("\n".join(lines + try_joint(settings, rows, preds)))
        return
    write_text(RESULTS / f"{args.suite}_scores.md", "\n".join(lines) + "\n")
    kept = ("label", "features", "gamma", "teacher_accuracy", "student_accuracy", "pilot_gain", "pilot_gain_se")
    slim = [{k: p[k] for k in kept + ("predicted_gain", "predicted_gain_interval")} for p in preds]
    write_text(RESULTS / f"{args.suite}_advice.json", json.dumps(slim, indent=0))
    print("\n".join(lines))


def _placeholder_calibration() -> dict:
    from mmdistill.advisor import calibration as cal

    one = np.zeros((1, len(cal.FEATURES)))
    return {
        "features": cal.FEATURES,
        "mean": one[0],
        "sd": one[0] + 1,
        "centers": one,
        "alpha": np.zeros(1),
        "intercept": 0.0,
        "gamma": 1.0,
        "scale0": 0.0,
        "q80": 0.0,
        "domain": {"classes": [0, np.inf], "rows": [0, np.inf], "signals": {}},  # the signals' domain is fitted
        "outside": {"scale0": 0.0, "q80": 0.0, "domain": {"classes": [0, 0], "rows": [0, 0], "signals": {}}},
    }


def draws_of_40(rows: list[dict], preds: list[dict], draws: int = 2000) -> list[str]:
    """The targets were set on a 40-setting held-out suite: the advisor's Spearman over random 40-setting subsets of
    this suite, and how often it meets both targets (>= 0.6 overall, >= 0.5 at n <= 100)."""
    if len(rows) <= 40 or not any(r["n"] <= 100 for r in rows):  # the targets are for two-class suites
        return []
    gain, n = np.array([r["gain"] for r in rows]), np.array([r["n"] for r in rows])
    pred = np.array([p["predicted_gain"] for p in preds])
    rng = np.random.default_rng(0)
    overall, small = [], []
    for _ in range(draws):
        pick = rng.choice(len(rows), 40, replace=False)
        sc = score(pred[pick], gain[pick], n[pick])
        overall.append(sc["spearman"])
        small.append(sc["spearman_small"])
    overall, small = np.array(overall), np.array(small)
    return [
        "",
        f"Random 40-setting subsets of this suite ({draws}): advisor Spearman median {np.median(overall):+.2f} "
        f"[10th-90th percentile {np.percentile(overall, 10):+.2f}, {np.percentile(overall, 90):+.2f}], at n <= 100 "
        f"{np.median(small):+.2f} [{np.percentile(small, 10):+.2f}, {np.percentile(small, 90):+.2f}]; both targets "
        f"met in {100 * np.mean((overall >= 0.6) & (small >= 0.5)):.0f}% of subsets.",
    ]


if __name__ == "__main__":
    main()
