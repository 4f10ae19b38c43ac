"""The advisor's domain: it predicts only where its calibration suites' own signals reach, and abstains elsewhere,
saying why and giving the cheap evidence it has, never a narrow interval around 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.advisor import calibration as cal
from mmdistill.advisor import predict
from mmdistill.advisor.predict import advise, calibration_domain
from mmdistill.cli import main
from mmdistill.data.generated.venn import VennSpec, draw

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "advisor"


@pytest.mark.parametrize("suite,block", [("dev", "domain"), ("dev-multiclass", "outside")])
def test_the_shipped_domain_is_the_calibration_suites_own_signal_ranges(suite, block):
    """Each signal's 1st-99th percentile over the stored suite, its classes and rows (a hand-tuned range fails)."""
    stored = json.loads((RESULTS / f"{suite}_advice.json").read_text())
    shipped = cal.load()[block] if block == "domain" else cal.load()["outside"]["domain"]
    for name in cal.FEATURES:
        values = [a["features"][name] for a in stored]
        assert shipped["signals"][name] == pytest.approx(
            [np.percentile(values, 1), np.percentile(values, 99)], abs=1e-5
        )
    rows = sorted({round(float(np.exp(a["features"]["log_n"]))) for a in stored})
    assert shipped["rows"] == [rows[0], rows[-1]]
    assert shipped["classes"] == ([2, 2] if suite == "dev" else [3, 10])


def test_a_synthetic_pair_inside_the_two_class_suites_range_is_predicted():
    d = draw(VennSpec(s0=6, sa=2, sb=2, dim_a=20, dim_b=30), 0, n_train=100).train
    a = advise(d.xa, d.xb, d.y, bootstrap=2)
    assert not a.abstained and a.basis == "calibrated" and a.outside == []
    low, high = a.predicted_gain_interval
    assert low < a.predicted_gain < high and a.recommendation.split(":")[0] in ("distil", "do not distil", "uncertain")


def test_a_synthetic_pair_outside_the_range_abstains_saying_why_with_the_pilots_evidence():
    """The same structure with a student modality of 400 columns on 100 rows: d_b / n = 4, beyond every suite."""
    d = draw(VennSpec(s0=6, sa=2, sb=2, dim_a=20, dim_b=400), 0, n_train=100).train
    a = advise(d.xa, d.xb, d.y, bootstrap=2)
    assert a.abstained and a.predicted_gain is None and a.predicted_gain_interval is None and a.basis == "abstained"
    assert a.outside == [f"d_b_per_n 4, calibrated on {cal.load()['domain']['signals']['d_b_per_n'][0]:.3g} to 1.62"]
    assert a.recommendation.startswith("cannot predict: the inputs lie outside what the calibration covers (d_b_per_n")
    assert f"KD - no-KD estimate {a.pilot_gain:+.1f} ± {a.pilot_gain_se:.1f} points" in a.recommendation
    assert "predicted KD gain" not in a.text() and a.to_dict()["abstained"] is True


def test_two_classes_beyond_the_two_class_suites_rows_abstain():
    """600 rows of two classes: the two-class suites have 50-200, the multi-class one 3-10 classes."""
    d = draw(VennSpec(s0=6, sa=2, sb=2, dim_a=20, dim_b=30), 0, n_train=600).train
    a = advise(d.xa, d.xb, d.y, bootstrap=2)
    assert a.abstained and a.outside[0] == "600 training rows, calibrated on 50-200"


def test_calibration_domain_names_each_signal_outside_its_range():
    inside = {name: float(np.mean(cal.load()["domain"]["signals"][name])) for name in cal.FEATURES}
    inside["gamma_hat"] = 0.5  # read by the real pairs' domain only
    assert calibration_domain(2, 100, inside) == ("calibrated", [])
    far = dict(inside, pilot_se=99.0, teacher_acc=0.01)
    basis, why = calibration_domain(2, 100, far)
    assert basis == "abstained" and [w.split()[0] for w in why] == ["pilot_se", "teacher_acc"]


