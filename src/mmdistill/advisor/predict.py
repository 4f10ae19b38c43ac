"""Will crossmodal KD help? A prediction of the KD gain made before any student is distilled.

Given paired training arrays ``x_teacher`` (N, d_a), ``x_student`` (N, d_b) and labels ``y``:

1. linear probes, cross-fitted (:mod:`.probes`): the gamma estimate (share of decisive
   information both modalities hold, Xue et al. ICLR 2023), how much of each modality the other
   explains, how well each predicts the label, and the CCH criterion I(T;S) > I(S;Y)
   (Xie et al. 2025) with bootstrap intervals; and U-statistic moment estimates of the label
   information each modality holds and the two share (:func:`.probes.label_moments`);
2. a pilot distillation (:mod:`.pilot`): K-fold x R cross-fitted teachers, no-KD and KD
   students trained as batched ensembles on the training rows, scored on the held-out rows;
3. the predicted gain (accuracy points), a kernel ridge regression on these signals (:mod:`.calibration`),

       gain_hat = b + sum_i alpha_i exp(-g ||z - z_i||^2),   z = standardised signals,

   fitted on the Venn development suite by ``benchmarks/advisor_validation.py --fit``; its 80% interval is
   ``gain_hat +- q (s0 + se_pilot)``, (q, s0) set from that suite's cross-validated residuals (split-conformal
   style). On multi-class data inside the multi-class Venn development suite's ranges the predicted gain is the
   pilot's own estimate, its interval half-width (:func:`pilot_interval`) set from the pilot's residuals there;
   inside the real pairs' ranges (``benchmarks/advisor_real_pairs.py``) it is a ridge line on the gamma estimate
   and the pilot student's accuracy fitted on real pairs' gains against a no-KD student with a tuned learning rate,
   its interval ``+- q`` from residuals of fits that left each family of pairs out (:func:`real_prediction`);
4. the domain (:func:`calibration_domain`): each calibration covers its own class counts, row counts and range of
   each signal; inputs outside all three are not predicted: the advice abstains, says why, and gives the cheap
   evidence it has (the pilot's estimate with its spread, the teacher's accuracy);
5. a task other than single-label classification with one target per example (multilabel, regression: what the
   task plugin says, :mod:`.task_pilot`): no calibration covers it, so the advice is the pilot distillation in the
   task's own loss, KD term and monitored metric (:func:`advise_task`), an abstention carrying that uncalibrated
   estimate with its spread; the class-label probes are named as not applicable.
   docs/advisor.md has the held-out validation.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import ConfigError, DataError
from . import calibration as cal
from .pilot import pilot_gain
from .probes import (  # noqa: F401 (re-exported)
    _as2d,
    covariance_moments,
    gamma_from_r2,
    gaussian_mi,
    gaussian_mi_closed_form,
    label_moments,
    linear_probes,
)
from .task_pilot import advised_task, reads_class_labels, task_pilot

PROBE_ROWS = 600  # the linear probes and moment estimates read at most this many rows (the Venn suites have <= 200)
MIN_PER_CLASS = 5  # fewer rows than this in a class that occurs: the cross-fitted estimates are meaningless


@dataclass
class Advice:
    """The advice. On a task other than single-label classification the class-label probes (gamma and its R^2
    probes, the CCH criterion, accuracies) are None, named with the reason in ``not_applicable``, and the pilot's
    figures are in the task's monitored metric (``metric``, ``pilot_scores``)."""

    gamma: float | None
    gamma_interval: tuple[float, float] | None
    r2_teacher_from_student: float | None
    r2_student_from_teacher: float | None
    mi_teacher_student: float | None
    mi_student_label: float | None
    cch_margin: float | None
    cch_margin_interval: tuple[float, float] | None
    cch_helps_probability: float | None
    teacher_accuracy: float | None
    student_accuracy: float | None
    pilot_gain: float
    pilot_gain_se: float
    predicted_gain: float | None  # None: the advice abstains (outside the calibrated domain)
    predicted_gain_interval: tuple[float, float] | None
    recommendation: str
    seconds: float
    examples: int
    models_trained: int
    features: dict = field(default_factory=dict)
    basis: str = "calibrated"  # calibrated | pilot | real | abstained | uncalibrated (a task no calibration covers)
    outside: list[str] = field(default_factory=list)  # why the inputs lie outside the calibrated domain
    teacher_accuracy_student_modalities: float | None = None  # a run's teacher given the student's modalities only
    task: str = "classification"
    metric: str = "accuracy"  # the metric the gain is in: the task's default_monitor
    metric_higher_is_better: bool = True
    pilot_scores: dict = field(default_factory=dict)  # the pilot's teacher / no_kd / kd in that metric, as read
    not_applicable: dict = field(default_factory=dict)  # probe -> why it does not apply to this task

    @property
    def abstained(self) -> bool:
        return self.predicted_gain is None

    def to_dict(self) -> dict:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        return {**out, "abstained": self.abstained}

    def text(self) -> str:
        if self.gamma_interval is None or self.cch_margin_interval is None:
            return self._task_text()
        lo, hi = self.gamma_interval
        mlo, mhi = self.cch_margin_interval
        teacher, student = self.teacher_accuracy or 0.0, self.student_accuracy or 0.0  # set with the intervals
        return (
            f"{self.recommendation}\n"
            f"{self._prediction_line()}"
            f"  pilot distillation (cross-fitted, {self.models_trained} small models): KD - no-KD held-out p(y) "
            f"{self.pilot_gain:+.1f} ± {self.pilot_gain_se:.1f} points; teacher {100 * teacher:.1f}%"
            f"{self._teacher_alone()}, student alone {100 * student:.1f}%\n"
            f"  gamma (shared decisive share) ~ {self.gamma:.2f} [{lo:.2f}, {hi:.2f}]"
            f" (linear probes: teacher<-student R2 {self.r2_teacher_from_student:.2f}, "
            f"student<-teacher {self.r2_student_from_teacher:.2f})\n"
            f"  CCH: I(T;S) = {self.mi_teacher_student:.3f} nats vs I(S;Y) = {self.mi_student_label:.3f} nats, margin "
            f"{self.cch_margin:+.3f} [{mlo:+.3f}, {mhi:+.3f}], P(margin > 0) = {self.cch_helps_probability:.2f}\n"
            f"  cost: {self.seconds:.2f} s on {self.examples} examples"
        )

    def _task_text(self) -> str:
        """The advice on a task other than single-label classification: the pilot in the task's metric."""
        p = self.pilot_scores
        better = "higher" if self.metric_higher_is_better else "lower"
        unit = p.get("unit", "")
        return (
            f"{self.recommendation}\n"
            f"  pilot distillation (cross-fitted, {self.models_trained} small linear models), task {self.task!r}, "
            f"metric {self.metric} ({better} is better): teacher {p.get('teacher', float('nan')):.4g}, no-KD student "
            f"{p.get('no_kd', float('nan')):.4g}, KD student {p.get('kd', float('nan')):.4g}; KD's improvement "
            f"{self.pilot_gain:+.3g} ± {self.pilot_gain_se:.2g} {unit} (uncalibrated){self._teacher_alone()}\n"
            + "".join(f"  not applicable: {name}: {why}\n" for name, why in self.not_applicable.items())
            + f"  cost: {self.seconds:.2f} s on {self.examples} examples"
        )

    def _prediction_line(self) -> str:
        if self.predicted_gain_interval is None or self.predicted_gain is None:
            return ""
        glo, ghi = self.predicted_gain_interval
        basis = {
            "calibrated": "calibrated on synthetic two-class Venn suites",
            "pilot": "the pilot's estimate; interval calibrated on a multi-class Venn suite",
            "real": "gamma and the student's accuracy, calibrated on real pairs against a no-KD student with a "
            "tuned learning rate",
        }[self.basis]
        return (
            f"  predicted KD gain {self.predicted_gain:+.1f} points, 80% interval [{glo:+.1f}, {ghi:+.1f}] ({basis})\n"
        )

    def _teacher_alone(self) -> str:
        if self.teacher_accuracy_student_modalities is None:
            return ""
        alone = 100 * self.teacher_accuracy_student_modalities
        return f" (the run's teacher given the student's modalities alone: {alone:.1f}%)"


