"""MultiBench's AV-MNIST models (lenet encoder, YAML configs) and `reproduce mfh-table1` on tiny data."""

from __future__ import annotations

import csv
from importlib import resources

import pytest
import torch
from test_avmnist_build import write_fsdd, write_mnist

from mmdistill.batch import ModalitySpec
from mmdistill.cli import main
from mmdistill.config import load_config
from mmdistill.errors import ConfigError
from mmdistill.models.encoders import EncoderConfig, build_encoder
from mmdistill.models.multimodal import build_model

torch.set_num_threads(1)
CONFIGS = resources.files("mmdistill") / "configs"


def test_lenet_matches_multibench_feature_sizes():
    image = build_encoder((1, 28, 28), EncoderConfig(type="lenet", channels=[6, 12, 24, 48]))
    audio = build_encoder((112, 112), EncoderConfig(type="lenet", channels=[6, 12, 24, 48, 96, 192]))
    assert (image.out_dim, audio.out_dim) == (
        48,
        192,
    )  # MultiBench: MLP(channels * 8) and MLP(channels * 32), channels = 6
    assert image(torch.randn(3, 1, 28, 28)).shape == (3, 48)
    assert audio(torch.randn(2, 112, 112)).shape == (2, 192)
    convs = [m for m in audio.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5)] + [(3, 3)] * 5 and all(c.bias is None for c in convs)
    with pytest.raises(ConfigError, match="below 1x1"):
        build_encoder((1, 28, 28), EncoderConfig(type="lenet", channels=[6, 12, 24, 48, 96]))


