"""Small traps a new user met: seed statistics with few seeds, the cache's first use,
``splits_from_arrays`` keeping the user's own split."""

from __future__ import annotations

import math

import numpy as np

from mmdistill.engine.protocol import summary_markdown
from mmdistill.stats import BOUNDED, format_summary, summarize


def _metrics(accs: list[float]) -> dict:
    s = summarize(accs)
    return {
        "method": "kd",
        "seeds": list(range(len(accs))),
        "reporting": "test at best val",
        "summary": {"student.accuracy": s, "student.f1_macro": s},
        "paired": {},
    }


def test_two_seed_interval_is_clipped_to_0_100_and_marked():
    s = summarize([0.8124, 0.9550])  # the case: 88.37 ± 10.08 [-2.16, 178.91]
    assert s["ci_high"] > 1.0  # raw t-interval kept as is (metrics.json's meaning is unchanged)
    shown = format_summary(s, bounds=BOUNDED)
    assert shown.endswith("[0.00, 100.00] (clipped)"), shown
    assert format_summary(s).endswith("178.97]")  # unbounded (e.g. a paired difference): unclipped
    inside = summarize([0.80, 0.81, 0.82])
    assert "(clipped)" not in format_summary(inside, bounds=BOUNDED)


def test_summary_warns_below_three_seeds():
    two = summary_markdown(_metrics([0.8124, 0.9550]))
    assert "fewer than 3 seeds are very wide" in two and "(clipped)" in two
    assert "178" not in two.split("| student |")[1]
    three = summary_markdown(_metrics([0.80, 0.81, 0.82]))
    assert "Caution" not in three and "(clipped)" not in three.split("| model |")[1]
    one = summary_markdown(_metrics([0.8]))
    assert "Caution" not in one and not math.isnan(summarize([0.8])["mean"])


def test_first_use_of_the_cache_says_where_and_how_to_change_it(tmp_path, capsys):
    from mmdistill.engine.teacher import announce_new_cache_dir

    where = tmp_path / "home" / ".cache" / "mmdistill" / "teacher"
    announce_new_cache_dir(where)
    err = capsys.readouterr().err
    assert where.is_dir() and str(where) in err
    assert "MMDISTILL_CACHE" in err and "cache.dir" in err and "cache.enabled=false" in err
    announce_new_cache_dir(where)  # only the first time
    assert capsys.readouterr().err == ""


def test_training_announces_a_new_cache_folder(tiny_config, tmp_path):
    import subprocess

    from conftest import cli, cli_env

    proc = subprocess.run(
        cli("train", str(tiny_config(epochs=1)), "--out", str(tmp_path / "run"), "--quiet"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"caching teacher outputs in {tmp_path / 'cache'}" in proc.stderr, proc.stderr


def _pool(n: int = 120):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    return {"a": rng.normal(size=(n, 4)).astype("float32"), "b": rng.normal(size=(n, 2)).astype("float32")}, labels


def test_splits_from_arrays_keeps_the_users_own_split():
    from mmdistill.data import splits_from_arrays

    x, y = _pool()
    split = np.array(["train"] * 60 + ["val"] * 30 + ["test"] * 30)
    s = splits_from_arrays(x, y, 3, seed=0, split=split)
    assert np.array_equal(s.test.tensors["a"].numpy(), x["a"][90:])
    assert np.array_equal(s.val.tensors["a"].numpy(), x["a"][60:90])
    assert len(s.train) == 60


def test_splits_from_arrays_carves_val_from_train_only():
    from mmdistill.data import splits_from_arrays

    x, y = _pool()
    split = np.array(["train"] * 90 + ["test"] * 30)
    s = splits_from_arrays(x, y, 3, seed=0, split=split)
    assert np.array_equal(s.test.tensors["a"].numpy(), x["a"][90:])  # the user's test set, untouched
    assert len(s.train) + len(s.val) == 90 and len(s.val) > 0
    train_val = np.concatenate([s.train.tensors["a"].numpy(), s.val.tensors["a"].numpy()])
    assert sorted(map(tuple, train_val)) == sorted(map(tuple, x["a"][:90]))


def test_splits_from_arrays_names_a_bad_split():
    import pytest

    from mmdistill.data import splits_from_arrays
    from mmdistill.errors import DataError

    x, y = _pool()
    with pytest.raises(DataError, match="split has values \\['tset'\\]"):
        splits_from_arrays(x, y, 3, seed=0, split=np.array(["train"] * 90 + ["tset"] * 30))
    with pytest.raises(DataError, match="one entry per example"):
        splits_from_arrays(x, y, 3, seed=0, split=np.array(["train"] * 10))


def test_demo_report_says_each_command_once_and_each_is_runnable(tmp_path):
    import json
    import shlex

    from mmdistill.cli import build_parser
    from mmdistill.commands.demo import ADVISE_ONE_PAIR, advise_command
    from mmdistill.studies.demo_report import write_report

    root = tmp_path / "demo"
    command = "mmdistill reproduce mfh-gamma --seeds 2 --out mfh-gamma"
    (root / "mfh-gamma").mkdir(parents=True)
    (root / "mfh-gamma" / "summary.md").write_text(f"# MFH\n\nCommand: `{command}`\n\nA table.\n")  # as mfh/report.py
    (root / "plain").mkdir()
    (root / "plain" / "summary.md").write_text("# Plain\n\nA table.\n")
    sections = [
        {"title": "MFH", "folder": "mfh-gamma", "command": command},
        {"title": "Plain", "folder": "plain", "command": "mmdistill evaluate plain"},
    ]
    (root / "report.json").write_text(json.dumps(sections))
    html_path, md_path = write_report(root)
    md, page = md_path.read_text(), html_path.read_text()
    assert md.count(f"Command: `{command}`") == 1, md
    assert page.count("Command:") == 2 and page.count(command) == 1, page  # once per section
    assert md.count("Command: `mmdistill evaluate plain`") == 1

    advise = advise_command(root / "advise", 2)
    for cmd in (advise, ADVISE_ONE_PAIR):
        argv = shlex.split(cmd)
        assert argv[0] == "mmdistill"
        build_parser().parse_args(argv[1:])  # argparse exits (SystemExit) on anything not runnable
    assert advise == "mmdistill demo --seeds 2 --out demo"