def test_advise_command_exits_0_with_an_abstention_in_json(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, n in (("train", 100), ("test", 40)):
        (tmp_path / split).mkdir()
        y = np.arange(n) % 2
        np.save(tmp_path / split / "a.npy", (rng.standard_normal((n, 6)) + y[:, None]).astype("float32"))
        np.save(tmp_path / split / "b.npy", rng.standard_normal((n, 400)).astype("float32"))
        np.save(tmp_path / split / "labels.npy", y.astype("int64"))
    argv = ["advise", "--dataset", "folder", "--param", f"root={tmp_path}", "--teacher", "a", "--student", "b"]
    capsys.readouterr()
    assert main([*argv, "--json", "--bootstrap", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["abstained"] and out["predicted_gain"] is None and any("d_b_per_n" in w for w in out["outside"])
    assert main([*argv, "--bootstrap", "2"]) == 0
    assert "cannot predict" in capsys.readouterr().out


torch.set_num_threads(1)


def _real_rows() -> list[dict]:
    """The third and fourth rounds' stored advice rows, each with its setting's gain against a tuned no-KD student."""
    rows = []
    for advice, tuned in (
        ("real_dev_round3.json", "real_tuned_round3.json"),
        ("real_heldout_round3.json", "real_tuned_round3.json"),
        ("real_heldout_round4.json", "real_tuned_round4.json"),
    ):
        gains = json.loads((RESULTS / tuned).read_text())["rows"]
        rows += [{**r, "gain": gains[r["setting"]]["gain"]} for r in json.loads((RESULTS / advice).read_text())["rows"]]
    return rows


def _family(setting: str) -> str:
    dataset, pair = setting.split()[:2]
    teacher, student = pair.split(":")
    return dataset + (" superset" if student in teacher.split(",") else " crossmodal")


def _ridge_line(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, sd, [intercept, coefficients]) of a ridge line on standardised columns, the intercept unpenalised."""
    mean, sd = x.mean(0), x.std(0) + 1e-12
    z = np.c_[np.ones(len(y)), (x - mean) / sd]
    return mean, sd, np.linalg.solve(z.T @ z + penalty * np.diag([0.0] + [1.0] * x.shape[1]), z.T @ y)


def _left_family_out(x: np.ndarray, gain: np.ndarray, families: np.ndarray, penalty: float) -> np.ndarray:
    """Each row's prediction by the ridge line fitted on the rows of the other families."""
    left_out = np.zeros(len(gain))
    for family in set(families):
        out = families == family
        m, s, v = _ridge_line(x[~out], gain[~out], penalty)
        left_out[out] = v[0] + ((x[out] - m) / s) @ v[1:]
    return left_out


def test_the_shipped_real_pair_centre_and_interval_are_the_fit_on_the_stored_tuned_gains():
    """The real block follows from the 120 stored settings of the third and fourth rounds: the ridge line on gamma and
    the pilot student's accuracy, and q80 the split-conformal quantile of the residuals of fits that each left one
    family out (a hand edit, a fit on part of them, or a fit on the untuned gains fails)."""
    rows, real = _real_rows(), cal.load()["real"]
    centre = real["centre"]
    assert len(rows) == 120 and centre["signals"] == ["gamma_hat", "student_acc"]
    x = np.array([[r["features"][k] for k in centre["signals"]] for r in rows])
    gain, families = np.array([r["gain"] for r in rows]), np.array([_family(r["setting"]) for r in rows])
    mean, sd, w = _ridge_line(x, gain, centre["penalty"])
    assert np.allclose(centre["mean"], mean) and np.allclose(centre["sd"], sd)
    assert np.allclose([centre["intercept"], *centre["coef"]], w)
    left_out = _left_family_out(x, gain, families, centre["penalty"])
    rank = int(np.ceil(0.8 * (len(rows) + 1)))  # split-conformal: the ceil(0.8 (n + 1))-th smallest score
    assert real["q80"] == pytest.approx(np.sort(np.abs(gain - left_out))[rank - 1])
    assert len(set(families)) == 6 and real["leave_family_out"]["coverage"] >= 0.8
    for name, (low, high) in real["domain"]["signals"].items():
        values = [r["features"][name] for r in rows]
        margin = 0.1 * (max(values) - min(values))
        bounded = "acc" in name or name == "gamma_hat"
        expected_low = 0.0 if name == "pilot_se" else max(min(values) - margin, 0.0 if bounded else -np.inf)
        expected_high = min(max(values) + margin, 1.0) if bounded else max(values) + margin
        assert (low, high) == pytest.approx((expected_low, expected_high))
    assert real["domain"]["rows"] == [min(r["rows"] for r in rows), max(r["rows"] for r in rows)]


def _fifth_round_over_60_seeds() -> list[dict]:
    extra = json.loads((RESULTS / "real_measured_round5_seeds20-59.json").read_text())["rows"]
    rows = json.loads((RESULTS / "real_heldout_round5.json").read_text())["rows"]
    return [{**r, "gain": float(np.mean(r["gains"] + extra[r["setting"]]["gains"]))} for r in rows]


@pytest.mark.parametrize("round_", [6, 7])
def test_a_rounds_candidate_is_its_fit_on_the_earlier_rounds_and_never_saw_that_round(round_):
    """The candidate scored on round 6 (7), committed before that round was measured, is the ridge on its two signals
    over the 160 (200) settings of rounds 3-5 (3-6), the fifth over all 60 seeds, with q80 from fits that left a
    family out; none of the round's own settings is among them (a fit that read one of its gains, or the fifth round
    on fewer seeds, fails)."""
    rows = _real_rows() + _fifth_round_over_60_seeds()
    if round_ == 7:
        rows += json.loads((RESULTS / "real_heldout_round6.json").read_text())["rows"]
    model = json.loads((RESULTS / f"real_candidate_round{round_}.json").read_text())
    x = np.array([[r["features"][k] for k in model["signals"]] for r in rows])
    gain, families = np.array([r["gain"] for r in rows]), np.array([_family(r["setting"]) for r in rows])
    mean, sd, w = _ridge_line(x, gain, model["penalty"])
    assert len(rows) == 40 * round_ - 80 and np.allclose([model["intercept"], *model["coef"]], w)
    assert np.allclose(model["sd"], sd)
    left_out = _left_family_out(x, gain, families, model["penalty"])
    assert model["q80"] == pytest.approx(np.sort(np.abs(gain - left_out))[int(np.ceil(0.8 * (len(rows) + 1))) - 1])
    measured = RESULTS / f"real_measured_round{round_}.json"
    if measured.exists():  # measured after the candidate was committed
        held_out = json.loads(measured.read_text())["rows"]
        assert len(held_out) == 40 and not set(held_out) & {r["setting"] for r in rows}
        assert all(r["seeds"] == 40 == len(r["gains"]) for r in held_out.values())


def _inside_the_real_domain() -> dict:
    real = cal.load()["real"]["domain"]
    features = {name: float(np.mean(cal.load()["domain"]["signals"][name])) for name in cal.FEATURES}
    features.update({name: float(np.mean(span)) for name, span in real["signals"].items()})
    return features


def test_on_real_pairs_the_centre_rises_with_gamma_and_the_students_accuracy_and_the_interval_is_fixed():
    """More shared decisive information, or a student that does better alone: KD is predicted to cost less. The
    half-width is the conformal q80 whatever the pilot's spread."""
    features = _inside_the_real_domain()
    base, half = predict.real_prediction(features)
    assert half == pytest.approx(cal.load()["real"]["q80"]) and 0.5 < half < 2.0
    for name in ("gamma_hat", "student_acc"):
        assert predict.real_prediction({**features, name: features[name] + 0.1})[0] > base
    assert predict.real_prediction({**features, "pilot_se": 0.3, "pilot_gain": 1.0}) == (base, half)


def test_the_real_pairs_line_is_its_intercept_at_the_mean_and_moves_by_its_coefficient_per_standard_deviation():
    """``b + sum_i w_i (f_i - mean_i) / sd_i``, read off the shipped block by hand (a line that scales by the sd
    instead of dividing, or adds the mean, fails)."""
    centre = cal.load()["real"]["centre"]
    at_mean = dict(zip(centre["signals"], centre["mean"]))
    assert predict.real_prediction(at_mean)[0] == pytest.approx(centre["intercept"])
    for name, mean, sd, w in zip(centre["signals"], centre["mean"], centre["sd"], centre["coef"]):
        moved = predict.real_prediction({**at_mean, name: mean + 2 * sd})[0]
        assert moved == pytest.approx(centre["intercept"] + 2 * w)


def test_advice_on_a_real_pair_is_the_real_pairs_line_and_its_interval():
    """mfeat, a two-view teacher -> a third view (10 classes, 1,200 rows): inside the real pairs' domain, so the
    prediction is :func:`predict.real_prediction` of the advice's own signals, not the pilot's estimate."""
    a = predict.advise_dataset("mfeat", teacher="pix,fou", student="zer", bootstrap=2)
    gain, half = predict.real_prediction(a.features)
    assert a.basis == "real" and a.predicted_gain == gain and a.predicted_gain_interval == (gain - half, gain + half)
    assert gain != a.pilot_gain
    assert "calibrated on real pairs against a no-KD student with a tuned learning rate" in a.text()


def test_a_pilot_spread_smaller_than_the_real_pairs_is_no_reason_to_abstain():
    rows = int(np.mean(cal.load()["real"]["domain"]["rows"]))
    assert calibration_domain(10, rows, dict(_inside_the_real_domain(), pilot_se=1e-4)) == ("real", [])


def test_a_pilot_gain_beyond_the_real_domain_abstains_and_names_it():
    high = cal.load()["real"]["domain"]["signals"]["pilot_gain"][1]
    basis, why = calibration_domain(10, 1200, dict(_inside_the_real_domain(), pilot_gain=high + 1.0))
    assert basis == "abstained" and len(why) == 1 and why[0].startswith(f"pilot_gain {high + 1.0:.3g}, calibrated on")


def test_inside_the_real_pairs_domain_the_advice_is_the_real_pairs_centre_and_interval():
    real, features = cal.load()["real"]["domain"], _inside_the_real_domain()
    basis, why = calibration_domain(10, int(np.mean(real["rows"])), features)
    assert (basis, why) == ("real", [])
    assert calibration_domain(10, int(real["rows"][1]) + 1, features)[0] == "abstained"


def test_the_domain_reads_the_training_sets_size_not_the_subset_the_probes_read():
    """--max-rows 100 of 2,000 training rows: the student trains on 2,000, beyond the two-class suites' 50-200."""
    from mmdistill.advisor.inputs import load_advisor_inputs

    inputs = load_advisor_inputs("venn", {"n_train": 2000}, seed=0, max_rows=100)
    assert len(inputs.y) == 100 and inputs.train_rows == 2000
    a = advise(inputs.xa, inputs.xb, inputs.y, bootstrap=2, train_rows=inputs.train_rows)
    assert a.abstained and a.examples == 100 and "2000 training rows" in a.outside[0]
