"""Validate the crossmodal-KD advisor on suites of modality-Venn settings against the measured KD gain.

    python benchmarks/advisor_validation.py --suite dev     # development suite: fit / tune freely
    python benchmarks/advisor_validation.py --suite test    # held-out suite: evaluate once, at the end

A suite is drawn from the Venn generator (:mod:`mmdistill.data.venn`) with its own seed range:
decisive dims s0 0-12, sa 0-10, sb 0-8; extra noise dims 0-20 for the teacher's modality a and
20-70 for the student's modality b; n_train 50, 100 or 200; 30% of settings with a random rotation
of each modality's features, 25% with a nonlinear view (a fixed random one-layer tanh network
applied to each modality's features, then standardised), the rest plain. The KD gain of a setting
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

import numpy as np
import torch
from scipy.stats import spearmanr

from mmdistill.io import write_text
from mmdistill.mfh.ensemble import Run, train_runs
from mmdistill.studies.mfh_synthetic import _official_inits
from mmdistill.data.venn import VennSpec, draw

SUITES = {"dev": (1000, 200), "test": (7000, 40), "test-large": (9000, 120)}  # seed base, number of settings
SEEDS = 10
LAMBDA = 50.0  # ridge penalty of the calibration (chosen on the dev suite's leave-one-out Spearman)
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "advisor"


@dataclass(frozen=True)
class Setting:
    label: str
    spec: VennSpec
    n: int
    view: str  # plain | rotated | nonlinear
    seeds: tuple[int, ...]


def make_suite(base: int, count: int) -> list[Setting]:
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
        view = "rotated" if u < 0.3 else "nonlinear" if u < 0.55 else "plain"
        spec = VennSpec(s0=s0, sa=sa, sb=sb, dim_a=s0 + sa + extra_a, dim_b=s0 + sb + extra_b, mix=view == "rotated")
        seeds = tuple(base + 100 * i + s for s in range(SEEDS))
        out.append(Setting(f"{base}/{i} s{s0}/{sa}/{sb} d{spec.dim_a}/{spec.dim_b} n{n} {view}", spec, n, view, seeds))
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
    """Per setting: the 10 seeds' KD gains (points), mean teacher and no-KD accuracy; batched per n_train."""
    start = time.perf_counter()
    results: dict[str, dict] = {}
    for n in sorted({s.n for s in settings}):
        jobs = []
        for s in (s for s in settings if s.n == n):
            for seed in s.seeds:
                data = setting_data(s, seed)
                nets = _official_inits(seed + 1, (s.spec.dim_a, s.spec.dim_b, s.spec.dim_b), (), 2)
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
        "spearman_small": float(spearmanr(pred[small], gain[small]).statistic),
        "sign_accuracy": float(np.mean((pred > 0) == (gain > 0))),
    }
    if interval is not None:
        out["coverage"] = float(np.mean((interval[0] <= gain) & (gain <= interval[1])))
    return out


def advisor_predictions(settings: list[Setting], **kwargs) -> list[dict]:
    from mmdistill.advisor.predict import advise

    out = []
    for s in settings:
        d = setting_data(s, s.seeds[0])
        a = advise(d["xa"], d["xb"], d["y"], num_classes=2, seed=0, **kwargs)
        out.append({"label": s.label, **a.to_dict()})
    return out


def fit_calibration(preds: list[dict], rows: list[dict], lam: float = LAMBDA) -> tuple[dict, np.ndarray]:
    """Quadratic ridge on the standardised signals (intercept free), the interval constants, and the
    leave-one-out predictions (each setting predicted by a fit on all the others)."""
    from mmdistill.advisor.predict import design
    from mmdistill.advisor.calibration import FEATURES

    f = np.array([[p["features"][name] for name in FEATURES] for p in preds])
    mean, sd = f.mean(0), f.std(0) + 1e-12
    x = np.array([design(p["features"], mean, sd) for p in preds])
    dmean, dsd = x.mean(0), x.std(0) + 1e-12
    x = np.column_stack([np.ones(len(x)), (x - dmean) / dsd])
    se = np.array([p["pilot_gain_se"] for p in preds])
    gain = np.array([r["gain"] for r in rows])
    pen = lam * np.eye(x.shape[1])
    pen[0, 0] = 0.0
    solve = lambda keep: np.linalg.solve(x[keep].T @ x[keep] + pen, x[keep].T @ gain[keep])  # noqa: E731
    loo = np.array([x[i] @ solve(np.arange(len(gain)) != i) for i in range(len(gain))])
    resid = np.abs(gain - loo)
    scale0 = float(resid.mean())
    q80 = float(np.quantile(resid / (scale0 + se), 0.8))
    w = solve(np.ones(len(gain), bool))
    calib = {
        "mean": mean.tolist(),
        "sd": sd.tolist(),
        "design_mean": dmean.tolist(),
        "design_sd": dsd.tolist(),
        "coef": w[1:].tolist(),
        "intercept": float(w[0]),
        "scale0": scale0,
        "q80": q80,
    }
    return calib, loo


