"""How far the advisor's signals rank real KD gains, on the third round's parts of the real-pair suite.

    python benchmarks/advisor_real_signals.py        # reads docs/results/advisor/real_{dev,heldout}_round3.json
    python benchmarks/advisor_real_signals.py --round 4      # the fourth round's held-out part: its reliability,
                                                             # the advisor's Spearman (bootstrap, within each dataset)
                                                             # and each signal alone (read after the scoring)
    python benchmarks/advisor_real_signals.py --round 5      # the same for the fifth, the candidate beside the advice
    python benchmarks/advisor_real_signals.py --round 6      # the same for the sixth, with what the advice said
    python benchmarks/advisor_real_signals.py --round 7      # the same for the seventh

Reads the stored advice and gains (``advisor_real_pairs.py --round 3``; nothing is measured or fitted again) and
prints, for each part:

* how reliable the 20-seed gains are: the between-setting standard deviation of the gains against their standard
  errors, and the split-half Spearman (the mean of seeds 0, 2, 4, ... against that of seeds 1, 3, 5, ...);
* each signal the advice computes, alone: its Spearman with the gains (development part);
* a ridge regression of the gains on all those signals (standardised; the penalty ``lambda`` on the unit-variance
  columns), scored left out one setting at a time and left out one *family* at a time (a family: an mfeat teacher
  view, or a dataset and direction, so that the AV-MNIST SNR levels of one direction leave together): the first
  says how well the signals interpolate between settings of families they have seen, the second how they carry to
  a family they have not, which is the case of a user's own data;
* the advisor's Spearman on the held-out part, with a bootstrap 95% interval over its settings, and within each
  dataset.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mmdistill.stats import spearman

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "advisor"
ROW_SIGNALS = ("cch_margin", "gamma", "teacher_acc", "student_acc", "pilot_gain")


def family(setting: str) -> str:
    """An mfeat pair's teacher view, else the dataset and direction (``avmnist image:audio``)."""
    if setting.startswith("mfeat"):
        return "mfeat teacher " + setting.split()[1].split(":")[0]
    return setting.split(" (")[0]


def teacher_reads_student(setting: str) -> bool:
    """Whether the setting's teacher ("a,b" in "dataset a,b:b ...") reads the student's modality too."""
    teacher, student = setting.split()[1].split(":")
    return student in teacher.split(",")


def round5_pooled() -> list[dict]:
    """The fifth round's advice rows with the gains of all 60 seeds measured: seeds 0-19 (scored) and 20-59
    (``real_measured_round5_seeds20-59.json``, measured after the scoring), ``gain`` their mean."""
    held = json.loads((RESULTS / "real_heldout_round5.json").read_text())["rows"]
    extra = json.loads((RESULTS / "real_measured_round5_seeds20-59.json").read_text())["rows"]
    pooled = [{**r, "gains": r["gains"] + extra[r["setting"]]["gains"]} for r in held]
    for r in pooled:
        r["gain"] = float(np.mean(r["gains"]))
    return pooled


def reliability(rows: list[dict]) -> str:
    gain = np.array([r["gain"] for r in rows])
    se = np.array([np.std(r["gains"], ddof=1) / np.sqrt(len(r["gains"])) for r in rows])
    halves = [[float(np.mean(r["gains"][h::2])) for r in rows] for h in (0, 1)]
    return (
        f"{len(rows)} settings, {len(rows[0]['gains'])} seeds each: gains' standard deviation between settings "
        f"{gain.std(ddof=1):.2f} points, their standard errors {np.sqrt(np.mean(se**2)):.2f} (root mean square); "
        f"split-half Spearman {spearman(*halves):+.2f}"
    )


def signal_matrix(rows: list[dict]) -> tuple[np.ndarray, list[str]]:
    names = [k for k in sorted(rows[0]["features"]) if all(np.isfinite(r["features"][k]) for r in rows)]
    return np.array([[r["features"][k] for k in names] for r in rows], dtype=float), names


