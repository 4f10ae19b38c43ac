"""``mmdistill report DIR`` collects what the follow-up commands wrote into DIR, and reads a ``distill()`` folder."""

import csv
import re

import torch

from mmdistill.cli import main


def _train(tiny_config, out) -> None:
    assert main(["train", str(tiny_config(epochs=1)), "--out", str(out), "--quiet", "--no-baseline"]) == 0


def test_report_holds_the_robustness_tables_and_figures_and_the_modality_analysis(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    _train(tiny_config, run)
    assert main(["evaluate", str(run), "--missing", "--noise", "--levels", "0", "1"]) == 0
    assert main(["analyze", "modalities", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    page = (run / "report.html").read_text()
    twin = (run / "report.md").read_text()

    for table in ("missing", "noise"):  # each CSV's header and first row appear as an HTML table
        with open(run / "robustness" / f"{table}.csv") as f:
            header, first = list(csv.reader(f))[:2]
        cells = "".join(f"<th>{h}</th>" for h in header)
        assert cells in page.replace("\n", ""), f"robustness/{table}.csv is not shown as a table"
        assert f"robustness/{table}.csv" in twin
        assert all(value in page for value in first)
    plots = sorted((run / "robustness").glob("noise_*.png"))
    assert plots, "evaluate --noise wrote no plot"
    for plot in plots:
        assert plot.name in page and f"robustness/{plot.name}" in twin
    modalities = (run / "analysis" / "modalities.md").read_text()
    heading = re.search(r"^# (.+)$", modalities, re.M).group(1)
    assert heading in page and heading in twin
    embedded = len(re.findall(r"src=[\"']data:image/png;base64,", page))
    assert (run / "analysis" / "saliency_hist.png").is_file()
    assert embedded >= len(plots) + 1, "the noise plots and the saliency histogram are embedded in the page"


def test_report_on_a_distill_folder_shows_its_result(tmp_path, capsys):
    from mmdistill.config import TrainerConfig
    from mmdistill.data import build_splits
    from mmdistill.engine.api import distill
    from mmdistill.models import ModelConfig, build_model

    torch.manual_seed(0)
    data = build_splits("toy-two-modality", {"n": 200})
    student = build_model(ModelConfig(modalities=["b"]), data.train.specs(), data.num_classes)
    out = tmp_path / "py"
    trainer = TrainerConfig(epochs=1, batch_size=32, num_threads=1)
    result = distill(student, None, data, out, method="supervised", trainer=trainer)
    assert main(["report", str(out)]) == 0, capsys.readouterr().err
    page = (out / "report.html").read_text()
    assert "supervised" in page and "test" in page
    some_metric = next(iter(result.test))
    assert some_metric in page


def test_report_on_a_folder_with_nothing_to_show_says_what_to_give(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "holds no summary.md" in err and "mmdistill train" in err and "distill(" in err
