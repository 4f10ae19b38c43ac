"""Registries load only their own built-ins: a look-up imports the one module that fills the registry."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import cli_env

from mmdistill.errors import ConfigError
from mmdistill.registry import Registry, import_modules

# What METHODS.names() must not pull in: the study code, the advisor, and the layers above the methods.
NOT_FOR_METHODS = (
    "mmdistill.mfh",
    "mmdistill.studies",
    "mmdistill.advisor",
    "mmdistill.evaluation",
    "mmdistill.engine",
    "mmdistill.commands",
    "mmdistill.cli",
)


def loaded_after(code: str) -> set[str]:
    """The mmdistill modules a fresh interpreter has loaded after running ``code``."""
    script = code + "\nimport sys\nprint(' '.join(m for m in sys.modules if m.startswith('mmdistill')))\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], env=cli_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(proc.stdout.split())


def test_each_registry_imports_only_its_own_builtins():
    mods = loaded_after(
        "from mmdistill.registry import MASKERS, ENCODERS\n"
        "assert 'attention' in MASKERS.names()\n"
        "assert 'lenet' in ENCODERS.names()\n"
    )
    assert "mmdistill.masking" in mods and "mmdistill.models.encoders" in mods
    assert not {m for m in mods if m.startswith(("mmdistill.methods", "mmdistill.data", "mmdistill.mfh"))}, mods


def test_method_names_import_the_methods_and_no_study_code():
    mods = loaded_after("from mmdistill.registry import METHODS\nassert 'kd' in METHODS.names()")
    assert "mmdistill.methods.kd" in mods
    assert not {m for m in mods if m.startswith(NOT_FOR_METHODS)}, mods


def test_a_registry_names_its_builtins_module_and_its_errors_name_the_key():
    reg: Registry = Registry("widget", "widget.kind", "mmdistill.masking")
    assert reg.names() == []  # mmdistill.masking fills MASKERS, not this one
    reg.register("round")(object)
    with pytest.raises(ConfigError, match=r"^widget\.kind: unknown widget 'square'; known: round$"):
        reg.get("square")
    with pytest.raises(ConfigError, match=r"^parts\.kind: unknown widget"):
        reg.get("square", "parts.kind")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("round")(int)
    empty: Registry = Registry("gadget", "gadget.name")
    with pytest.raises(ConfigError, match=r"known: none registered \(modules listed under the config's 'imports'"):
        empty.get("x")


def test_imports_that_fail_name_the_module(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('needs a GPU library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ConfigError,
        match=r"^imports\[1\]: importing module 'broken_plugin' failed: RuntimeError: "
        r"needs a GPU library",
    ):
        import_modules(["json", "broken_plugin"])
    with pytest.raises(ConfigError, match=r"^imports\[0\]: expected a module name"):
        import_modules([3])
    with pytest.raises(ConfigError, match=r"^imports: expected a list of module names"):
        import_modules("json")
