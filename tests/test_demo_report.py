"""`mmdistill demo` end to end (2 seeds): every section in report.html, every figure embedded, numbers = CSVs."""

import csv
import json
import re
from statistics import mean

import pytest

from mmdistill.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--seeds", "2", "--quiet"]) == 0
    return out


def test_report_has_every_section_and_command(demo_dir):
    html = (demo_dir / "report.html").read_text()
    sections = json.loads((demo_dir / "report.json").read_text())
    assert [s["folder"] for s in sections] == ["kd-miniature", "mfh-gamma", "advise", "mfh-removal", "msd"]
    for s in sections:
        assert s["title"].split(":")[0] in html
        assert s["command"] in html


def test_every_figure_is_embedded_and_nothing_is_external(demo_dir):
    html = (demo_dir / "report.html").read_text()
    pngs = [p for p in demo_dir.rglob("*.png") if "runs" not in p.parts]
    assert pngs, "the demo must produce figures"
    assert html.count("data:image/png;base64,") >= len(pngs)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html), "no external assets"
    assert "<script" not in html


def _csv_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_numbers_equal_the_csvs(demo_dir):
    html = (demo_dir / "report.html").read_text()
    rows = _csv_rows(demo_dir / "mfh-gamma" / "results.csv")
    for setting in {r["setting"] for r in rows}:
        kd = mean(float(r["kd_acc"]) for r in rows if r["setting"] == setting)
        assert f"{100 * kd:.2f}" in html, f"mfh-gamma {setting}: KD mean {100 * kd:.2f} not in the report"
    rows = _csv_rows(demo_dir / "msd" / "results.csv")
    for method in {r["method"] for r in rows}:
        acc = mean(float(r["student_acc"]) for r in rows if r["method"] == method)
        assert f"{100 * acc:.2f} ±" in html, f"msd {method}: mean {100 * acc:.2f} not in the report"
    for r in _csv_rows(demo_dir / "advise" / "results.csv"):
        assert f"{float(r['measured_gain']):+.2f} [{float(r['measured_low']):+.2f}" in html, r["pair"]
    removal = _csv_rows(demo_dir / "mfh-removal" / "results.csv")
    for mode in ("regular", "general", "random", "specific"):
        acc = mean(float(r["student_acc"]) for r in removal if r["mode"] == mode)
        assert f"{100 * acc:.2f}" in html, f"removal {mode}"
    metrics = json.loads((demo_dir / "kd-miniature" / "metrics.json").read_text())
    for part in ("teacher", "nokd", "student"):
        assert f"{metrics['summary'][f'{part}.accuracy']['mean']:.2f} ±" in html  # metrics.json: percent


def test_report_command_rebuilds_the_same_page(demo_dir):
    before = (demo_dir / "report.html").read_text()
    assert main(["report", str(demo_dir), "--title", "mmdistill demo"]) == 0
    assert (demo_dir / "report.html").read_text() == before