def check_labels(y: torch.Tensor, k: int, where: str = "advise") -> None:
    """Refuse labels the advisor cannot learn anything from: one class only, or a class with too few rows."""
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise DataError(f"{where}: labels must lie in [0, {k}), got {int(y.min())}..{int(y.max())}")
    counts = torch.bincount(y, minlength=k)
    present = (counts > 0).nonzero().flatten().tolist()
    if len(present) < 2:
        raise DataError(
            f"{where}: labels: the training data hold a single class ({present[0]}, "
            f"{int(counts.sum())} rows); "
            "a KD gain is undefined: give data with at least two classes"
        )
    small = {c: int(counts[c]) for c in present if counts[c] < MIN_PER_CLASS}
    if small:
        raise DataError(
            f"{where}: labels: too few rows per class for cross-fitted estimates (needs >= {MIN_PER_CLASS} "
            f"in every class that occurs; got {small} as class: rows)"
        )


def _class_indices(y) -> torch.Tensor:
    """The labels as a (N,) long tensor of class indices; refused when they are not (fractions, one-hot or
    multi-label rows, regression targets): the advisor predicts a single-label classification accuracy gain."""
    y = torch.as_tensor(y)
    if y.dim() > 1 and not (y.dim() == 2 and y.shape[1] == 1):
        raise DataError(
            f"advise: labels of shape {tuple(y.shape)}: expected one class index per example, shape (N,); "
            "the advisor predicts the accuracy gain of single-label classification"
        )
    y = y.reshape(-1)
    if y.is_floating_point() and not bool((torch.isfinite(y) & (y == y.round())).all()):
        bad = y[~torch.isfinite(y) | (y != y.round())][0].item()
        raise DataError(
            f"advise: labels must be class indices (whole numbers), got {bad!r}; the advisor predicts the "
            "accuracy gain of single-label classification, not of regression targets"
        )
    return y.long()


