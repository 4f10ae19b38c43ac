"""A dataset plugin (or any user code the CLI runs) that calls ``sys.exit(0)`` is an error: exit 2, one line naming
it, nothing written. (It made ``train`` exit 0 having written nothing.)"""

import textwrap

from mmdistill.cli import main
from mmdistill.registry import DATASETS

PLUGIN = """
import sys

from mmdistill.registry import DATASETS


@DATASETS.register("cli-exit-data")
def exiting(seed: int = 0):
    sys.exit(0)
"""

CONFIG = """
seed: 0
imports: [cli_exit_plugin]
data: {name: cli-exit-data}
student:
  model: {modalities: [b], encoder: {type: mlp, hidden: [16], out_dim: 8}}
method: {name: supervised}
trainer: {epochs: 1, batch_size: 32, num_threads: 1}
"""


def test_a_plugin_calling_sys_exit_0_fails_train_with_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "cli_exit_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "run.yaml").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    try:
        assert main(["train", str(tmp_path / "run.yaml"), "--out", str(out), "--quiet"]) == 2
    finally:
        DATASETS._entries.pop("cli-exit-data", None)
    err = capsys.readouterr().err
    assert err.startswith("mmdistill train: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "SystemExit: 0 (at cli_exit_plugin.py:9)" in err and "sys.exit" in err
    assert not out.exists()
