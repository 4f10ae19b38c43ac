import pickle

import pytest
import torch

from mmdistill.engine.system.checkpoint import load_tensors, load_weights, save_tensors
from mmdistill.errors import CheckpointError


def test_roundtrip_keeps_bits_and_state(tmp_path):
    t = {"w": torch.randn(3, 4), "step": torch.tensor(5.0)}
    save_tensors(tmp_path / "c.safetensors", t, {"epoch": 3})
    back, state = load_tensors(tmp_path / "c.safetensors")
    assert torch.equal(back["w"], t["w"]) and state == {"epoch": 3}


def test_truncated_file_is_refused(tmp_path):
    p = tmp_path / "c.safetensors"
    save_tensors(p, {"w": torch.randn(100)})
    p.write_bytes(p.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_tensors(p)


def test_flipped_byte_fails_the_checksum(tmp_path):
    p = tmp_path / "c.safetensors"
    save_tensors(p, {"w": torch.zeros(100)})
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_tensors(p)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pickle_payload_is_refused_not_executed(tmp_path, suffix):
    marker = tmp_path / "executed"
    p = tmp_path / f"evil{suffix}"
    if suffix == ".pt":
        torch.save({"w": Payload(str(marker))}, p)
    else:
        p.write_bytes(pickle.dumps(Payload(str(marker))))
    marker_existed = marker.exists()
    if marker_existed:
        marker.unlink()  # torch.save itself does not run __reduce__'s callable, but be sure
    with pytest.raises(CheckpointError, match="pickle|weights_only"):
        load_weights(p)
    assert not marker.exists(), "the pickle payload must never run"


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(tmp_path / "none.safetensors")
