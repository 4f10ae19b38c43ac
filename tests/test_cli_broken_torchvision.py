"""A torchvision built for another torch breaks torchmetrics' import ("operator torchvision::nms does not exist"):
one line saying so and what to do, from the CLI (exit 1) and from Python (MachineError). Simulated by making the
import of torchmetrics raise torchvision's error; nothing is installed."""

import builtins
from importlib import metadata

import pytest
import torch

from mmdistill.cli import main
from mmdistill.errors import MachineError

TORCHVISION_SAYS = "operator torchvision::nms does not exist"


@pytest.fixture
def break_torchvision(monkeypatch):
    """Call it to make every later ``import torchmetrics`` fail the way a mismatched torchvision makes it fail."""
    from mmdistill.engine import metrics

    real_import = builtins.__import__

    def importing(name, *args, **kwargs):
        if name == "torchmetrics" or name.startswith("torchmetrics."):
            raise RuntimeError(TORCHVISION_SAYS)
        return real_import(name, *args, **kwargs)

    def apply() -> None:
        metrics._reusable.cache_clear()  # metric collections built earlier in this process would hide the import
        monkeypatch.setattr(builtins, "__import__", importing)

    yield apply
    monkeypatch.undo()
    metrics._reusable.cache_clear()


def _says_what_to_do(message: str) -> None:
    assert TORCHVISION_SAYS in message and "pip uninstall torchvision" in message
    assert f"torch {metadata.version('torch')}" in message


def test_a_classification_run_in_one_process_does_not_need_torchmetrics(tiny_config, tmp_path, break_torchvision):
    break_torchvision()
    assert main(["train", str(tiny_config(epochs=1)), "--out", str(tmp_path / "run"), "--quiet", "--no-baseline"]) == 0


def test_the_first_evaluation_names_the_mismatched_torchvision_in_one_line(
    tiny_config, tmp_path, capsys, break_torchvision, monkeypatch
):
    monkeypatch.setattr("mmdistill.tasks.classification.counted_here", lambda: False)  # torchmetrics, as under DDP
    break_torchvision()
    assert main(["train", str(tiny_config(epochs=1)), "--out", str(tmp_path / "run"), "--quiet", "--no-baseline"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mmdistill train: error: ") and err.count("\n") == 1 and "Traceback" not in err
    _says_what_to_do(err)


class _Model(torch.nn.Module):
    modalities = ("x",)

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(2, 2)

    def forward(self, batch):
        return self.head(batch["x"])


def test_the_python_api_raises_a_machine_error_naming_torchvision(break_torchvision, monkeypatch):
    from mmdistill.engine.metrics import evaluate

    monkeypatch.setattr("mmdistill.tasks.classification.counted_here", lambda: False)
    break_torchvision()
    batches = [{"x": torch.zeros(4, 2), "label": torch.zeros(4, dtype=torch.long)}]
    with pytest.raises(MachineError) as caught:
        evaluate(_Model(), batches, 2)
    _says_what_to_do(str(caught.value))