def signals_alone(rows: list[dict]) -> str:
    """Each signal the advice computes, alone: its Spearman with the measured gains, lowest first."""
    gain = [r["gain"] for r in rows]
    x, names = signal_matrix(rows)
    alone = {n: spearman(x[:, i].tolist(), gain) for i, n in enumerate(names)}
    alone.update({f"{n} (advice)": spearman([r[n] for r in rows], gain) for n in ROW_SIGNALS})
    return ", ".join(f"{n} {rho:+.2f}" for n, rho in sorted(alone.items(), key=lambda kv: kv[1]))


def ridge_out_of_sample(x: np.ndarray, gain: np.ndarray, groups: np.ndarray, lam: float) -> np.ndarray:
    """Each setting's prediction by a ridge fitted on the settings outside its group (columns standardised on them)."""
    pred = np.zeros(len(gain))
    for g in np.unique(groups):
        fit = groups != g
        mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-12
        a = (x[fit] - mu) / sd
        w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (gain[fit] - gain[fit].mean()))
        pred[~fit] = (x[~fit] - mu) / sd @ w + gain[fit].mean()
    return pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--round", type=int, choices=(3, 4, 5, 6, 7), default=3, help="the round whose stored parts to read"
    )
    round_ = ap.parse_args().round
    if round_ >= 6:
        held = json.loads((RESULTS / f"real_heldout_round{round_}.json").read_text())["rows"]
        print(f"held-out part (round {round_}, tuned learning rates):", reliability(held))
        advisor_on(held, who="the shipped advice (gamma and the pilot student's accuracy)")
        advisor_on(held, "candidate_gain", f"the candidate ({' and '.join(held[0]['candidate_signals'])})")
        by_kind(held, "predicted_gain", "the shipped advice")
        said = [r["recommendation"] for r in held]
        for word in sorted(set(said)):
            gains = [r["gain"] for r in held if r["recommendation"] == word]
            print(f"  says {word!r} on {len(gains)}: measured gains {min(gains):+.2f} to {max(gains):+.2f}")
        gain = np.array([r["gain"] for r in held])
        print(f"  KD helped in {int((gain > 0).sum())} of {len(held)}, mean {gain.mean():+.2f} points")
        print(f"\neach signal alone, Spearman with round {round_}'s gains (read after its scoring: exploratory)")
        print(signals_alone(held))
        scored = round5_pooled() + [  # every round scored with the line, the fifth over its 60 seeds
            r
            for n in range(6, round_ + 1)
            for r in json.loads((RESULTS / f"real_heldout_round{n}.json").read_text())["rows"]
        ]
        rho = spearman(
            [r.get("candidate_gain") if "real-pilot" == r["basis"] else r["predicted_gain"] for r in scored],
            [r["gain"] for r in scored],
        )
        print(
            f"\nthe shipped line on rounds 5-{round_}, each scored once ({len(scored)} settings): Spearman {rho:+.2f}"
        )
        return
    if round_ == 5:
        held = json.loads((RESULTS / "real_heldout_round5.json").read_text())["rows"]
        print("held-out part (fifth round, tuned learning rates):", reliability(held))
        advisor_on(held, who="the advice as shipped when the round was scored (the pilot's estimate)")
        advisor_on(held, "candidate_gain", "the candidate (gamma and the pilot student's accuracy)")
        by_kind(held, "candidate_gain", "the candidate")
        print("\neach signal alone, Spearman with the fifth round's gains (read after its scoring: exploratory)")
        print(signals_alone(held))
        if (RESULTS / "real_measured_round5_seeds20-59.json").exists():  # 40 more seeds, measured after the scoring
            pooled = round5_pooled()
            print("\nwith seeds 20-59 added (60 seeds; measured after the scoring):", reliability(pooled))
            advisor_on(pooled, "candidate_gain", "the shipped advice (the candidate)")
            advisor_on(pooled, who="the previous advice (the pilot's estimate)")
            gain = np.array([r["gain"] for r in pooled])
            inside = [r["candidate_low"] <= r["gain"] <= r["candidate_high"] for r in pooled]
            sign = np.mean([(r["candidate_gain"] > 0) == (r["gain"] > 0) for r in pooled])
            trivial = max(np.mean(gain > 0), np.mean(gain <= 0))
            print(
                f"the shipped advice: 80% coverage {np.mean(inside):.2f}, sign accuracy {sign:.2f} "
                f"(trivial {trivial:.2f})"
            )
            print("each signal alone, 60 seeds:", signals_alone(pooled))
        return
    if round_ == 4:
        held = json.loads((RESULTS / "real_heldout_round4.json").read_text())["rows"]
        print("held-out part (fourth round):", reliability(held))
        advisor_on(held)
        print("\neach signal alone, Spearman with the fourth round's gains (read after its scoring: exploratory)")
        print(signals_alone(held))
        return
    dev = json.loads((RESULTS / "real_dev_round3.json").read_text())["rows"]
    held = json.loads((RESULTS / "real_heldout_round3.json").read_text())["rows"]
    print("development part:", reliability(dev))
    print("held-out part:", reliability(held))
    gain = np.array([r["gain"] for r in dev])
    x, names = signal_matrix(dev)
    print("\neach signal alone, Spearman with the development gains:")
    print(signals_alone(dev))
    one_each = np.arange(len(dev))
    families = np.array([family(r["setting"]) for r in dev])
    print(f"\nridge on all {len(names)} signals, development part ({len(set(families))} families):")
    print("| lambda | left out one setting at a time | left out one family at a time |")
    print("|---|---|---|")
    for lam in (1, 10, 30, 100):
        loo = spearman(ridge_out_of_sample(x, gain, one_each, lam).tolist(), gain.tolist())
        lgo = spearman(ridge_out_of_sample(x, gain, families, lam).tolist(), gain.tolist())
        print(f"| {lam} | {loo:+.2f} | {lgo:+.2f} |")
    advisor_on(held)


