"""The headline of a ``train`` run: the paired difference student - no-KD, per seed, with its sign (a positive
difference means distillation helped)."""

from __future__ import annotations

import re

import pytest

from mmdistill.engine.protocol import summarize_runs, summary_markdown


def _runs(student: list[float], nokd: list[float]) -> list[dict]:
    return [
        {"seed": i, "student": {"accuracy": s, "f1_macro": s}, "nokd": {"accuracy": n, "f1_macro": n}}
        for i, (s, n) in enumerate(zip(student, nokd))
    ]


def test_the_paired_difference_is_student_minus_nokd_seed_by_seed():
    metrics = summarize_runs(_runs([80.0, 85.0, 90.0], [70.0, 80.0, 88.0]), "kd", "best")
    paired = metrics["paired"]["student-nokd.accuracy"]
    assert paired["mean"] == pytest.approx((10.0 + 5.0 + 2.0) / 3)  # per seed: 10, 5, 2
    assert paired["ci_low"] < paired["mean"] < paired["ci_high"]
    helped_less = summarize_runs(_runs([70.0, 80.0, 88.0], [80.0, 85.0, 90.0]), "kd", "best")
    assert helped_less["paired"]["student-nokd.accuracy"]["mean"] == pytest.approx(-17.0 / 3)


def test_summary_md_shows_the_sign_of_the_paired_difference():
    better, worse = [80.0, 85.0, 90.0], [70.0, 80.0, 88.0]
    for student, nokd, sign in ((better, worse, 1), (worse, better, -1)):
        text = summary_markdown(summarize_runs(_runs(student, nokd), "kd", "best"))
        line = next(line for line in text.splitlines() if line.startswith("Paired difference"))
        shown = float(re.search(r"accuracy (-?[\d.]+)", line.split(":", 1)[1]).group(1))
        assert shown * sign > 0, line
