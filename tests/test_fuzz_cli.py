"""CLI fuzz: overrides generated from the config schema never end in a traceback.

Hypothesis walks the pydantic models of :mod:`mmdistill.config` (and the ``kd`` method's
``Params`` and the toy dataset builder's signature) to list every dotted key with its type,
then generates ``key=value`` overrides with valid, out-of-range, wrong-typed, non-finite, huge,
unicode and YAML-special values. Each case runs ``mmdistill train`` in-process
(``mmdistill.cli.main``) on a tiny config with ``trainer.epochs=1``. The promise checked:

* exit 0 and a finished run (``metrics.json``), or
* exit 2 with exactly one line ``mmdistill train: error: ...`` naming the override's key (or
  the section at fault), and no output folder left;
* never an uncaught exception (the test fails on one), never another exit code.

Cases that would pass validation but run long (many epochs, wide layers, big data) or start
worker processes (``devices`` > 1, ``strategy=ddp``) are discarded before they run. The default
suite runs 60 fixed (derandomized) cases; ``MMDISTILL_FUZZ_EXAMPLES=2000`` explores more, at random.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from mmdistill import strict_yaml
from mmdistill.cli import main
from mmdistill.config import RunConfig, visible_gpus
from mmdistill.data.generated.synthetic import toy_two_modality
from mmdistill.methods.hint import HintParams
from mmdistill.methods.kd import KDParams
from mmdistill.methods.msd import MSDParams
from mmdistill.registry import DATASETS, MASKERS, METHODS

TINY = """\
seed: 0
data: {{name: toy-two-modality, params: {{n: 40, dim_a: 6, dim_b: 6}}}}
teacher: {{model: {{modalities: [a, b], encoder: {{hidden: [8], out_dim: 4}}}}}}
student: {{model: {{modalities: [b], encoder: {{hidden: [8], out_dim: 4}}}}}}
method: {{name: kd, params: {{temperature: 2.0, lam: 0.5}}}}
trainer: {{epochs: 1, batch_size: 8, num_threads: 1}}
cache: {{dir: {cache}}}
"""


def _unwrap(annotation):
    """Optional[X] -> X; Annotated[X, ...] -> X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(args[0])
    if origin is typing.Union and len(args) == 1:
        return _unwrap(args[0])
    if origin is typing.Union:  # teacher.model / student.model: the reference model's keys (a factory needs a module)
        models = [a for a in map(_unwrap, args) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else annotation
    return annotation


def schema_keys(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every dotted key of ``model`` (sections included) -> its annotation."""
    keys: dict[str, object] = {}
    for name, field in model.model_fields.items():
        key, ann = prefix + name, _unwrap(field.annotation)
        keys[key] = ann
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.update(schema_keys(ann, key + "."))
    return keys


def all_keys() -> dict[str, object]:
    keys = schema_keys(RunConfig)
    for params in (KDParams, MSDParams, HintParams):  # a key of another method's Params is an unknown key for kd
        keys.update({f"method.params.{k}": _unwrap(f.annotation) for k, f in params.model_fields.items()})
    hints = typing.get_type_hints(toy_two_modality, include_extras=True)
    keys.update({f"data.params.{k}": _unwrap(hints[k]) for k in hints if k not in ("seed", "return")})
    return keys


KEYS = all_keys()

# YAML texts a user might type by mistake: wrong types, YAML 1.1 traps, non-finite, huge, tags, aliases, unicode
SPECIAL = [
    "true",
    "false",
    "True",
    "yes",
    "no",
    "on",
    "null",
    "~",
    "''",
    "'3'",
    "010",
    "0o10",
    "0x1f",
    "1:30",
    "1_000",
    ".nan",
    ".inf",
    "-.inf",
    "1e300",
    "-1e300",
    "1e-30",
    "1e-3",
    "-1",
    "0",
    "1",
    "2",
    "3.5",
    "-0.0",
    "2**64",
    "18446744073709551616",
    "-9223372036854775809",
    "[]",
    "{}",
    "[1, 2]",
    "[a, b]",
    "[index]",
    "[label]",
    "[a, a]",
    "{a: 1}",
    "[[1]]",
    "&x [1, *x]",
    "*undefined",
    "!!python/object/apply:os.system [echo]",
    "!!binary aGk=",
    "!!float 1",
    "!!str 3",
    "'\u2603'",
    "\u00e9t\u00e9",
    "\U0001d518nicode",
    "\u202eevil",
    "{{",
    "- a",
    "a: b",
    "|",
    ">",
    "%YAML 1.1",
    "---",
    "...",
    "x" * 3000,
    "[" * 300,
    "a\nb",
    "  ",
    "#comment",
    "@x",
    "`x`",
]
NUMBER_TEXT = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-10, 10).map(lambda x: f"{x:.3g}"),
)
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=16)


NAMES = {"method.name": METHODS, "data.name": DATASETS, "masking.strategy": MASKERS}
MAPPINGS = [
    "{b: {type: cnn1d}}",
    "{a: {out_dim: 3}}",
    "{zz: {}}",
    "{b: zeros}",
    "{a: learned}",
    "{b: mean}",
    "{student_layer: head, teacher_layer: head}",
    "{weighting: learned}",
    "{n: 20}",
    "{temperature: 1e-30}",
]


def values_for(key: str, annotation) -> st.SearchStrategy[str]:
    """Override texts for a key: its valid choices (Literal, registry names), numbers and the shared traps."""
    options = [st.sampled_from(SPECIAL), TEXT]
    if key in NAMES:
        options.append(st.sampled_from(NAMES[key].names()))
    if typing.get_origin(annotation) is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        options.append(st.sampled_from(MAPPINGS))
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        options.append(st.sampled_from([str(a) for a in typing.get_args(annotation)]))
    if annotation in (int, float) or origin is typing.Literal:
        options.append(NUMBER_TEXT)
    if origin in (list, tuple):
        options.append(
            st.lists(st.one_of(st.integers(-3, 70000), st.sampled_from(["a", "b", "x", "true"])), max_size=3).map(
                lambda xs: "[" + ", ".join(map(str, xs)) + "]"
            )
        )
    if annotation is bool:
        options.append(st.sampled_from(["true", "false", "1", "0"]))
    return st.one_of(options)


@st.composite
def overrides(draw) -> list[tuple[str, str]]:
    out = []
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(KEYS)))
        out.append((key, draw(values_for(key, KEYS[key]))))
    return out


# Upper bounds on values that would be valid but make a run slow, wide or long; such cases are discarded
COSTLY = {
    "epochs": 1,
    "n": 200,
    "dim_a": 64,
    "dim_b": 64,
    "latent_dim": 64,
    "hidden": 256,
    "out_dim": 256,
    "channels": 64,
    "head_hidden": 256,
    "kernel_size": 9,
    "vocab_size": 10_000,
    "num_threads": 2,
    "n_train": 200,
    "n_val": 200,
    "n_test": 200,
}


def _too_costly(key: str, value: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    try:
        parsed = strict_yaml.load(value)
    except Exception:  # noqa: BLE001  not YAML: refused before anything runs
        return False
    numbers = parsed if isinstance(parsed, list) else [parsed]
    numbers = [v for v in numbers if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if leaf in COSTLY and any(v > COSTLY[leaf] for v in numbers):
        return True
    if leaf == "devices" and any(1 < v <= 1024 for v in numbers):
        return True  # would start DDP worker processes from inside pytest
    if leaf == "strategy" and parsed == "ddp":
        return True  # would start a process group inside pytest
    # CPU-only test
    return leaf == "accelerator" and parsed in ("gpu", "cuda", "auto", "mps") and visible_gpus() > 0


def _names_key(key: str, message: str) -> bool:
    """The message names the key (or an element of it: ``imports[0]``), or a section of it, or the last parts of it."""
    parts = key.split(".")
    candidates = [".".join(parts[:i]) for i in range(len(parts), 0, -1)] + [
        ".".join(parts[i:]) for i in range(1, len(parts))
    ]
    return any(re.search(rf"(^|[\s'\"(]){re.escape(c)}($|[\s:'\".,)=\[])", message) for c in candidates)


STATS = {"cases": 0, "exit 0": 0, "exit 2": 0, "files": 0}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(cache=folder / "cache"))
    return path


@settings(
    max_examples=int(os.environ.get("MMDISTILL_FUZZ_EXAMPLES", 60)),
    deadline=None,
    derandomize=not os.environ.get("MMDISTILL_FUZZ_EXAMPLES"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(items=overrides())
# what earlier random runs of this fuzz found (each was a traceback or a message naming no key), kept as fixed cases
@example(items=[("teacher.model.encoder.type", "cnn2d")])
@example(items=[("data.name", "A")])
@example(items=[("data.name", "x" * 3000)])
@example(items=[("cache.dir", "x" * 3000)])
@example(items=[("data.params.n", "1")])
@example(items=[("trainer.precision", "64-true")])
def test_cli_exits_0_or_2_with_one_line_naming_the_key(base, items):
    for key, value in items:
        assume(not _too_costly(key, value))
    STATS["cases"] += 1
    out = base.parent / f"run{STATS['cases']}"
    argv = ["train", str(base), "trainer.epochs=1", *[f"{k}={v}" for k, v in items], "--out", str(out), "--quiet"]
    note(f"argv: {argv}")
    code, text = _run(argv, base.parent)
    note(f"exit {code}; stderr: {text!r}")
    assert "Traceback" not in text
    if code == 0:
        STATS["exit 0"] += 1
        assert (out / "metrics.json").is_file()
        return
    STATS["exit 2"] += 1
    assert code == 2, f"{argv}: exit {code}: {text}"
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmdistill train: error:"), (
        f"{argv}: expected one error line, got {text!r}"
    )
    assert len(lines[0]) < 1500, f"{argv}: error message of {len(lines[0])} characters"
    assert any(_names_key(k, lines[0]) for k, _ in items), f"{argv}: {lines[0]!r} names none of the keys"
    assert not out.exists(), f"{argv}: exit 2 left {out}"


def _run(argv: list[str], folder: Path) -> tuple[int, str]:
    """``mmdistill.cli.main(argv)`` in ``folder``, stderr captured, global torch settings restored."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    err, cwd = io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return code, err.getvalue()


@st.composite
def config_files(draw) -> bytes:
    """The tiny config's text with one line edited: a line repeated, a value replaced, bytes or unicode inserted."""
    lines = TINY.format(cache="cache").splitlines(keepends=True)
    i = draw(st.integers(0, len(lines) - 1))
    kind = draw(st.sampled_from(["repeat", "value", "insert", "bytes", "indent", "drop"]))
    if kind == "repeat":
        lines.insert(i, lines[i])
    elif kind == "value":
        key = lines[i].split(":", 1)[0]
        lines[i] = f"{key}: {draw(st.one_of(st.sampled_from(SPECIAL), TEXT))}\n"
    elif kind == "insert":
        lines.insert(i, draw(st.one_of(st.sampled_from(SPECIAL), TEXT)) + "\n")
    elif kind == "indent":
        lines[i] = " " * draw(st.integers(1, 4)) + lines[i]
    elif kind == "drop":
        del lines[i]
    data = "".join(lines).encode()
    if kind == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


@settings(
    max_examples=int(os.environ.get("MMDISTILL_FUZZ_EXAMPLES", 30)),
    deadline=None,
    derandomize=not os.environ.get("MMDISTILL_FUZZ_EXAMPLES"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=config_files())
def test_edited_config_files_exit_0_or_2_with_one_line(base, content):
    STATS["files"] += 1
    path = base.parent / f"edited{STATS['files']}.yaml"
    path.write_bytes(content)
    out = base.parent / f"filerun{STATS['files']}"
    code, text = _run(["train", str(path), "trainer.epochs=1", "--out", str(out), "--quiet"], base.parent)
    note(f"exit {code}; stderr: {text!r}")
    assert "Traceback" not in text
    if code == 0:
        assert (out / "metrics.json").is_file()
        return
    lines = text.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mmdistill train: error:"), f"exit {code}: {text!r}"
    assert not out.exists()


def test_fuzz_report():
    """Prints how many cases the fuzz ran (run with -s to see it); runs after the fuzz in file order."""
    print(
        f"\nCLI fuzz: {STATS['cases']} generated override cases ({STATS['exit 0']} exit 0, {STATS['exit 2']} exit 2), "
        f"{STATS['files']} edited config files"
    )
    if STATS["cases"]:
        assert STATS["exit 0"] + STATS["exit 2"] == STATS["cases"]
