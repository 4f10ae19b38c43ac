"""The user's own code fails: a dataset, transform or model factory that raises anything, fails at import (a syntax
error, an ImportError inside the module, ``sys.exit``) or returns the wrong type; a dataset whose ``len`` raises; a
DataLoader worker that exits or segfaults. Each is one line naming the key and the factory or file, the original error
and what to do, from ``mmdistill train`` (exit 2, no folder left) and from Python (an mmdistill error);
``MMDISTILL_DEBUG=1`` keeps the user's traceback."""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
import textwrap
import uuid

import pytest
from conftest import cli, cli_env

from mmdistill.config import DataConfig, TrainerConfig
from mmdistill.data.contracts.item_dataset import load_data
from mmdistill.errors import ConfigError, DataError, MMDistillError
from mmdistill.models import CustomModelConfig, build_model

# A user's module: a dataset of dict items, a factory of train/val/test, a transform and a model factory. Each case
# below replaces one piece with a broken one.
GOOD = {
    "header": "import os, signal, sys\nimport torch\nfrom torch import nn\nfrom torch.utils.data import Dataset\n",
    "getitem": "return {'a': self.x[i], 'label': self.y[i]}",
    "len": "return len(self.y)",
    "splits": "return {'train': Items(24, 0), 'val': Items(12, 1), 'test': Items(12, 2)}",
    "transform": "return Jitter()",
    "model": "return Net(specs, num_classes)",
}
TEMPLATE = """\
{header}

class Items(Dataset):
    num_classes = 3
    modalities = ("a",)

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 4, generator=g) + self.y[:, None].float()

    def __len__(self):
        {len}

    def __getitem__(self, i):
        {getitem}


class Jitter:
    random = False

    def __call__(self, item):
        return item


class Net(nn.Module):
    def __init__(self, specs, num_classes):
        super().__init__()
        self.modalities = ("a",)
        self.body = nn.Linear(4, num_classes)

    def forward(self, batch):
        return self.body(batch["a"])


def splits():
    {splits}


def transform():
    {transform}


def model(specs, num_classes):
    {model}
"""


def user_module(folder, **broken) -> str:
    """Write the user's module with the ``broken`` pieces into ``folder``; its (unique) name."""
    name = f"user_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(TEMPLATE.format(**{**GOOD, **broken}))
    return name


# a module that fails to import is named by the first key that imports it (YAML: the model's factory, when the config
# is validated; Python: the first factory loaded)
IMPORTED = r"(invalid config: )?(data\.dataset|data\.transforms\.train\.factory|student\.model\.factory)"
CASES = {  # case: (the broken piece, the config key named (a regular expression), what the message says)
    "factory-raises": (
        {"splits": "raise RuntimeError('no disk mounted at /data')"},
        "data.dataset",
        r"dataset factory '{m}:splits' raised RuntimeError: no disk mounted at /data \(at {m}\.py:\d+\)",
    ),
    "factory-exits": ({"splits": "sys.exit(0)"}, "data.dataset", r"raised SystemExit"),
    "factory-returns-none": ({"splits": "return None"}, "data.dataset", r"returned a NoneType; expected train, val"),
    "factory-returns-a-string": ({"splits": "return 'train'"}, "data.dataset", r"returned a str; expected train, val"),
    "module-syntax-error": (
        {"header": "import torch\ndef broken(:\n"},
        IMPORTED,
        r"importing module '{m}' failed: SyntaxError: .*\({m}\.py, line 2\); fix the module",
    ),
    "import-inside-fails": (
        {"header": "import no_such_dependency_xyz\n"},
        IMPORTED,
        r"importing module '{m}' failed: ModuleNotFoundError: No module named "
        r"'no_such_dependency_xyz' \(at {m}\.py:1\); fix the import in it",
    ),
    "module-raises-at-import": (
        {"header": "raise ValueError('set DATA_ROOT first')\n"},
        IMPORTED,
        r"importing module '{m}' failed: ValueError: set DATA_ROOT first \(at {m}\.py:1\)",
    ),
    "len-raises": (
        {"len": "raise OSError('index file missing')"},
        "data.dataset",
        r"len\(dataset\) raised OSError: index file missing \(at {m}\.py:\d+\)",
    ),
    "transform-factory-raises": (
        {"transform": "raise KeyError('scale')"},
        "data.transforms.train.factory",
        r"transform factory '{m}:transform' raised KeyError: 'scale'",
    ),
    "transform-factory-returns-none": (
        {"transform": "return None"},
        "data.transforms.train.factory",
        r"returned a NoneType, expected a callable transform",
    ),
    "model-factory-raises": (
        {"model": "raise ValueError('hidden must be even')"},
        "student.model",
        r"factory '{m}:model' raised ValueError: hidden must be even \(at {m}\.py:\d+\)",
    ),
    "model-factory-exits": ({"model": "sys.exit(3)"}, "student.model", r"raised SystemExit: 3"),
    "model-factory-returns-a-dict": ({"model": "return {}"}, "student.model.factory", r"returned a dict, expected"),
}


