"""`mmdistill data build av-mnist`: MNIST IDX + FSDD WAV files -> MultiBench's AV-MNIST layout -> the avmnist loader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from mmdistill.cli import main
from mmdistill.data import build_splits
from mmdistill.data.builders.avmnist_build import IDX_IMAGES, IDX_LABELS, build_av_mnist
from mmdistill.errors import DataError, OutputExistsError

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 130, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(y):  # a class-dependent bright bar, so the images carry the label
            x[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 250
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x, IDX_IMAGES)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y, IDX_LABELS)


def write_fsdd(root: Path, indices=(0, 1, 5, 6, 7), speakers=("alice", "bob")) -> None:
    root.mkdir(parents=True)
    t = np.arange(3000) / 8000
    for d in range(10):
        for s, speaker in enumerate(speakers):
            for i in indices:
                tone = np.sin(2 * np.pi * (300 + 250 * d + 20 * s + 5 * i) * t) * 8000
                wavfile.write(root / f"{d}_{speaker}_{i}.wav", 8000, tone.astype(np.int16))


@pytest.fixture
def raw(tmp_path):
    write_mnist(tmp_path / "mnist")
    write_fsdd(tmp_path / "fsdd")
    return tmp_path


def test_build_writes_multibench_layout_that_the_avmnist_loader_reads(raw):
    out = raw / "avmnist"
    meta = build_av_mnist(raw / "mnist", raw / "fsdd", out, seed=3, snr_db=10.0)
    assert np.load(out / "image" / "train_data.npy").shape == (130, 784)
    audio = np.load(out / "audio" / "test_data.npy").astype(np.float32)
    assert audio.shape == (20, 112, 112) and np.load(out / "audio" / "test_data.npy", mmap_mode="r").dtype == np.float16
    assert 0 <= audio.min() and audio.max() <= 255 and audio.std() > 1
    assert json.loads((out / "build.json").read_text())["counts"] == meta["counts"]
    splits = build_splits("avmnist", {"root": str(out), "val_fraction": 10 / 130})
    assert (len(splits.train), len(splits.val), len(splits.test)) == (120, 10, 20)
    batch = splits.val.__getitems__(range(10))
    assert batch["image"].shape == (10, 1, 28, 28) and batch["audio"].shape == (10, 1, 112, 112)
    assert batch["audio"].dtype == torch.float32 and float(batch["audio"].max()) <= 1.0
    # validation is the last rows of train (MultiBench), read from disk with their labels
    assert torch.equal(batch["label"], torch.from_numpy(np.load(out / "train_labels.npy")[120:]))
    img = np.load(out / "image" / "train_data.npy")[120:] / 255.0
    assert torch.allclose(batch["image"].reshape(10, -1), torch.from_numpy(img).float(), atol=1e-6)


def test_pairing_stays_within_digit_and_split(raw):
    out = raw / "avmnist"
    build_av_mnist(raw / "mnist", raw / "fsdd", out, seed=0, snr_db=None)
    names = sorted(p.name for p in (raw / "fsdd").glob("*.wav"))
    for split, test_split in (("train", False), ("test", True)):
        pool = [n for n in names if (int(n.split("_")[2][:-4]) < 5) == test_split]
        pair = np.load(out / "audio" / f"{split}_pairing.npy")
        digits = np.array([int(pool[i][0]) for i in pair])
        assert np.array_equal(digits, np.load(out / f"{split}_labels.npy"))
    # without noise the same recording gives the same spectrogram: rows paired with one recording agree
    pair, audio = np.load(out / "audio" / "train_pairing.npy"), np.load(out / "audio" / "train_data.npy")
    a, b = [i for i in range(len(pair)) if pair[i] == pair[0]][:2]
    assert np.array_equal(audio[a], audio[b])


def test_energy_removal_projects_out_the_top_components(raw):
    out = raw / "avmnist"
    meta = build_av_mnist(raw / "mnist", raw / "fsdd", out, snr_db=None, energy_removed=0.75)
    with gzip.open(raw / "mnist" / "train-images-idx3-ubyte.gz") as images:
        raw_x = np.frombuffer(images.read()[16:], np.uint8).reshape(130, 784) / 1.0
    centred = raw_x - raw_x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = meta["pca_components_removed"]
    assert k == int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), 0.75) + 1)
    x = np.load(out / "image" / "train_data.npy").astype(np.float64)
    assert np.abs((x - x.mean(0)) @ vt[:k].T).max() < 1e-3 * np.abs(x - x.mean(0)).max()  # no energy left on them
    assert np.linalg.norm((x - x.mean(0)) @ vt[k:].T) > 0


def test_bad_inputs_name_the_file(raw):
    (raw / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: MNIST file not found"):
        build_av_mnist(raw / "mnist", raw / "fsdd", raw / "o1")
    write_idx(raw / "mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10, IDX_IMAGES)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: IDX magic number 0x00000803, expected 0x00000801"):
        build_av_mnist(raw / "mnist", raw / "fsdd", raw / "o1")
    write_idx(raw / "mnist" / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10, IDX_LABELS)
    (raw / "fsdd" / "seven_alice_3.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match=r"seven_alice_3.wav: file name does not follow FSDD"):
        build_av_mnist(raw / "mnist", raw / "fsdd", raw / "o1")
    (raw / "fsdd" / "seven_alice_3.wav").unlink()
    (raw / "fsdd" / "3_alice_9.wav").write_bytes(b"not a wav")
    with pytest.raises(DataError, match=r"3_alice_9.wav: not a readable WAV file"):
        build_av_mnist(raw / "mnist", raw / "fsdd", raw / "o1")
    assert not (raw / "o1").exists() and not list(raw.glob(".o1*"))  # nothing half-written is left


def test_output_folder_not_ours_is_refused_and_kept(raw):
    theirs = raw / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="was not made by"):
        build_av_mnist(raw / "mnist", raw / "fsdd", theirs)
    assert (theirs / "notes.txt").read_text() == "keep me"
    ours = raw / "ours"
    build_av_mnist(raw / "mnist", raw / "fsdd", ours, seed=0)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        build_av_mnist(raw / "mnist", raw / "fsdd", ours, seed=1)
    build_av_mnist(raw / "mnist", raw / "fsdd", ours, seed=1, overwrite=True)
    assert json.loads((ours / "build.json").read_text())["seed"] == 1


def test_cli_builds_and_reports_errors(raw, capsys):
    assert (
        main(
            [
                "data",
                "build",
                "av-mnist",
                "--mnist",
                str(raw / "mnist"),
                "--fsdd",
                str(raw / "fsdd"),
                "--out",
                str(raw / "cli"),
                "--seed",
                "1",
                "--snr-db",
                "none",
            ]
        )
        == 0
    )
    assert "train 130 / test 20" in capsys.readouterr().out
    assert (
        main(
            [
                "data",
                "build",
                "av-mnist",
                "--mnist",
                str(raw / "nope"),
                "--fsdd",
                str(raw / "fsdd"),
                "--out",
                str(raw / "c2"),
            ]
        )
        == 2
    )
    assert "nope: not a folder" in capsys.readouterr().err
    assert main(["data", "build", "av-mnist", "--fsdd", str(raw / "fsdd"), "--out", str(raw / "c2")]) == 2
    assert "needs --mnist DIR" in capsys.readouterr().err


@pytest.mark.skipif(
    not (SHARED / "mnist").is_dir() or not (SHARED / "fsdd" / "recordings").is_dir(),
    reason=f"real MNIST/FSDD not found under {SHARED} (../shared/data beside the repository)",
)
def test_real_mnist_and_fsdd_small_build(tmp_path):
    out = tmp_path / "avmnist"
    meta = build_av_mnist(SHARED / "mnist", SHARED / "fsdd" / "recordings", out, limit=120)
    assert meta["counts"]["train"]["recordings"] == 2700 and meta["counts"]["test"]["recordings"] == 300
    splits = build_splits("avmnist", {"root": str(out), "val_fraction": 20 / 120})
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 20, 20)
    assert 20 <= meta["pca_components_removed"] <= 60  # MNIST: about 30 components hold 75% of the variance
