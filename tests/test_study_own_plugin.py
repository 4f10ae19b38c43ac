"""A study of the user's own, declared by an entry point of another package, run by ``mmdistill reproduce``.

The module (``own_study_plugin.py``) is copied into tmp_path as ``my_study`` beside a ``.dist-info`` folder whose
``entry_points.txt`` declares it under ``mmdistill.studies``: what ``pip install`` of a package with
``[project.entry-points."mmdistill.studies"]`` leaves. The CLI runs in a subprocess, so nothing else registers it.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import cli, cli_env

PLUGIN = Path(__file__).resolve().parent / "own_study_plugin.py"


def install(tmp_path: Path, module_text: str | None = None, value: str = "my_study:target") -> dict:
    """A distribution ``my-study`` on PYTHONPATH with one entry point ``class-balance = VALUE``."""
    site = tmp_path / "site"
    site.mkdir()
    if module_text is None:
        shutil.copy(PLUGIN, site / "my_study.py")
    else:
        (site / "my_study.py").write_text(module_text)
    info = site / "my_study-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-study\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mmdistill.studies]\nclass-balance = {value}\n")
    env = cli_env()
    env["PYTHONPATH"] = f"{site}{os.pathsep}{env['PYTHONPATH']}"
    return env


def reproduce(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli("reproduce", *args), env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_study_declared_by_an_entry_point_runs_like_a_built_in_target(tmp_path):
    env = install(tmp_path)
    out = tmp_path / "balance"
    done = reproduce(env, "class-balance", "--seeds", "2", "--n", "60", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "class-balance: 6 rows" in done.stdout
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["seed"], r["split"]) for r in rows][:3] == [("0", "train"), ("0", "val"), ("0", "test")]
    assert all(0.25 <= float(r["largest_class"]) <= 1 for r in rows)

    # the layout it declared is what --overwrite replaces: a file of the user's own makes it refuse, losing nothing
    (out / "notes.txt").write_text("mine")
    refused = reproduce(env, "class-balance", "--seeds", "1", "--out", str(out), "--overwrite")
    assert refused.returncode == 2 and "also holds notes.txt" in refused.stderr, refused.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 6
    (out / "notes.txt").unlink()
    again = reproduce(env, "class-balance", "--seeds", "1", "--out", str(out), "--overwrite")
    assert again.returncode == 0, again.stderr
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 3


def test_a_plugin_that_fails_to_import_is_one_line_naming_its_entry_point(tmp_path):
    env = install(tmp_path, "raise RuntimeError('half-installed')\n")
    done = reproduce(env, "class-balance", "--seeds", "1", "--out", str(tmp_path / "x"))
    assert done.returncode == 2, done.stderr
    assert "mmdistill.studies: entry point class-balance = 'my_study:target' raised" in done.stderr
    assert "half-installed" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_plugin_that_is_not_a_target_is_refused_by_name(tmp_path):
    env = install(tmp_path, "target = 3\n")
    done = reproduce(env, "class-balance", "--seeds", "1", "--out", str(tmp_path / "x"))
    assert done.returncode == 2, done.stderr
    assert "mmdistill.studies: 'class-balance' must be a mmdistill.commands.reproduce.Target, got int" in done.stderr


@pytest.mark.parametrize("name", ["mfh-gamma"])
def test_a_built_in_target_does_not_load_the_plugins(tmp_path, name):
    """A broken plugin installed beside mmdistill costs the built-in targets nothing: they never load it."""
    env = install(tmp_path, "raise RuntimeError('half-installed')\n")
    out = tmp_path / "gamma"
    done = reproduce(env, name, "--seeds", "1", "--epochs", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "results.csv").exists()