@pytest.mark.parametrize(
    "name",
    [
        "avmnist_late_fusion",
        "avmnist_image",
        "avmnist_audio",
        "avmnist_kd_av_teacher",
        "avmnist_kd_image_to_audio",
        "avmnist_kd_audio_to_image",
    ],
)
def test_avmnist_configs_build_models(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    specs = [ModalitySpec("image", (1, 28, 28)), ModalitySpec("audio", (1, 112, 112))]
    batch = {"image": torch.randn(2, 1, 28, 28), "audio": torch.randn(2, 1, 112, 112)}
    for part in (cfg.student, cfg.teacher):
        if part is not None:
            assert build_model(part.model, specs, 10).eval()(batch).shape == (2, 10)
    assert cfg.trainer.optimizer.name == "sgd" and cfg.trainer.batch_size == 40


def test_reproduce_table1_builds_data_and_writes_paired_table(tmp_path, capsys):
    write_mnist(tmp_path / "raw" / "mnist", n_train=80, n_test=20)
    write_fsdd(tmp_path / "raw" / "fsdd" / "recordings")
    out = tmp_path / "t1"
    assert (
        main(
            [
                "reproduce",
                "mfh-table1",
                "--data-root",
                str(tmp_path / "raw"),
                "--seeds",
                "2",
                "--train-size",
                "20",
                "--teacher-factor",
                "2",
                "--epochs",
                "1",
                "--teacher-epochs",
                "1",
                "--val-size",
                "10",
                "--test-size",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "avmnist" / "build.json").is_file() and (out / "table1.png").is_file()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["model"], r["seed"], r["train_rows"]) for r in rows] == [
        ("audio_teacher", "0", "40"),
        ("av_teacher", "0", "40"),
        ("nokd", "0", "20"),
        ("kd_audio", "0", "20"),
        ("kd_av", "0", "20"),
        ("nokd", "1", "20"),
        ("kd_audio", "1", "20"),
        ("kd_av", "1", "20"),
    ]
    summary = (out / "summary.md").read_text()
    assert "| no KD | - |" in summary and "68.36" in summary and "91.61" in summary and "kd_av - kd_audio" in summary
    # a controlled variation loads the same teachers (their recorded accuracy comes along) and trains only students
    assert (
        main(
            [
                "reproduce",
                "mfh-table1",
                "--data",
                str(out / "avmnist"),
                "--teachers",
                str(out),
                "--seeds",
                "1",
                "--train-size",
                "20",
                "--teacher-factor",
                "2",
                "--epochs",
                "1",
                "--val-size",
                "10",
                "--test-size",
                "20",
                "--temperature",
                "1",
                "--out",
                str(tmp_path / "t1_T1"),
            ]
        )
        == 0
    )
    again = list(csv.DictReader((tmp_path / "t1_T1" / "results.csv").open()))
    assert [r["test_acc"] for r in again[:2]] == [r["test_acc"] for r in rows[:2]]
    assert not (tmp_path / "t1_T1" / "runs" / "av_teacher").exists()
    # --overwrite replaces a finished run (its data, runs and cache folders are recognised as ours)
    assert (
        main(
            [
                "reproduce",
                "mfh-table1",
                "--data",
                str(out / "avmnist"),
                "--teachers",
                str(out),
                "--seeds",
                "1",
                "--train-size",
                "20",
                "--teacher-factor",
                "2",
                "--epochs",
                "1",
                "--val-size",
                "10",
                "--test-size",
                "20",
                "--temperature",
                "1",
                "--out",
                str(tmp_path / "t1_T1"),
                "--overwrite",
            ]
        )
        == 0
    )
    # without --data-root and no build it is a clear error
    assert main(["reproduce", "mfh-table1", "--out", str(tmp_path / "t2"), "--seeds", "1"]) == 2
    assert "give --data-root" in capsys.readouterr().err


def test_demo_avmnist_section_builds_data_and_writes_table(tmp_path):
    from mmdistill.commands import demo

    write_mnist(tmp_path / "raw" / "mnist", n_train=60, n_test=20)
    write_fsdd(tmp_path / "raw" / "fsdd" / "recordings")
    section = demo._avmnist(tmp_path / "avmnist", 1, True, tmp_path / "raw")
    assert "mfh-table1" in section["command"] and section["title"].startswith("MFH Table 1 on AV-MNIST")
    assert (tmp_path / "avmnist" / "avmnist" / "build.json").is_file()
    assert len(list(csv.DictReader((tmp_path / "avmnist" / "results.csv").open()))) == 5
    with pytest.raises(ConfigError, match="expected mnist/ and fsdd/recordings/"):
        demo.run(demo_args(tmp_path))
    assert not (tmp_path / "demo").exists()


def demo_args(tmp_path):
    import argparse

    return argparse.Namespace(
        out=tmp_path / "demo", seeds=1, overwrite=False, quiet=True, data_root=tmp_path / "nothing"
    )


def test_removal_on_avmnist_scores_penultimate_channels_and_keeps_a_quarter(tmp_path):
    from mmdistill.data.builders.avmnist_build import build_av_mnist

    write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    write_fsdd(tmp_path / "fsdd")
    build_av_mnist(tmp_path / "mnist", tmp_path / "fsdd", tmp_path / "data", snr_db=None)
    assert (
        main(
            [
                "reproduce",
                "mfh-removal-avmnist",
                "--data",
                str(tmp_path / "data"),
                "--seeds",
                "1",
                "--train-size",
                "20",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "rm"),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((tmp_path / "rm" / "results.csv").open()))
    assert [(r["mode"], r["kept"]) for r in rows] == [
        ("nokd", "100"),
        ("regular", "100"),
        ("general", "25"),
        ("random", "25"),
        ("specific", "25"),
    ]
    scores = [float(line.split(",")[1]) for line in (tmp_path / "rm" / "scores.csv").read_text().splitlines()[1:]]
    assert len(scores) == 100 and min(scores) == 0.0 and max(scores) == 1.0
    assert "general > random > specific" in (tmp_path / "rm" / "summary.md").read_text()
    # same seed and data, only the teacher's kept channels differ: the hook must reach the KD students
    from mmdistill.engine.system.checkpoint import load_tensors

    weights = {
        m: load_tensors(tmp_path / "rm" / "runs" / m / "seed_0" / "model" / "student.safetensors")[0]
        for m in ("regular", "general")
    }
    assert any(not torch.equal(weights["regular"][k], weights["general"][k]) for k in weights["regular"])


def test_msd_study_runs_on_avmnist_with_lenet_models_and_refuses_without_data(tmp_path, capsys):
    """`reproduce msd --dataset avmnist --data DIR` trains the LeNet teacher and the six students."""
    from mmdistill.data.builders.avmnist_build import build_av_mnist

    torch.set_num_threads(1)
    write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    write_fsdd(tmp_path / "fsdd")
    build_av_mnist(tmp_path / "mnist", tmp_path / "fsdd", tmp_path / "data", snr_db=None)
    out = tmp_path / "msd"
    argv = ["reproduce", "msd", "--dataset", "avmnist", "--data", str(tmp_path / "data"), "--seeds", "1"]
    assert main([*argv, "--epochs", "1", "--lr", "0.05", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["method"] for r in rows) == sorted(
        ["nokd", "kd", "msd-uniform", "msd-population", "msd-instance", "msd-learned"]
    )
    assert {r["dataset"] for r in rows} == {"avmnist"} and "avmnist" in (out / "summary.md").read_text()
    weights = (out / "runs" / "avmnist" / "seed_0" / "teacher" / "student.safetensors").read_bytes()
    assert b"encoders.audio" in weights and b"encoders.image" in weights  # the LeNet late fusion
    log = list(csv.DictReader((out / "runs" / "avmnist" / "seed_0" / "msd-uniform" / "metrics.csv").open()))
    assert [float(r["lr"]) for r in log] == [0.05]  # --lr reaches every model (default: MultiBench's 0.1)
    assert main(["reproduce", "msd", "--dataset", "avmnist", "--seeds", "1", "--out", str(tmp_path / "no")]) == 2
    assert "give --data DIR" in capsys.readouterr().err


def test_baselines_study_runs_on_avmnist_with_the_table1_pair_and_attention_transfer(tmp_path, capsys):
    """`reproduce baselines --dataset avmnist --data DIR`: every method plus AT on the audio LeNets."""
    from mmdistill.data.builders.avmnist_build import build_av_mnist
    from mmdistill.studies.baselines_study import METHODS

    torch.set_num_threads(1)
    write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    write_fsdd(tmp_path / "fsdd")
    build_av_mnist(tmp_path / "mnist", tmp_path / "fsdd", tmp_path / "data", snr_db=None)
    out = tmp_path / "bl"
    argv = ["reproduce", "baselines", "--dataset", "avmnist", "--data", str(tmp_path / "data"), "--seeds", "1"]
    assert main([*argv, "--epochs", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["method"] for r in rows} == set(METHODS) | {"at"}
    run = out / "runs" / "avmnist" / "seed_0"
    teacher = (run / "teacher" / "student.safetensors").read_bytes()
    assert b"encoders.audio" in teacher and b"encoders.image" in teacher  # MultiBench's late fusion
    student = (run / "at" / "student.safetensors").read_bytes()
    assert b"encoders.audio" in student and b"encoders.image" not in student  # the audio student
    # MFH modality-general KD reads Algorithm 1's scores of the teacher's head.0 (100 channels) from one file a seed
    scores = list(csv.DictReader((run / "salience.csv").open()))
    assert [int(r["channel"]) for r in scores] == list(range(100))
    assert len({r["score"] for r in scores}) > 50
    summary = (out / "summary.md").read_text()
    assert "| at | — |" in summary and "MFH Table 1 pair" in summary
    assert main(["reproduce", "baselines", "--dataset", "avmnist", "--seeds", "1", "--out", str(tmp_path / "no")]) == 2
    assert "give --data DIR" in capsys.readouterr().err
    no = [
        "reproduce",
        "baselines",
        "--dataset",
        "mfeat",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "n"),
    ]
    assert main(no) == 2
    assert "only read for --dataset avmnist" in capsys.readouterr().err


def test_table1_summary_of_one_seed_claims_no_interval():
    """One seed has no confidence interval: the summary says so instead of printing NaN bounds or a verdict."""
    from mmdistill.studies.mfh_table1 import Table1Result, summarize_table1, summary_markdown

    accs = {"audio_teacher": 77.0, "av_teacher": 90.0, "nokd": 50.0, "kd_audio": 56.0, "kd_av": 60.0}
    rows = [{"model": m, "seed": 0, "test_acc": a} for m, a in accs.items()]
    protocol = {
        "seeds": [0], "train_size": 2000, "epochs": 3, "teacher_rows": 6000, "teacher_epochs": 3,
        "teachers_from": None, "val_size": 500, "test_size": 2000, "temperature": 4.0, "lam": 0.5,
    }  # fmt: skip
    text = summary_markdown(Table1Result(rows, protocol, 1.0, summarize_table1(rows)), "cmd")
    assert "nan" not in text.lower() and "CI above 0" not in text
    assert "- kd_av - kd_audio: +4.00 (one seed: no interval)" in text
    assert "its student is +4.00 points from the audio teacher's student on one seed (no interval, no verdict)" in text
