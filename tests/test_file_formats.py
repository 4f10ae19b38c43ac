"""File formats: safetensors detected by structure (not its first byte), identical bytes for identical content,
the umask respected, and the run's files (checkpoints, metrics.csv) identical for identical runs."""

import hashlib
import pickle
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file as library_save_file

from mmdistill.engine.system.checkpoint import file_format, load_tensors, load_weights, save_tensors
from mmdistill.errors import CheckpointError


def test_the_reported_file_whose_header_length_ends_in_0x80_loads(tmp_path):
    """A reported file, verbatim: it was refused as 'a pickle'."""
    import json

    from mmdistill.engine.system.checkpoint import FORMAT, tensors_checksum

    p = tmp_path / "c.safetensors"
    w = {"w": torch.zeros(178)}  # as the safetensors library wrote it for save_tensors at the time of the report:
    library_save_file(
        w, str(p), metadata={"format": FORMAT, "sha256": tensors_checksum(w), "state": json.dumps({"k": "v" * 178})}
    )
    assert p.read_bytes()[:1] == b"\x80"
    assert torch.equal(load_weights(p)["w"], torch.zeros(178))
    save_tensors(p, {"w": torch.zeros(178)}, {"k": "v" * 178})
    back, state = load_tensors(p)
    assert torch.equal(back["w"], torch.zeros(178)) and state == {"k": "v" * 178}


def test_every_header_length_mod_256_loads(tmp_path):
    """Header lengths are multiples of 8: 32 residues mod 256, one of them 0x80 (the 1 in 32 of the report)."""
    low_bytes = set()
    for length in range(300):
        p = tmp_path / f"{length}.safetensors"
        save_tensors(p, {"w": torch.arange(3.0)}, {"k": "v" * length})
        low_bytes.add(p.read_bytes()[0])
        assert torch.equal(load_tensors(p)[0]["w"], torch.arange(3.0))
    assert 0x80 in low_bytes and len(low_bytes) == 32


@settings(max_examples=60, deadline=None)
@given(meta_len=st.integers(0, 4000), numel=st.integers(0, 300), library=st.booleans())
def test_any_valid_safetensors_file_loads(tmp_path_factory, meta_len, numel, library):
    p = tmp_path_factory.mktemp("st") / "f.safetensors"
    w = torch.arange(float(numel))
    if library:
        library_save_file({"w": w}, str(p), metadata={"k": "v" * meta_len})
    else:
        save_tensors(p, {"w": w}, {"k": "v" * meta_len})
    assert file_format(p) == "safetensors"
    assert torch.equal(load_weights(p)["w"], w)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickles_of_every_protocol_are_refused_by_name(tmp_path, protocol):
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps({"w": [1.0] * 50}, protocol=protocol))
    with pytest.raises(CheckpointError, match="is a pickle"):
        load_tensors(p)


def test_torch_save_archives_are_refused_by_name(tmp_path):
    zipped, legacy = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    torch.save({"w": torch.zeros(3)}, zipped)
    torch.save({"w": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="torch.save archive"):
        load_tensors(zipped)
    with pytest.raises(CheckpointError, match="is a pickle"):
        load_tensors(legacy)


@pytest.mark.parametrize("data", [b"", b"{}", b"\x10\x00\x00\x00\x00\x00\x00\x00{", b"hello world, not a tensor file"])
def test_junk_is_refused_as_not_safetensors(tmp_path, data):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(data)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_tensors(p)


@settings(max_examples=20, deadline=None)
@given(keys=st.permutations(["epoch", "best", "optimizer", "zeta", "alpha"]))
def test_same_content_gives_the_same_bytes_whatever_the_insertion_order(tmp_path_factory, keys):
    folder = tmp_path_factory.mktemp("det")
    tensors = {"b": torch.ones(2, dtype=torch.int64), "a": torch.zeros(3), "c": torch.ones(1, dtype=torch.bfloat16)}
    save_tensors(folder / "1.safetensors", tensors, dict.fromkeys(sorted(keys), 1))
    save_tensors(folder / "2.safetensors", dict(reversed(tensors.items())), dict.fromkeys(keys, 1))
    assert (folder / "1.safetensors").read_bytes() == (folder / "2.safetensors").read_bytes()


UMASK_SCRIPT = """
import os, sys, torch
from mmdistill.engine.system.checkpoint import save_tensors
from mmdistill.io import write_text
for umask in (0o022, 0o027, 0o002):
    os.umask(umask)
    folder = os.path.join(sys.argv[1], oct(umask))
    os.makedirs(folder)
    save_tensors(os.path.join(folder, "c.safetensors"), {"w": torch.zeros(2)})
    write_text(os.path.join(folder, "t.txt"), "x")
    open(os.path.join(folder, "plain"), "w").close()
"""


def test_files_get_the_mode_of_a_plain_open(tmp_path):
    from conftest import cli_env

    subprocess.run([sys.executable, "-c", UMASK_SCRIPT, str(tmp_path)], check=True, env=cli_env())
    for umask in (0o022, 0o027, 0o002):
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / oct(umask)).iterdir()}
        assert modes == {"c.safetensors": 0o666 & ~umask, "t.txt": 0o666 & ~umask, "plain": 0o666 & ~umask}, oct(umask)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_identical_runs_give_identical_files(toy_splits, tmp_path):
    from test_training import models

    from mmdistill.config import CacheConfig, TrainerConfig
    from mmdistill.engine.api import distill

    for run in ("r1", "r2"):
        teacher, student = models(toy_splits)
        distill(
            student,
            teacher,
            toy_splits,
            tmp_path / run,
            "kd",
            trainer=TrainerConfig(epochs=2, batch_size=32),
            cache=CacheConfig(dir=tmp_path / f"cache-{run}"),
        )
    for name in (
        "student.safetensors",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
        "metrics.csv",
        "result.json",
    ):
        assert _sha(tmp_path / "r1" / name) == _sha(tmp_path / "r2" / name), name
    (c1,), (c2,) = (tmp_path / "cache-r1").glob("*.safetensors"), (tmp_path / "cache-r2").glob("*.safetensors")
    assert c1.name == c2.name and _sha(c1) == _sha(c2)
