"""Each command or study declares what it writes into its folder; the run-folder code knows none of those names."""

import ast
from pathlib import Path

import pytest

from mmdistill.cli import build_parser
from mmdistill.engine.system import runfolder
from mmdistill.errors import OutputExistsError


def _patterns(layout) -> set[str]:
    names = set()
    for pattern, sub in layout.items():
        names.add(pattern)
        if isinstance(sub, dict):
            names |= _patterns(sub)
    return names


def _code_strings(path: Path) -> list[str]:
    """The string constants of a module's code, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_the_run_folder_code_names_no_output_of_any_command_or_study():
    build_parser()  # imports every command, which declare their layouts
    declared = set().union(*(_patterns(layout) for layout in runfolder.LAYOUTS.values())) - {"*"}
    assert {"metrics.json", "robustness", "scores.csv", "report.html"} <= declared, "the commands declare their outputs"
    strings = _code_strings(Path(runfolder.__file__))
    named = sorted({name for name in declared for s in strings if name in s})
    assert not named, f"engine/system/runfolder.py names outputs of commands or studies: {named}"


def test_a_kind_declared_from_outside_is_claimed_and_overwritten_by_its_own_layout(tmp_path):
    runfolder.register_layout("my-study", {"table.csv": None, "figures": {"*.png": None}})
    out = tmp_path / "study"
    with runfolder.owned(out, "my-study", "table.csv") as folder:
        (folder.path / "figures").mkdir()
        (folder.path / "figures" / "a.png").write_bytes(b"png")
        (folder.path / "table.csv").write_text("x\n1\n")
    with runfolder.owned(out, "my-study", "table.csv", overwrite=True) as folder:
        assert not (folder.path / "figures").exists() and not (folder.path / "table.csv").exists()
        (folder.path / "table.csv").write_text("x\n2\n")
        (folder.path / "notes.txt").write_text("mine")  # not in the layout: someone else's
    with pytest.raises(OutputExistsError, match="notes.txt"):
        runfolder.claim(out, "my-study", "table.csv", overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "table.csv").read_text() == "x\n2\n"


def test_an_analysis_added_to_a_train_run_is_part_of_its_layout():
    build_parser()
    train = runfolder.layout_of("train")
    assert {"robustness", "analysis", "report.html", "seed_*", "config.yaml"} <= set(train)
    assert "results.csv" in runfolder.layout_of("reproduce") and "kd-miniature" in runfolder.layout_of("demo")


def test_the_engine_declares_what_train_and_distill_write_without_the_cli():
    import subprocess
    import sys

    from conftest import cli_env

    probe = (
        "from mmdistill.engine.system import runfolder as r; "
        "print(r.finished_file('train'), r.finished_file('distill'), 'student.safetensors' in r.layout_of('distill'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["metrics.json", "result.json", "True"], out.stderr
