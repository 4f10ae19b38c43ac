"""The README's Python example runs as written (with fewer epochs and a temp folder)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace("epochs=15", "epochs=2"), "README.md", "exec"), namespace)
    assert set(namespace["result"].test) >= {"accuracy", "f1_macro"}
    assert (tmp_path / "runs" / "kd" / "student.safetensors").is_file()


def test_readme_opens_with_the_two_commands_ci_runs():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)```", text, re.S)[0].strip().splitlines()
    test_command = commands[1].split("#")[0].strip()
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci, "`.ci/run` must call the README's test command"