def _checked_inputs(x_teacher, x_student, y, num_classes, bootstrap: int, pilot_repeats: int):
    """(x_teacher, x_student) as 2-D float64 rows, the labels as a (N,) long tensor and the class count, checked:
    paired counts, at least 20 examples, finite inputs, labels in range, positive bootstrap and >= 2 pilot repeats."""
    if isinstance(x_teacher, torch.utils.data.Dataset) or isinstance(x_student, torch.utils.data.Dataset):
        raise ConfigError(
            "advise: x_teacher and x_student are arrays of feature rows; for a torch Dataset of dict items use "
            "mmdistill.advisor.advise_dataset(dataset, teacher='image', student='audio')"
        )
    xa, xb = _as2d(torch.as_tensor(x_teacher)).double(), _as2d(torch.as_tensor(x_student)).double()
    y = _class_indices(y)
    counts = {"x_teacher": xa.shape[0], "x_student": xb.shape[0], "y": y.shape[0]}
    if len(set(counts.values())) > 1:
        raise DataError(f"advise: mismatched example counts {counts}")
    n = xa.shape[0]
    if n < 20:
        raise DataError(f"advise: needs at least 20 paired examples, got {n}")
    if not (torch.isfinite(xa).all() and torch.isfinite(xb).all()):
        raise DataError("advise: inputs hold NaN/Inf values")
    k = int(num_classes or int(y.max()) + 1)
    check_labels(y, k)
    if bootstrap < 1:
        raise ConfigError(f"advise.bootstrap: must be a positive integer, got {bootstrap}")
    if pilot_repeats < 2:
        raise ConfigError(f"advise.pilot_repeats: must be an integer >= 2, got {pilot_repeats}")
    return xa, xb, y, k


