"""Output folders (engine/system/runfolder.py): mmdistill never deletes or writes into what it did not create,
one run at a time per folder (an OS lock), an interrupted run is never replaced silently, and ``--resume``
refuses a changed config."""

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cli, cli_env

from mmdistill.cli import build_parser, main
from mmdistill.engine.system.runfolder import LOCK, MARKER, read_marker


def project(root: Path) -> Path:
    """A user's project folder that happens to hold a ``config.yaml``."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "thesis.tex").write_text("years of work")
    (root / "config.yaml").write_text("name: app\n")
    return root


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def train(config, out, *extra) -> int:
    return main(["train", str(config), "--out", str(out), "--quiet", "--no-baseline", *extra])


def test_a_folder_holding_a_config_yaml_is_not_a_run_and_is_never_touched(tiny_config, tmp_path, capsys, monkeypatch):
    proj = project(tmp_path / "proj")
    config = tiny_config(epochs=1)
    before = snapshot(proj)
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert train(config, proj, *extra) == 2
        assert "not an mmdistill run" in capsys.readouterr().err
        assert snapshot(proj) == before
    monkeypatch.chdir(proj)  # `--out .` inside the user's project must never empty it
    assert train(config, ".", "--overwrite") == 2
    assert snapshot(proj) == before


def test_overwrite_removes_only_mmdistill_outputs_and_refuses_mixed_in_files(tiny_config, tmp_path, capsys):
    config, run = tiny_config(epochs=1), tmp_path / "run"
    assert train(config, run) == 0
    first = read_marker(run)
    assert first["command"] == "train" and first["version"] and first["run_id"] and first["seeds"] == [0]
    (run / "seed_0" / "notes.txt").write_text("my notes")
    (run / "summary.md").unlink()
    (run / "summary.md").symlink_to(tmp_path / "tiny.yaml")  # a known name, but mmdistill never makes links
    capsys.readouterr()
    assert train(config, run, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "seed_0/notes.txt" in err and "summary.md" in err and "move those away" in err
    assert (run / "seed_0" / "notes.txt").read_text() == "my notes" and (run / "metrics.json").is_file()
    (run / "seed_0" / "notes.txt").unlink()
    assert (run / "summary.md").is_symlink()
    (run / "summary.md").unlink()
    assert train(config, run, "--overwrite") == 0
    assert read_marker(run)["run_id"] != first["run_id"]
    assert (tmp_path / "tiny.yaml").is_file()


def test_a_symlinked_out_is_resolved_and_its_target_follows_the_same_rules(tiny_config, tmp_path, capsys):
    config = tiny_config(epochs=1)
    proj = project(tmp_path / "proj")
    before = snapshot(proj)
    (tmp_path / "to-proj").symlink_to(proj)
    assert train(config, tmp_path / "to-proj", "--overwrite") == 2
    assert "not an mmdistill run" in capsys.readouterr().err and snapshot(proj) == before
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert train(config, tmp_path / "dangling") == 2
    assert "symbolic link to" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert train(config, tmp_path / "loop") == 2 and "symbolic link" in capsys.readouterr().err
    (tmp_path / "target").mkdir()
    (tmp_path / "to-target").symlink_to(tmp_path / "target")
    assert train(config, tmp_path / "to-target") == 0
    assert (tmp_path / "to-target").is_symlink() and (tmp_path / "target" / "metrics.json").is_file()
    assert read_marker(tmp_path / "target")["command"] == "train"


def test_a_teacher_checkpoint_inside_out_is_never_deleted(tiny_config, tmp_path, capsys):
    config, run = tiny_config(epochs=1), tmp_path / "run"
    assert train(config, run) == 0
    teacher = run / "seed_0" / "teacher" / "student.safetensors"
    saved = teacher.read_bytes()
    capsys.readouterr()
    assert train(config, run, f"teacher.checkpoint={teacher}", "--overwrite") == 2
    assert "lies inside --out" in capsys.readouterr().err
    assert teacher.read_bytes() == saved


def test_an_interrupted_run_is_not_replaced_without_resume_or_overwrite(tiny_config, tmp_path, capsys):
    config, run = tiny_config(epochs=1), tmp_path / "run"
    assert train(config, run) == 0
    (run / "metrics.json").unlink()  # as if killed before the end
    before = snapshot(run)
    capsys.readouterr()
    assert train(config, run) == 2
    err = capsys.readouterr().err
    assert "an interrupted run is here" in err and "use --resume to continue it or --overwrite to replace it" in err
    assert snapshot(run) == before
    stale = run / "seed_0" / "student" / "checkpoints" / ".last.safetensors.k1ll3d.tmp"  # a write killed half-way
    stale.write_bytes(b"\0" * 100)
    assert train(config, run, "--resume") == 0 and (run / "metrics.json").is_file()
    assert not stale.exists(), "resuming sweeps the run's stale temp files"


def test_resume_refuses_a_changed_config_with_the_keys_and_never_rewrites_config_yaml(tiny_config, tmp_path, capsys):
    config, run = tiny_config(epochs=1), tmp_path / "run"
    assert train(config, run) == 0
    (run / "metrics.json").unlink()
    saved = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert train(config, run, "--resume", "trainer.optimizer.lr=0.5", "data.split_seed=7") == 2
    err = capsys.readouterr().err
    assert "data.split_seed: 0 -> 7" in err and "trainer.optimizer.lr: 0.001 -> 0.5" in err, err
    assert (run / "config.yaml").read_bytes() == saved
    assert train(config, run, "--resume", f"cache.dir={tmp_path / 'other-cache'}") == 0  # cannot change a result
    assert (run / "config.yaml").read_bytes() == saved


def test_resume_may_add_seeds_but_not_drop_them(tiny_config, tmp_path, capsys):
    config, run = tiny_config(epochs=1), tmp_path / "run"
    assert train(config, run) == 0
    assert train(config, run, "--resume") == 2  # finished, nothing to add
    assert "already holds a finished run" in capsys.readouterr().err
    assert train(config, run, "--resume", "--seeds", "2") == 0
    assert json.loads((run / "metrics.json").read_text())["seeds"] == [0, 1]
    (run / "metrics.json").unlink()
    capsys.readouterr()
    assert train(config, run, "--resume") == 2
    assert "--seeds: the run in" in capsys.readouterr().err


def test_two_processes_on_one_folder_the_second_is_refused_and_a_killed_run_is_kept(tiny_config, tmp_path):
    config, run = tiny_config(epochs=2000), tmp_path / "run"  # killed long before the end
    first = subprocess.Popen(
        cli("train", str(config), "--out", str(run), "--quiet", "--no-baseline"),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (run / "seed_0" / "teacher" / "checkpoints" / "last.safetensors").exists() and time.time() < deadline:
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        second = subprocess.run(
            cli("train", str(config), "--out", str(run), "--quiet", "--resume"),
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        assert f"a run is in progress in {run} (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr and first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    kept = snapshot(run)
    third = subprocess.run(
        cli("train", str(config), "--out", str(run), "--quiet"),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.returncode == 2 and "an interrupted run is here: " in third.stderr and "--resume" in third.stderr
    assert snapshot(run) == kept, "restarting without --resume must not delete the interrupted run's checkpoints"


def test_bad_seeds_are_errors_naming_the_option_and_options_are_never_abbreviated(tiny_config, tmp_path, capsys):
    config = tiny_config(epochs=1)
    for argv in (
        ["train", str(config), "--seeds", "0"],
        ["train", str(config), "--seeds", "-1"],
        ["demo", "--seeds", "0"],
        ["reproduce", "mfh-gamma", "--seeds", "0"],
    ):
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2
        assert "--seeds: must be a positive integer" in capsys.readouterr().err
    assert main(["train", str(config), "--seed", "3", "--out", str(tmp_path / "out")]) == 2
    assert "unrecognized arguments: --seed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    def parsers(p):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    found = list(parsers(build_parser()))
    assert len(found) > 15 and all(not p.allow_abbrev for p in found)


def test_every_out_command_refuses_a_foreign_folder_and_marks_its_own(tmp_path, capsys):
    proj = project(tmp_path / "proj")
    before = snapshot(proj)
    for argv in (["demo"], ["reproduce", "mfh-gamma", "--overwrite"], ["salience", "--dataset", "venn", "--overwrite"]):
        assert main([*argv, "--out", str(proj)]) == 2
        assert "not an mmdistill run" in capsys.readouterr().err
        assert snapshot(proj) == before
    out = tmp_path / "sal"
    args = [
        "salience",
        "--dataset",
        "venn",
        "--preset",
        "modify-gamma",
        "--setting",
        "15",
        "--epochs",
        "5",
        "--permutations",
        "1",
        "--out",
        str(out),
    ]
    assert main(args) == 0 and read_marker(out)["command"] == "salience"
    assert main(args) == 2 and "finished run" in capsys.readouterr().err
    assert main(["reproduce", "mfh-gamma", "--seeds", "1", "--out", str(out)]) == 2
    assert "holds an mmdistill 'salience' run" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, MARKER, "salience.png", "scores.csv"])


def test_data_build_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    precious = tmp_path / "precious.npz"
    precious.write_text("not an archive")
    assert main(["data", "build", "mfeat", "--from-csv", str(tmp_path), "--out", str(precious)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "build", "mfeat", "--from-csv", str(tmp_path), "--out", str(precious), "--overwrite"]) == 2
    assert "not a .npz archive" in capsys.readouterr().err and precious.read_text() == "not an archive"


def test_report_does_not_replace_someone_elses_report(tmp_path, capsys):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "summary.md").write_text("# a sweep\n")
    (folder / "report.html").write_text("<p>mine</p>")
    assert main(["report", str(folder)]) == 2 and "did not write" in capsys.readouterr().err
    assert (folder / "report.html").read_text() == "<p>mine</p>"
    (folder / "report.html").unlink()  # the user moves their file away: mmdistill's own report is then rebuilt freely
    assert main(["report", str(folder)]) == 0 and main(["report", str(folder)]) == 0
    assert "mmdistill report" in (folder / "report.html").read_text()


def test_report_never_replaces_someone_elses_report_md_either(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "summary.md").write_text("# my notes\n")
    (folder / "report.md").write_text("# my own report\n")
    assert main(["report", str(folder)]) == 2 and "report.md" in capsys.readouterr().err
    assert (folder / "report.md").read_text() == "# my own report\n" and not (folder / "report.html").exists()
    assert main(["report", str(folder), "--overwrite"]) == 2  # no option replaces it: the flag that once did is gone
    assert (folder / "report.md").read_text() == "# my own report\n"


@pytest.mark.parametrize("levels", [["2"], ["-1"], ["nan"]])
def test_evaluate_noise_levels_outside_0_1_are_refused(tmp_path, capsys, levels):
    assert main(["evaluate", str(tmp_path), "--noise", "--levels", *levels]) == 2
    assert "--levels: must be a number in [0, 1]" in capsys.readouterr().err


def test_evaluate_noise_levels_are_bounded_in_number_before_the_folder_is_read(tmp_path, capsys):
    levels = [str(i / 100) for i in range(22)]  # 22 levels: one past the bound
    assert main(["evaluate", str(tmp_path / "absent"), "--noise", "--levels", *levels]) == 2
    assert "--levels: at most 21 noise levels, got 22" in capsys.readouterr().err


def test_evaluate_on_a_half_finished_run_names_the_missing_models(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config(epochs=1)), "--out", str(run), "--quiet", "--seeds", "2"]) == 0
    (run / "metrics.json").unlink()
    for part in ("student", "nokd"):  # seed 1 stopped after its teacher
        (run / "seed_1" / part / "student.safetensors").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["missing_models"] == ["seed_1/student", "seed_1/nokd"]
    assert "seed_1/teacher" in result["metrics"] and "seed_0/nokd" in result["metrics"]
    assert "not finished: no saved model for seed_1/student, seed_1/nokd" in out.err
    assert os.path.isdir(run)


@pytest.mark.parametrize(
    "argv,option",
    [
        (["reproduce", "mfh-gamma", "--first-seed", "-1"], "--first-seed"),
        (["reproduce", "mfh-gamma", "--seeds", "2", "--first-seed", str(2**32 - 1)], "--first-seed"),
        (["reproduce", "mfh-removal", "--dataset", "venn", "--keep", "0"], "--keep"),
        (["reproduce", "mfh-removal", "--dataset", "venn", "--lr", "nan"], "--lr"),
        (["salience", "--dataset", "venn", "--lr", "-1"], "--lr"),
        (["salience", "--dataset", "venn", "--permutations", "0"], "--permutations"),
        (["salience", "--dataset", "venn", "--seed", str(2**64)], "--seed"),
    ],
)
def test_bad_option_values_are_named_before_anything_runs(tmp_path, capsys, argv, option):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_python_distill_never_writes_into_a_foreign_folder(tmp_path, toy_splits):
    """distill(out_dir=...) from Python: a folder with someone else's files is refused, nothing touched; its own
    folder (marked at creation) may be replaced on request (overwrite=True)."""
    from mmdistill.config import TrainerConfig
    from mmdistill.engine.api import distill
    from mmdistill.errors import OutputExistsError
    from mmdistill.models import ModelConfig, build_model

    def student():
        return build_model(ModelConfig(modalities=["b"]), toy_splits.train.specs(), toy_splits.num_classes)

    trainer = TrainerConfig(epochs=1, batch_size=64, num_threads=1)
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "metrics.csv").write_text("my own spreadsheet\n")
    (mine / "thesis.tex").write_text("x")
    with pytest.raises(OutputExistsError, match="thesis.tex"):
        distill(student(), None, toy_splits, mine, method="supervised", trainer=trainer)
    assert (mine / "metrics.csv").read_text() == "my own spreadsheet\n" and sorted(p.name for p in mine.iterdir()) == [
        "metrics.csv",
        "thesis.tex",
    ]
    ours = tmp_path / "runs" / "teacher"
    distill(student(), None, toy_splits, ours, method="supervised", trainer=trainer)
    assert (ours / ".mmdistill-run.json").is_file() and (ours / "student.safetensors").is_file()
    distill(student(), None, toy_splits, ours, method="supervised", trainer=trainer, overwrite=True)  # replaced


def test_python_distill_checks_the_machine_before_making_a_folder(tmp_path, toy_splits):
    from mmdistill.config import TrainerConfig
    from mmdistill.engine.api import distill
    from mmdistill.errors import ConfigError
    from mmdistill.models import ModelConfig, build_model

    student = build_model(ModelConfig(modalities=["b"]), toy_splits.train.specs(), toy_splits.num_classes)
    with pytest.raises(ConfigError, match="trainer.devices"):
        distill(student, None, toy_splits, tmp_path / "x", method="supervised", trainer=TrainerConfig(devices=1000))
    assert not (tmp_path / "x").exists()
