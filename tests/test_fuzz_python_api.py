"""Python API fuzz: ``distill()`` arguments, own-model factories and data factories never end in a traceback.

Hypothesis draws one broken input at a time, on a tiny valid run (two-modality toy data, small reference models, one
epoch):

* a ``distill()`` argument replaced by a wrong type or a bad value (a string for a model, a dict for the trainer,
  ``seed=-1``, NaN, a generator, a folder name that is a file, ...);
* a user's module (dataset factory, transform factory, model factory) with one piece broken: it raises (anything,
  ``SystemExit`` included), fails at import, returns the wrong type, or its items are bad (not a dict, no label, a
  label out of range, NaN, shapes that differ, a string), loaded through ``load_data`` / ``build_model`` and trained
  with ``distill()``.

The promise checked for every case: it finishes (a :class:`RunResult`) or raises one of mmdistill's errors
(:mod:`mmdistill.errors`) whose message names the argument, config key or factory at fault; never another
exception type, never a hang (an alarm fails the case after 60 s), never a file outside ``out_dir`` and the cache
folder (the working directory stays empty). The default suite runs a fixed (derandomized) sample;
``MMDISTILL_FUZZ_EXAMPLES=500`` explores more, at random.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import uuid
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from torch import nn

from mmdistill.config import CacheConfig, DataConfig, MaskingConfig, TrainerConfig
from mmdistill.data import build_splits
from mmdistill.data.contracts.item_dataset import load_data
from mmdistill.engine.api import RunResult, distill
from mmdistill.errors import MMDistillError
from mmdistill.models import CustomModelConfig, ModelConfig, build_model

EXAMPLES = int(os.environ.get("MMDISTILL_FUZZ_EXAMPLES", "0"))
TRAINER = {"epochs": 1, "batch_size": 16, "num_threads": 1}


class Opaque:
    """An object of no type mmdistill knows."""


def _generator():
    yield 1


# Bad values for every argument: wrong types and out-of-range values
ANY_BAD = [None, "x", 3, -1, 2.5, math.nan, True, [1, 2], {"a": 1}, Opaque(), b"\x00", _generator()]
ARGUMENT_VALUES = {
    "student": ANY_BAD + [nn.Linear(4, 4), nn.Identity()],
    "teacher": [v for v in ANY_BAD if v is not None] + [nn.Linear(4, 4)],
    "data": ANY_BAD + [{"train": 1, "val": 2, "test": 3}, (1, 2), ("a", "b", "c")],
    "out_dir": [v for v in ANY_BAD if v is not None] + ["", "\0", "x" * 300, "FILE"],
    "method": ANY_BAD + ["vid", "KD", "kd "],
    "method_params": ANY_BAD + [{"temperature": "4"}, {"temperature": -1}, {"lam": math.inf}, {"nope": 1}],
    "masking": ANY_BAD + [{"strategy": "zeros"}, {"strategy": "blur"}, MaskingConfig(strategy="learned")],
    "trainer": ANY_BAD + [{"epochs": 1}, {"epochs": "x"}],
    "cache": ANY_BAD + [{"enabled": False}],
    "seed": ANY_BAD + [2**64, -(2**40)],
    "resume": ANY_BAD,
    "quiet": ANY_BAD,
    "task": ANY_BAD + ["detection", {"name": "segmentation"}, {"name": "classification", "params": {"x": 1}}],
    "transforms": ANY_BAD + [{"train": 3}, {"nope": lambda item: item}, {"train": lambda item: None}],
    "overwrite": ANY_BAD,
    **{split: ANY_BAD + [[{"a": 1}], [{"a": torch.zeros(4), "label": 0}] * 3] for split in ("train", "val", "test")},
}
# The words a message may use to name the argument at fault (its name, the config section, what it holds)
NAMES = {
    "student": r"student|model|modalit|forward|parameter",
    "teacher": r"teacher|model|modalit|forward",
    "data": r"data|train|split",
    "out_dir": r"out_dir|path|folder|file",
    "method": r"method",
    "method_params": r"method",
    "masking": r"masking",
    "trainer": r"trainer",
    "cache": r"cache",
    "seed": r"seed",
    "resume": r"resume",
    "quiet": r"quiet",
    "task": r"task",
    "transforms": r"transform",
    "overwrite": r"overwrite",
    **{split: rf"{split}|data|item|split" for split in ("train", "val", "test")},
}


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail the case (never hang the suite) when it runs longer than ``seconds``."""

    def stop(signum, frame):
        raise TimeoutError(f"the case ran longer than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def toy():
    data = build_splits("toy-two-modality", {"n": 60, "dim_a": 4, "dim_b": 4})
    specs, n = data.train.specs(), data.num_classes
    small = {"hidden": [8], "out_dim": 4}
    return data, specs, n, small


def valid_arguments(toy, root: Path) -> dict:
    data, specs, n, small = toy
    torch.manual_seed(0)
    return {
        "student": build_model(ModelConfig(modalities=["b"], encoder=small), specs, n),
        "teacher": build_model(ModelConfig(modalities=["a", "b"], encoder=small), specs, n),
        "data": data,
        "out_dir": root / "out",
        "method": "kd",
        "trainer": TrainerConfig(**TRAINER),
        "cache": CacheConfig(dir=root / "cache"),
        "quiet": True,
    }


def check_outcome(run, root: Path, names: str, out_here: str = "") -> str:
    """Run the case; the promise: a result or an mmdistill error naming ``names``, nothing written elsewhere
    (``out_here``: a relative out_dir, the one thing the working directory may hold)."""
    cwd = root / "cwd"
    cwd.mkdir()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with deadline(60):
            try:
                result = run()
            except MMDistillError as err:
                message = str(err)
                note(f"error: {message}")
                assert re.search(names, message, re.IGNORECASE), f"the message names no key ({names}): {message}"
                assert len(message) < 2000 and "Traceback" not in message, message
                outcome = "error"
            else:
                assert isinstance(result, RunResult)
                outcome = "ok"
    finally:
        os.chdir(here)
    written = sorted(p.name for p in cwd.iterdir() if p.name != out_here)
    assert not written, f"files written outside out_dir: {written}"
    outside = {p.name for p in root.iterdir()} - {"out", "cache", "cwd", "FILE", "user"}
    assert not outside, f"files written outside out_dir: {outside}"
    return outcome


@settings(
    max_examples=EXAMPLES or 25,
    derandomize=not EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(argument=st.sampled_from(sorted(ARGUMENT_VALUES)), data=st.data())
def test_distill_arguments_end_in_a_result_or_an_error_naming_the_argument(tmp_path_factory, toy, argument, data):
    value = data.draw(st.sampled_from(ARGUMENT_VALUES[argument]), label=argument)
    root = tmp_path_factory.mktemp("case")
    (root / "FILE").write_text("a file, not a folder")
    kwargs = valid_arguments(toy, root)
    if argument in ("train", "val", "test"):  # the splits given one by one instead of data=
        splits = kwargs.pop("data")
        kwargs.update(train=splits.train, val=splits.val, test=splits.test)
    kwargs[argument] = root / "FILE" if isinstance(value, str) and value == "FILE" else value
    if argument == "teacher" and isinstance(value, nn.Module):
        kwargs["method"] = "kd"
    note(f"distill({argument}={value!r:.200})")
    relative = argument == "out_dir" and isinstance(value, str) and value and not os.path.isabs(value)
    check_outcome(lambda: distill(**kwargs), root, NAMES[argument], Path(value).parts[0] if relative else "")


# A user's module, as in tests/test_user_code_errors.py: a dataset of dict items, a factory of its splits, a
# transform factory and a model factory; each case breaks one piece.
MODULE = """\
import math, os, sys
import torch
from torch import nn
from torch.utils.data import Dataset
{header}

class Items(Dataset):
    num_classes = 3
    modalities = ("a",)
    {declared}

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 4, generator=g) + self.y[:, None].float()

    def __len__(self):
        {len}

    def __getitem__(self, i):
        item = {{"a": self.x[i], "label": self.y[i]}}
        {item}


class Keep:
    random = False

    def __call__(self, item):
        {call}


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.modalities = ("a",)
        self.body = nn.Linear(4, num_classes)

    def forward(self, batch):
        {forward}


def splits():
    {splits}


def transform():
    {transform}


def model(num_classes):
    {model}
"""
GOOD = {
    "header": "",
    "declared": "",
    "len": "return len(self.y)",
    "item": "return item",
    "call": "return item",
    "forward": 'return self.body(batch["a"])',
    "splits": 'return {"train": Items(24, 0), "val": Items(12, 1), "test": Items(12, 2)}',
    "transform": "return Keep()",
    "model": "return Net(num_classes)",
}
BROKEN = {  # piece -> broken versions (the factory or part the message must name)
    "header": ["import no_such_dependency_xyz", "raise RuntimeError('set DATA_ROOT')", "def broken(:", "sys.exit(1)"],
    "len": ["raise OSError('index missing')", "return -1", "return 'ten'", "return 0"],
    "item": [
        "return [item['a'], item['label']]",
        "return {'a': item['a']}",
        "return {**item, 'label': torch.tensor(7)}",
        "return {**item, 'a': item['a'] * math.nan}",
        "return {**item, 'a': torch.zeros(i % 3 + 1)}",
        "return {**item, 'a': 'text'}",
        "return {**item, 'label': torch.tensor(0.5)}",
        "raise KeyError(i)",
        "raise SystemExit(0)",
        "return None",
        "return {**item, 'b': item['a']} if i else item",
        "return {**item, 'a': item['a'].numpy()}",
        "return {**item, 'label': int(item['label'])}",
        "return {**item, 'label': -item['label'] - 1}",
        "return {**item, 'label': item['label'].float()}",
        "return {**item, 'a': item['a'].long()}",
        "return {**item, 'a': item['a'][None]}",
        "return {**item, 'a': item['a'].to(torch.float64)}",
        "return {**item, 'a': item['a'].requires_grad_()}",
    ],
    "declared": [
        "num_classes = 'three'",
        "num_classes = 0",
        "num_classes = True",
        "task = 'detection'",
        "task = 3",
        "modalities = 'a'",
        "modalities = ('z',)",
        "random = 'sometimes'",
        "ignore_index = 'x'",
    ],
    "call": ["raise ValueError('bad crop')", "return None", "return 3", "return {}"],
    "forward": [
        "raise RuntimeError('shape mismatch in my head')",
        "return None",
        "return self.body(batch['a'])[:, :2]",
        "return self.body(batch['a'])[0]",
        "return self.body(batch['a']) * math.nan",
        "return {'logits': self.body(batch['a'])}",
    ],
    "splits": [
        "raise RuntimeError('no disk')",
        "return None",
        "return 'train'",
        "return [Items(24, 0), Items(12, 1)]",
        "return {'train': Items(24, 0), 'val': Items(12, 1)}",
        "return {'train': [1, 2, 3], 'val': Items(12, 1), 'test': Items(12, 2)}",
        "return {'train': Items(0, 0), 'val': Items(12, 1), 'test': Items(12, 2)}",
        "sys.exit(0)",
    ],
    "transform": ["raise TypeError('scale missing')", "return None", "return 'flip'"],
    "model": ["raise ValueError('hidden must be even')", "return None", "return nn.Linear(4, 3)", "sys.exit(2)"],
}
PIECE_NAMES = {
    "header": r"data\.dataset|data\.transforms|student\.model|importing module",
    "len": r"data\.dataset|len\(dataset\)|train|empty",
    "declared": r"data\.dataset|train|num_classes|task|modalit|random|ignore_index",
    "item": r"item \d+|train|val|test|data\.dataset|label|modalit|student|predict",  # the model may not read it
    "call": r"item \d+|train|transform",
    "forward": r"student|model|forward|loss|output|predict",
    "splits": r"data\.dataset|split|train",
    "transform": r"data\.transforms",
    "model": r"student\.model",
}


def train_from_module(module: str, root: Path) -> RunResult:
    cfg = DataConfig(dataset=f"{module}:splits", transforms={"train": {"factory": f"{module}:transform"}})
    data = load_data(cfg)
    student = build_model(CustomModelConfig(factory=f"{module}:model"), data.train.specs(), 3, key="student.model")
    trainer = TrainerConfig(**TRAINER)
    return distill(student, None, data, root / "out", "supervised", trainer=trainer, cache=CacheConfig(enabled=False))


@settings(
    max_examples=EXAMPLES or 25,
    derandomize=not EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(piece=st.sampled_from(sorted(BROKEN)), data=st.data())
def test_broken_user_factories_and_datasets_end_in_an_error_naming_them(tmp_path_factory, piece, data):
    broken = data.draw(st.sampled_from(BROKEN[piece]), label=piece)
    root = tmp_path_factory.mktemp("case")
    user = root / "user"
    user.mkdir()
    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    (user / f"{name}.py").write_text(MODULE.format(**{**GOOD, piece: broken}))
    note(f"{piece}: {broken}")
    import sys

    sys.path.insert(0, str(user))
    try:
        check_outcome(lambda: train_from_module(name, root), root, PIECE_NAMES[piece])
    finally:
        sys.path.remove(str(user))
        sys.modules.pop(name, None)


def test_the_valid_cases_train(tmp_path, toy):
    """The base of the generated cases is a run that works (so a refusal is the broken input's)."""
    assert check_outcome(lambda: distill(**valid_arguments(toy, tmp_path)), tmp_path, ".") == "ok"
    user = tmp_path / "user"
    user.mkdir()
    (user / "fuzz_good.py").write_text(MODULE.format(**GOOD))
    import sys

    sys.path.insert(0, str(user))
    try:
        root = tmp_path / "m"
        root.mkdir()
        assert check_outcome(lambda: train_from_module("fuzz_good", root), root, ".") == "ok"
    finally:
        sys.path.remove(str(user))