def config_yaml(module: str) -> str:
    return textwrap.dedent(f"""\
        data:
          dataset: "{module}:splits"
          transforms: {{train: {{factory: "{module}:transform"}}}}
        student: {{model: {{factory: "{module}:model"}}}}
        method: {{name: supervised}}
        trainer: {{epochs: 1, batch_size: 8, num_threads: 1}}
        """)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_cli_names_the_users_failing_code_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, capfd, case):
    """``mmdistill train`` run in this process (``cli.main``, as the console script calls it)."""
    from mmdistill.cli import main

    broken, key, message = CASES[case]
    module = user_module(tmp_path, **broken)
    (tmp_path / "run.yaml").write_text(config_yaml(module))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code = main(["train", "run.yaml", "--out", "out"])
    stderr = capfd.readouterr().err
    assert code == 2, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert re.match(f"mmdistill train: error: (?:{key}): ", lines[0]), lines[0]
    assert re.search(message.format(m=module), lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def load(module: str):
    data = load_data(DataConfig(dataset=f"{module}:splits", transforms={"train": {"factory": f"{module}:transform"}}))
    specs, n = data.train.specs(), data.num_classes
    return build_model(CustomModelConfig(factory=f"{module}:model"), specs, n, key="student.model")


@pytest.mark.parametrize("case", sorted(CASES))
def test_python_raises_an_mmdistill_error_naming_the_users_failing_code(tmp_path, monkeypatch, case):
    broken, key, message = CASES[case]
    monkeypatch.syspath_prepend(str(tmp_path))
    module = user_module(tmp_path, **broken)
    with pytest.raises(MMDistillError) as err:
        load(module)
    assert re.match(f"(?:{key}): ", str(err.value)), str(err.value)
    assert re.search(message.format(m=module), str(err.value)), str(err.value)
    assert err.value.__cause__ is None, "one line: the user's traceback only with MMDISTILL_DEBUG=1"


def test_mmdistill_debug_keeps_the_users_traceback(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MMDISTILL_DEBUG", "1")
    module = user_module(tmp_path, splits="raise RuntimeError('no disk mounted at /data')")
    with pytest.raises(ConfigError) as err:
        load(module)
    assert isinstance(err.value.__cause__, RuntimeError), "the original exception is the cause, its traceback shown"


IN_A_WORKER = "torch.utils.data.get_worker_info() is not None and i == 5"  # item 5, read by a worker process
WORKER_DEATHS = {
    "exits": f"os._exit(1) if {IN_A_WORKER} else None\n        return {{'a': self.x[i], 'label': self.y[i]}}",
    "segfaults": f"os.kill(os.getpid(), signal.SIGSEGV) if {IN_A_WORKER} else None\n        "
    "return {'a': self.x[i], 'label': self.y[i]}",
}


@pytest.mark.parametrize("how", sorted(WORKER_DEATHS))
def test_a_worker_that_dies_names_the_split_and_the_item_it_was_reading(tmp_path, monkeypatch, how):
    from torch import nn

    from mmdistill.engine.api import distill

    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(user_module(tmp_path, getitem=WORKER_DEATHS[how]))
    net = module.Net(None, 3)
    data = {"train": module.Items(24, 0), "val": module.Items(12, 1), "test": module.Items(12, 2)}
    trainer = TrainerConfig(epochs=1, batch_size=8, num_workers=2)
    ended = {"exits": "exited with code 1", "segfaults": r"was killed by signal SIGSEGV \(Segmentation fault\)"}[how]
    with pytest.raises(DataError, match=rf"^train: a DataLoader worker {ended} while reading item\(s\) 5\b") as err:
        distill(net, None, **data, out_dir=tmp_path / "out", method="supervised", trainer=trainer)
    assert "\n" not in str(err.value) and isinstance(net, nn.Module)
    assert not multiprocessing.active_children(), "the other workers are stopped"
    assert not (tmp_path / "out" / "student.safetensors").exists()
    assert sys.modules[module.__name__] is module


def test_a_worker_that_blocks_stops_the_run_after_the_timeout_naming_split_and_item(tmp_path, monkeypatch):
    import time

    from mmdistill.engine.api import distill

    monkeypatch.syspath_prepend(str(tmp_path))
    sleeps = f"time.sleep(10**6) if {IN_A_WORKER} else None\n        return {{'a': self.x[i], 'label': self.y[i]}}"
    module = __import__(user_module(tmp_path, header=GOOD["header"] + "import time\n", getitem=sleeps))
    data = {"train": module.Items(24, 0), "val": module.Items(12, 1), "test": module.Items(12, 2)}
    trainer = TrainerConfig(epochs=1, batch_size=8, num_workers=2, worker_timeout_s=2)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"^train: no batch came from the DataLoader workers in 2 s .*item\(s\) 5\b"):
        distill(module.Net(None, 3), None, **data, out_dir=tmp_path / "out", method="supervised", trainer=trainer)
    assert time.monotonic() - start < 30, "the blocked worker is stopped at once, not waited for"
    assert not multiprocessing.active_children(), "the blocked worker is stopped"
    assert not (tmp_path / "out" / "student.safetensors").exists()


def test_the_worker_timeout_is_a_bounded_trainer_setting_that_a_resume_may_change():
    from mmdistill.engine.run_checks import RESUME_MAY_CHANGE

    assert TrainerConfig().worker_timeout_s == 600
    for bad in (0, -1, True, "5", float("inf"), 10**9):
        with pytest.raises(ConfigError, match=r"^trainer\.worker_timeout_s: "):
            TrainerConfig(worker_timeout_s=bad)
    assert "trainer.worker_timeout_s" in RESUME_MAY_CHANGE


def test_a_worker_segfault_from_the_cli_is_one_line_naming_split_and_item(tmp_path):
    crash = f"os.kill(os.getpid(), signal.SIGSEGV) if {IN_A_WORKER} else None\n        "
    module = user_module(tmp_path, getitem=crash + "return {'a': self.x[i], 'label': self.y[i]}")
    (tmp_path / "run.yaml").write_text(
        config_yaml(module).replace("num_threads: 1}", "num_threads: 1, num_workers: 2}").replace("transforms", "#")
    )
    env = cli_env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    proc = subprocess.run(
        cli("train", "run.yaml", "--out", "out"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("mmdistill: ")]  # notes
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert re.match(
        r"mmdistill train: error: train: a DataLoader worker was killed by signal SIGSEGV \(Segmentation fault\) "
        r"while reading item\(s\) 5\b",
        lines[0],
    ), lines[0]


class _Declared:
    """A dataset whose declared attributes (properties) raise."""

    num_classes = 3

    def __len__(self):
        return 4

    def __getitem__(self, i):
        import torch

        return {"a": torch.zeros(2), "label": torch.tensor(i % 3)}

    def fingerprint(self):
        raise PermissionError("cannot stat /data/index.csv")

    @property
    def labels(self):
        raise RuntimeError("labels are computed lazily and failed")


def test_a_dataset_whose_declared_attributes_raise_is_named():
    from mmdistill.data.contracts.item_dataset import ItemDataset

    split = ItemDataset(_Declared(), "train")
    with pytest.raises(ConfigError, match=r"^train: dataset\.fingerprint\(\) raised PermissionError: cannot stat"):
        split.fingerprint()
    with pytest.raises(ConfigError, match=r"^train: dataset\.labels raised RuntimeError: labels are computed"):
        split.labels  # noqa: B018


def test_a_registered_encoder_that_raises_is_named_by_its_key():
    from torch import nn

    from mmdistill.models.encoders import EncoderConfig, build_encoder
    from mmdistill.registry import ENCODERS

    class Fails(nn.Module):
        def __init__(self, shape, cfg):
            raise ValueError(f"shape {shape} is not square")

    ENCODERS.register("fails_to_build")(Fails)
    try:
        with pytest.raises(
            ConfigError,
            match=r"^student\.model\.encoder\.type: encoder 'fails_to_build' raised "
            r"ValueError: shape \(4,\) is not square \(at test_user_code_errors\.py:\d+\)",
        ):
            build_encoder((4,), EncoderConfig(type="fails_to_build"), "student.model.encoder")
    finally:
        ENCODERS._entries.pop("fails_to_build")


@pytest.mark.parametrize("declared", ["three", 0, True, 2.5])
def test_a_declared_class_count_that_is_not_a_positive_integer_is_named(declared):
    from mmdistill.data.contracts.item_dataset import ItemDataset

    dataset = _Declared()
    dataset.num_classes = declared
    with pytest.raises(ConfigError, match=r"^train: dataset\.num_classes: expected an integer in \[1, "):
        ItemDataset(dataset, "train")
