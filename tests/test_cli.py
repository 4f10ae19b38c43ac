import json
import subprocess
import sys

import pytest
from conftest import cli, cli_env

from mmdistill.cli import COMMAND_MODULES, build_parser, main


@pytest.mark.parametrize("command", [m.rsplit(".", 1)[1] for m in COMMAND_MODULES])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: mmdistill" in capsys.readouterr().out


def test_train_then_evaluate(tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny_config(epochs=2)), "--out", str(out), "--quiet", "--seeds", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1] and metrics["summary"]["student.accuracy"]["n"] == 2
    assert (out / "config.yaml").is_file() and (out / "summary.md").is_file()
    for seed in (0, 1):
        for part in ("teacher", "student", "nokd"):
            assert (out / f"seed_{seed}" / part / "student.safetensors").is_file()
            assert (out / f"seed_{seed}" / part / "metrics.csv").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    for seed, run in zip((0, 1), metrics["runs"]):
        assert evaluated[f"seed_{seed}/student"]["accuracy"] == pytest.approx(run["student"]["accuracy"], abs=1e-6)

    assert main(["evaluate", str(out), "--missing", "--noise", "--levels", "0", "1", "--json"]) == 0
    robust = json.loads(capsys.readouterr().out)
    teacher_rows = {r["present"]: r for r in robust["missing"] if r["model"] == "seed_0/teacher"}
    assert set(teacher_rows) == {"a+b", "a", "b"}
    assert teacher_rows["a+b"]["accuracy"] == pytest.approx(evaluated["seed_0/teacher"]["accuracy"], abs=1e-6)
    dropped = [
        r for r in robust["noise"] if r["model"] == "seed_0/student" and r["kind"] == "dropout" and r["level"] == 1.0
    ]
    assert dropped[0]["accuracy"] == pytest.approx(25.0, abs=5.0), (  # percent
        "b zeroed out: a constant prediction on 4 balanced classes"
    )
    assert (out / "robustness" / "missing.csv").is_file() and (
        out / "robustness" / "noise_seed_0_student.png"
    ).is_file()


def test_cli_errors_exit_nonzero_with_message(tiny_config, tmp_path):
    proc = subprocess.run(
        cli("train", str(tiny_config()), "trainer.epohcs=2", "--out", str(tmp_path / "x")),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "trainer.epohcs: unknown key; valid keys: epochs" in proc.stderr
    assert not (tmp_path / "x").exists(), "a config error must leave no output behind"


def test_help_and_argument_errors_do_not_import_torch():
    """`mmdistill --help` and argparse errors stay fast: no command module imports torch when the parser is built."""
    code = (
        "import sys\nfrom mmdistill.cli import main\n"
        "for argv in (['--help'], ['train'], ['reproduce', '--help'], ['salience', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'lightning_fabric', 'torchmetrics') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
