"""The README's Python example runs as written (with fewer epochs and a temp folder) and repeats exactly."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace("epochs=15", "epochs=2"), "README.md", "exec"), namespace)
    assert set(namespace["result"].test) >= {"accuracy", "f1_macro"}
    assert (tmp_path / "runs" / "kd" / "student.safetensors").is_file()


@pytest.mark.slow  # two fresh interpreters: each imports torch and torchmetrics
def test_readme_python_example_repeats_exactly_in_fresh_processes(tmp_path):
    """Run twice, each in a fresh interpreter (its own random initial state), the example gives identical weights."""
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    code = code.replace("epochs=15", "epochs=1").replace(
        'build_splits("toy-two-modality")', 'build_splits("toy-two-modality", {"n": 300})'
    )
    env = {**cli_env(), "MMDISTILL_CACHE": str(tmp_path / "cache")}  # one cache, as on a user's machine
    weights = []
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path / run, env=env, check=True, capture_output=True)
        weights.append([(tmp_path / run / "runs" / m / "student.safetensors").read_bytes() for m in ("teacher", "kd")])
    assert weights[0] == weights[1]


def test_readme_opens_with_the_two_commands_ci_runs():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)```", text, re.S)[0].strip().splitlines()
    test_command = commands[1].split("#")[0].strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci, "`.ci/run` must call the README's test command"