def advise(
    x_teacher,
    x_student,
    y,
    *,
    num_classes: int | None = None,
    bootstrap: int = 10,
    seed: int = 0,
    max_components: int = 32,
    kd_weights: tuple[float, float] = (1.0, 1.0),
    pilot_repeats: int = 4,
    train_rows: int | None = None,
    task=None,
) -> Advice:
    """Estimate, before distilling, how much KD from a teacher on ``x_teacher`` helps a student on ``x_student``.
    ``train_rows``: the size of the training set the student will be trained on, when these rows are a subset of it
    (the calibration's domain covers a range of training-set sizes). ``task``: a task name or Task (default
    classification, ``y`` class indices); for another task with one target per example (multilabel: ``y`` (N, C)
    0/1 rows; regression: (N,) or (N, D) values) the advice is the pilot's uncalibrated estimate in the task's
    monitored metric (:func:`advise_task`)."""
    start = time.perf_counter()
    chosen = advised_task(task)
    if not reads_class_labels(chosen):
        return advise_task(
            chosen, x_teacher, x_student, y, seed=seed, kd_weights=kd_weights, pilot_repeats=pilot_repeats, start=start
        )
    xa, xb, y, k = _checked_inputs(x_teacher, x_student, y, num_classes, bootstrap, pilot_repeats)
    n = xa.shape[0]
    sub = torch.arange(n)
    if n > PROBE_ROWS:  # large data: the probes on a random subsample, so that the advice's cost stays bounded
        sub = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))[:PROBE_ROWS]
    probes = linear_probes(xa[sub], xb[sub], y[sub], k, bootstrap=bootstrap, seed=seed, max_components=max_components)
    pilot = _pilot(xa, xb, y, k, pilot_repeats, kd_weights, seed)
    probes.update(label_moments(xa, xb, y, k, max_rows=PROBE_ROWS, seed=seed))
    probes.update(covariance_moments(xa, xb, max_rows=PROBE_ROWS, seed=seed))
    features = signal_features(probes, pilot, n, xa.shape[1], xb.shape[1])
    domain, outside = calibration_domain(k, max(n, train_rows or 0), features)
    gain: float | None = None
    interval: tuple[float, float] | None = None
    if domain == "calibrated":
        gain, half = predict_gain(features, pilot.gain_prob_se)
    elif domain == "pilot":  # the pilot's own measurement, its interval from its residuals on that suite
        gain, half = pilot.gain_prob, pilot_interval(pilot.gain_prob_se)
    elif domain == "real":
        gain, half = real_prediction(features)
    if gain is not None:
        interval = (gain - half, gain + half)
    return Advice(
        gamma=probes["gamma"],
        gamma_interval=probes["gamma_interval"],
        r2_teacher_from_student=probes["r2_teacher_from_student"],
        r2_student_from_teacher=probes["r2_student_from_teacher"],
        mi_teacher_student=probes["mi_teacher_student"],
        mi_student_label=probes["mi_student_label"],
        cch_margin=probes["cch_margin"],
        cch_margin_interval=probes["cch_margin_interval"],
        cch_helps_probability=probes["cch_helps_probability"],
        teacher_accuracy=pilot.teacher_accuracy,
        student_accuracy=pilot.student_accuracy,
        pilot_gain=pilot.gain_prob,
        pilot_gain_se=pilot.gain_prob_se,
        predicted_gain=gain,
        predicted_gain_interval=interval,
        recommendation=_recommend(gain, interval) if gain is not None and interval else _abstention(outside, pilot),
        seconds=time.perf_counter() - start,
        examples=n,
        models_trained=pilot.models,
        features=features,
        basis=domain,
        outside=outside,
    )


def _pilot(xa: torch.Tensor, xb: torch.Tensor, y: torch.Tensor, k: int, repeats: int, kd_weights, seed: int):
    """The pilot distillation on the pilot's rows (:func:`_pilot_rows`)."""
    za, zb, rows = _pilot_rows(xa, xb, seed)
    p = cal.PILOT
    return pilot_gain(
        za, zb, y[rows], k, repeats=repeats, epochs=p["epochs"], lr=p["lr"], folds=p["folds"], kd_weights=kd_weights,
        seed=seed,
    )  # fmt: skip