def by_kind(held: list[dict], key: str, who: str) -> None:
    """``key``'s Spearman on the crossmodal settings, and on those whose teacher reads the student's modality too."""
    for kind in ("crossmodal", "superset"):
        part = [r for r in held if teacher_reads_student(r["setting"]) == (kind == "superset")]
        rho = spearman([r[key] for r in part], [r["gain"] for r in part])
        print(f"  {who} on the {kind} settings: {len(part)}, Spearman {rho:+.2f}")


def advisor_on(held: list[dict], key: str = "predicted_gain", who: str = "the advisor") -> None:
    """The advisor's (or ``key``'s) Spearman on a held-out part, its bootstrap 95% interval over the settings, and
    within each dataset."""
    kept = [r for r in held if not r["abstained"]]
    pred, measured = np.array([r[key] for r in kept]), np.array([r["gain"] for r in kept])
    rng, resampled = np.random.default_rng(0), []
    for _ in range(2000):  # settings drawn with replacement (a draw of fewer than 4 distinct ones is skipped)
        i = rng.integers(0, len(kept), len(kept))
        if len(set(i.tolist())) >= 4:
            resampled.append(spearman(pred[i].tolist(), measured[i].tolist()))
    low, high = np.percentile(resampled, [2.5, 97.5])
    print(
        f"\n{who} on the held-out part: Spearman {spearman(pred.tolist(), measured.tolist()):+.2f} on "
        f"{len(kept)} settings, bootstrap 95% interval {low:+.2f} to {high:+.2f}"
    )
    print(f"{who} on the held-out part, within each dataset:")
    for prefix in ("mfeat", "av-digits", "avmnist"):
        part = [r for r in held if r["setting"].startswith(prefix) and not r["abstained"]]
        rho = spearman([r[key] for r in part], [r["gain"] for r in part])
        print(f"  {prefix}: {len(part)} settings, Spearman {rho:+.2f}")


if __name__ == "__main__":
    main()