def write_calibration(calib: dict, lam: float) -> Path:
    from mmdistill.advisor import calibration as cal

    def r(values) -> str:
        import textwrap

        body = ", ".join(f"{float(x):.6g}" for x in values)
        return "[\n" + textwrap.fill(body, 116, initial_indent="    ", subsequent_indent="    ") + ",\n]"

    names = "[\n" + "".join(f"    {name!r},\n" for name in cal.FEATURES) + "]"
    text = f'''"""Calibration of the advisor's KD-gain prediction (from ``benchmarks/advisor_validation.py --fit``).

Quadratic ridge (lambda {lam}) on the advisor's standardised signals, fitted on the Venn development
suite ({SUITES["dev"][1]} settings, seed base {SUITES["dev"][0]}); see :mod:`.advisor`.
"""

FEATURES = {names}
PILOT = {cal.PILOT!r}
MEAN = {r(calib["mean"])}
SD = {r(calib["sd"])}
DESIGN_MEAN = {r(calib["design_mean"])}
DESIGN_SD = {r(calib["design_sd"])}
COEF = {r(calib["coef"])}
INTERCEPT = {calib["intercept"]:.6f}
SCALE0 = {calib["scale0"]:.6f}
Q80 = {calib["q80"]:.6f}
'''
    path = Path(cal.__file__)
    write_text(path, text)
    return path


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
    """Dev suite only: the joint-probe signal alone, and the leave-one-out score of the calibration with it added."""
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

    names = cal.FEATURES
    try:
        cal.FEATURES = names + ["joint_agree", "joint_t", "joint_s"]
        _, loo = fit_calibration(preds, rows)
    finally:
        cal.FEATURES = names
    sc = score(loo, gain, n)
    lines.append(
        f"- the calibration with these 3 signals added, leave-one-out: Spearman {sc['spearman']:+.2f}, "
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
        sign = f"{sc['sign_accuracy']:.2f}" if "gamma" not in name else "-"
        cov = f"{sc['coverage']:.2f}" if "coverage" in sc else "-"
        lines.append(f"| {name} | {sc['spearman']:+.2f} | {sc['spearman_small']:+.2f} | {sign} | {cov} |")
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
        "(src/mmdistill/advisor/calibration.py) and score its leave-one-out predictions",
    )
    ap.add_argument(
        "--try-joint",
        action="store_true",
        help="dev suite only: score the joint-probe (learned "
        "representation) signals, alone and added to the calibration (not shipped)",
    )
    args = ap.parse_args()
    if (args.fit or args.try_joint) and args.suite != "dev":
        raise SystemExit("--fit / --try-joint: only on the development suite")
    torch.set_num_threads(1)
    settings, rows = measured(args.suite, args.remeasure)
    start = time.perf_counter()
    preds = advisor_predictions(settings)
    seconds = time.perf_counter() - start
    note = "shipped calibration"
    if args.fit:
        from mmdistill.advisor.predict import predict_gain

        calib, loo = fit_calibration(preds, rows)
        write_calibration(calib, LAMBDA)
        for p, g in zip(preds, loo):  # score the leave-one-out predictions; intervals from the refitted constants
            half = predict_gain(p["features"], p["pilot_gain_se"], calib)[1]
            p["predicted_gain"], p["predicted_gain_interval"] = float(g), [float(g - half), float(g + half)]
        note = "leave-one-out predictions of a calibration fitted on this suite"
    head = f"Suite {args.suite} (seed base {SUITES[args.suite][0]}; advisor's predicted gain: {note}): "
    lines = [head] + table(rows, preds)
    lines += ["", f"Advice: {1e3 * seconds / len(settings):.0f} ms per setting (mean, 1 thread)."]
    if args.try_joint:
        print("\n".join(lines + try_joint(settings, rows, preds)))
        return
    write_text(RESULTS / f"{args.suite}_scores.md", "\n".join(lines) + "\n")
    write_text(RESULTS / f"{args.suite}_advice.json", json.dumps(preds, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