def _pilot_rows(xa: torch.Tensor, xb: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(teacher side, student side, their row indices) for the pilot: the inputs standardised. Beyond the
    calibration suites (more than 200 rows, or a side wider than twice the rows) a bounded random subsample of at
    most 200 rows, each side projected on its top 66 principal components, so that its cost stays bounded whatever
    the data."""
    za, zb = ((x - x.mean(0)) / x.std(0).clamp_min(1e-6) for x in (xa, xb))
    n, rows = xa.shape[0], torch.arange(xa.shape[0])
    if n > cal.PILOT["max_rows"] or max(xa.shape[1], xb.shape[1]) > 2 * n:
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: cal.PILOT["max_rows"]]
        width = min(cal.PILOT["max_rows"], n) // 3
        za, zb = (_top_components(x[rows], width) for x in (za, zb))
    return za, zb, rows


# What the advice on a task other than single-label classification leaves out, and why (Advice.not_applicable).
CLASS_ONLY = {
    "gamma": "the share of decisive information about one class label (Xue et al., 2023), with its R^2 probes of "
    "linear class models, needs one class per example",
    "cch_margin": "the CCH criterion I(T;S) > I(S;Y) as estimated here reads one-hot class labels for Y",
    "accuracy": "one class per example; the pilot's teacher and students are scored with the task's metric instead",
    "predicted_gain": "no calibration covers this task (each was fitted on single-label classification): the "
    "pilot's own estimate is given, uncalibrated, with its spread",
}


def advise_task(
    task, x_teacher, x_student, y, *, seed: int = 0, kd_weights=(1.0, 1.0), pilot_repeats: int = 4, start=None
) -> Advice:
    """The advice on a task other than single-label classification (``task``: a Task with one target per example):
    the pilot distillation in the task's own loss, KD term and monitored metric (:mod:`.task_pilot`) and the
    label-free moment estimates; no calibrated prediction (an abstention carrying the pilot's estimate and spread)."""
    start = time.perf_counter() if start is None else start
    xa, xb, y = _checked_task_inputs(task, x_teacher, x_student, y, pilot_repeats)
    n = xa.shape[0]
    za, zb, rows = _pilot_rows(xa, xb, seed)
    p = cal.PILOT
    pilot = task_pilot(task, za, zb, y[rows], folds=p["folds"], repeats=pilot_repeats, kd_weights=kd_weights, seed=seed)
    moments = covariance_moments(xa, xb, max_rows=PROBE_ROWS, seed=seed)
    features = {
        "pilot_gain": pilot.gain,
        "pilot_se": pilot.gain_se,
        "log_n": float(np.log(n)),
        "d_a_per_n": xa.shape[1] / n,
        "d_b_per_n": xb.shape[1] / n,
        "shared_rank": moments["shared_rank"],
        "redundancy_b": moments["redundancy_b"],
    }
    title = task.metric_spec(pilot.metric).title
    unit = "points" if pilot.percent else f"({title} units)"
    scores = {"teacher": pilot.teacher, "no_kd": pilot.no_kd, "kd": pilot.kd, "unit": unit}
    outside = [f"task {task.name!r}: no calibration covers it (each was fitted on single-label classification)"]
    better = "higher" if pilot.higher_is_better else "lower"
    recommendation = (
        f"cannot predict: {outside[0]}. Cheap evidence, uncalibrated: the pilot distillation's KD - no-KD improvement "
        f"in {pilot.metric} ({better} is better) {pilot.gain:+.3g} ± {pilot.gain_se:.2g} {unit}; its teacher "
        f"{pilot.teacher:.4g}, no-KD student {pilot.no_kd:.4g}, KD student {pilot.kd:.4g}; train the student with "
        "and without KD to know"
    )
    nones = dict.fromkeys(
        ("gamma", "gamma_interval", "r2_teacher_from_student", "r2_student_from_teacher", "mi_teacher_student",
         "mi_student_label", "cch_margin", "cch_margin_interval", "cch_helps_probability", "teacher_accuracy",
         "student_accuracy", "predicted_gain", "predicted_gain_interval")
    )  # fmt: skip
    return Advice(
        **nones, pilot_gain=pilot.gain, pilot_gain_se=pilot.gain_se, recommendation=recommendation,
        seconds=time.perf_counter() - start, examples=n, models_trained=pilot.models, features=features,
        basis="uncalibrated", outside=outside, task=task.name, metric=pilot.metric,
        metric_higher_is_better=pilot.higher_is_better, pilot_scores=scores, not_applicable=dict(CLASS_ONLY),
    )  # fmt: skip


def _checked_task_inputs(task, x_teacher, x_student, y, pilot_repeats: int):
    """(x_teacher, x_student) as 2-D float64 rows and the targets as (N, C) floats, checked: paired counts, at least
    20 examples, finite inputs, targets of the task's form (its own ``check_target``) that are not all the same."""
    xa, xb = _as2d(torch.as_tensor(x_teacher)).double(), _as2d(torch.as_tensor(x_student)).double()
    y = torch.as_tensor(y)
    counts = {"x_teacher": xa.shape[0], "x_student": xb.shape[0], "y": y.shape[0] if y.dim() else 0}
    if len(set(counts.values())) > 1:
        raise DataError(f"advise: mismatched example counts {counts}")
    if xa.shape[0] < 20:
        raise DataError(f"advise: needs at least 20 paired examples, got {xa.shape[0]}")
    if not (torch.isfinite(xa).all() and torch.isfinite(xb).all()):
        raise DataError("advise: inputs hold NaN/Inf values")
    try:
        task.check_target(y, None, torch.arange(len(y)))  # a bad target named by its row
    except DataError as err:
        raise DataError(f"advise: labels: {err}") from None
    y = y.reshape(len(y), -1).float()
    if bool((y == y[0]).all()):
        raise DataError(
            f"advise: labels: every example has the same target ({y[0].tolist()}); a KD gain is undefined: give "
            "data whose targets vary"
        )
    if pilot_repeats < 2:
        raise ConfigError(f"advise.pilot_repeats: must be an integer >= 2, got {pilot_repeats}")
    return xa, xb, y


def calibration_domain(k: int, n: int, features: dict, calibration: dict | None = None) -> tuple[str, list[str]]:
    """("calibrated", []) inside the two-class Venn development suite's domain, ("pilot", []) inside the
    multi-class Venn suite's, ("real", []) inside the real pairs', else ("abstained", why: what
    lies outside the nearest one, a domain of this many classes first). A domain (``calibration.json``, written
    from its own stored signals by ``benchmarks/advisor_validation.py --domain`` and
    ``benchmarks/advisor_real_pairs.py --ship-candidate``) is a range of classes and of training rows and a range of
    each signal it lists: the Venn suites' 1st-99th percentiles of the nine signals the calibration reads, the real
    pairs' range of each signal their fit read or depends on, widened by a tenth of its span each side (the pilot's
    standard error from 0)."""
    c = calibration or cal.load()
    why = []
    for basis, domain in (("calibrated", c["domain"]), ("pilot", c["outside"]["domain"]), ("real", _real(c))):
        if domain is None:
            continue
        outside = _outside(domain, k, n, features)
        if not outside:
            return basis, []
        low, high = domain["classes"]
        why.append((not low <= k <= high, len(outside), outside))  # nearest: one with these classes, fewest misses
    return "abstained", min(why)[2]


def _real(c: dict) -> dict | None:
    return c["real"]["domain"] if c.get("real") else None


def _outside(domain: dict, k: int, n: int, features: dict) -> list[str]:
    """What lies outside ``domain``, one phrase each (empty: inside)."""
    found = []
    for what, value, (low, high) in (("classes", k, domain["classes"]), ("training rows", n, domain["rows"])):
        if not low <= value <= high:
            found.append(f"{value} {what}, calibrated on {low:g}-{high:g}")
    for name, (low, high) in domain["signals"].items():
        if not low <= features[name] <= high:
            found.append(f"{name} {features[name]:.3g}, calibrated on {low:.3g} to {high:.3g}")
    return found


def _top_components(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` projected on its top ``width`` principal components, standardised (unchanged if it is narrower)."""
    if x.shape[1] <= width:
        return x
    xc = x - x.mean(0)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    z = xc @ vh[:width].T
    return z / z.std(0).clamp_min(1e-6)


def signal_features(probes: dict, pilot, n: int, d_a: int, d_b: int) -> dict:
    """The signals the calibrated combination reads (names as in :data:`.calibration.FEATURES`)."""
    clip = lambda v: float(min(max(v, -1.0), 1.0))  # noqa: E731
    return {
        "teacher_acc": pilot.teacher_accuracy,
        "student_acc": pilot.student_accuracy,
        "pilot_gain": pilot.gain_prob,
        "pilot_se": pilot.gain_prob_se,
        "gamma_hat": probes["gamma"],
        "r2_b_from_a": clip(probes["r2_b_from_a"]),
        "r2_a_from_b": clip(probes["r2_a_from_b"]),
        "r2_y_from_a": clip(probes["r2_y_from_a"]),
        "r2_y_from_b": clip(probes["r2_y_from_b"]),
        "log_n": float(np.log(n)),
        "d_a_per_n": d_a / n,
        "d_b_per_n": d_b / n,
        "moment_shared": clip(probes["s_0"]),
        "moment_gamma": float(np.clip(probes["gamma_m"], -2, 2)),
        "moment_beta": float(np.clip(probes["beta_m"], -2, 2)),
        "shared_rank": probes["shared_rank"],
        "redundancy_b": probes["redundancy_b"],
    }


def predict_gain(features: dict, pilot_se: float, calibration: dict | None = None) -> tuple[float, float]:
    """(predicted gain, half-width of its 80% interval) from the shipped (or a given) calibration:
    ``gain = b + sum_i alpha_i exp(-g ||z - z_i||^2)`` (:mod:`.calibration`), half-width ``q80 (s0 + se_pilot)``."""
    c = calibration or cal.load()
    f = np.array([features[name] for name in c["features"]], dtype=float)
    z = np.clip((f - np.asarray(c["mean"])) / np.asarray(c["sd"]), -4.0, 4.0)
    k = np.exp(-c["gamma"] * ((np.asarray(c["centers"]) - z) ** 2).sum(1))
    return c["intercept"] + float(k @ np.asarray(c["alpha"])), c["q80"] * (c["scale0"] + pilot_se)


def pilot_interval(pilot_se: float, calibration: dict | None = None) -> float:
    """Half-width of the 80% interval around the pilot's own estimate: ``q80 (s0 + se_pilot)``, (q80, s0) from the
    pilot's residuals on the multi-class Venn development suite."""
    c = (calibration or cal.load())["outside"]
    return c["q80"] * (c["scale0"] + pilot_se)


def real_prediction(features: dict, calibration: dict | None = None) -> tuple[float, float]:
    """(predicted gain, half-width of its 80% interval) on real pairs: ``b + sum_i w_i (f_i - mean_i) / sd_i`` over
    the centre's signals (the gamma estimate, the pilot student's accuracy), a ridge line fitted on real pairs' KD
    gains against a no-KD student whose learning rate was tuned; half-width ``q80``, the split-conformal quantile of
    the absolute residuals of fits that each left one family of pairs out (``benchmarks/advisor_real_pairs.py``)."""
    real = (calibration or cal.load())["real"]
    centre = real["centre"]
    f = np.array([features[name] for name in centre["signals"]], dtype=float)
    z = (f - np.asarray(centre["mean"], dtype=float)) / np.asarray(centre["sd"], dtype=float)
    return float(centre["intercept"] + np.dot(np.asarray(centre["coef"], dtype=float), z)), float(real["q80"])


def _abstention(outside: list[str], pilot) -> str:
    return (
        "cannot predict: the inputs lie outside what the calibration covers ("
        + "; ".join(outside)
        + f"). Cheap evidence, not calibrated here: the pilot distillation's KD - no-KD estimate "
        f"{pilot.gain_prob:+.1f} ± {pilot.gain_prob_se:.1f} points, its teacher {100 * pilot.teacher_accuracy:.1f}% "
        f"and student {100 * pilot.student_accuracy:.1f}% accurate; train the student with and without KD to know"
    )


def _recommend(gain: float, interval: tuple[float, float]) -> str:
    if interval[0] > 0:
        return f"distil: crossmodal KD is likely to help (about {gain:+.1f} points)"
    if interval[1] < 0:
        return f"do not distil: crossmodal KD is unlikely to help (about {gain:+.1f} points); train the student alone"
    lean = "distil; try both if you can" if gain > 0 else "do not distil"
    return f"uncertain: expected gain {gain:+.1f} points, but the 80% interval spans 0 (leaning {lean})"


def advise_dataset(
    dataset,
    params: dict | None = None,
    teacher=None,
    student=None,
    seed: int = 0,
    max_rows: int | None = None,
    **kwargs,
) -> Advice:
    """:func:`advise` on the training split of a registered dataset (its name) or on a torch Dataset of dict items
    (``{"image": tensor, "audio": tensor, "label": class index}``; at most ``max_rows``, default 1,000, seeded rows
    read; :mod:`.items` says what represents each modality). ``teacher`` / ``student``: a modality name,
    "image,audio" or a list (a multimodal side is its modalities' features concatenated; :mod:`.inputs`)."""
    from .inputs import _names, load_advisor_inputs, load_item_inputs

    if isinstance(dataset, str):
        inputs = load_advisor_inputs(dataset, params, teacher, student, seed=seed, max_rows=max_rows)
    else:
        if params:
            raise ConfigError("advise_dataset: params are a registered dataset's; a Dataset object takes none")
        name = type(dataset).__name__
        t_names, s_names = (_names(v, role, None, name) for v, role in ((teacher, "teacher"), (student, "student")))
        inputs = load_item_inputs(dataset, t_names, s_names, name, seed=seed, max_rows=max_rows)
    k, rows = inputs.num_classes, inputs.train_rows
    return advise(inputs.xa, inputs.xb, inputs.y, num_classes=k, seed=seed, train_rows=rows, task=inputs.task, **kwargs)
