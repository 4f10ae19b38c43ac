"""The bundled real datasets (mfeat, AV-Digits) and the ``mmdistill data`` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdistill.cli import main
from mmdistill.data import build_splits
from mmdistill.data.builders.audio_features import add_noise, log_mel_spectrogram, mel_filterbank
from mmdistill.data.formats.av_digits import load_features, pair_within_class, remove_top_energy
from mmdistill.errors import ConfigError

torch.set_num_threads(1)


def test_mfeat_has_the_six_uci_views_and_2000_digits():
    s = build_splits("mfeat", {}, seed=0)
    assert {sp.name: sp.shape for sp in s.train.specs()} == {
        "pix": (240,),
        "fou": (76,),
        "kar": (64,),
        "zer": (47,),
        "mor": (6,),
        "fac": (216,),
    }
    assert len(s.train) + len(s.val) + len(s.test) == 2000
    assert torch.bincount(s.test.labels).tolist() == [40] * 10  # stratified


def test_mfeat_any_subset_of_views_is_a_modality_set_standardised_on_train():
    s = build_splits("mfeat", {"views": ["zer", "mor"]}, seed=1)
    assert s.train.modality_names == ["zer", "mor"]
    x = s.train.tensors["zer"]
    assert torch.allclose(x.mean(0), torch.zeros(47), atol=1e-4)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(47), atol=1e-3)


def test_mfeat_unknown_view_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown view 'pixels'; known: pix, fou, kar, zer, mor, fac"):
        build_splits("mfeat", {"views": ["pixels"]})


def test_splits_are_fixed_by_the_seed_and_differ_across_seeds():
    a, b, c = (build_splits("mfeat", {"views": ["mor"]}, seed=s) for s in (0, 0, 1))
    assert a.test.fingerprint() == b.test.fingerprint()
    assert a.test.fingerprint() != c.test.fingerprint()


def test_av_digits_shapes_sizes_and_unseen_test_speakers():
    s = build_splits("av-digits", {}, seed=0)
    specs = {sp.name: sp.shape for sp in s.train.specs()}
    meta = s.info["meta"]
    assert specs == {"image": (1, 8, 8), "audio": (meta["n_mels"], meta["frames"])}
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    f = load_features()
    rows = s.info["audio_rows"]
    spk = f["audio_speaker"]
    assert f["audio_heldout"][rows["test"]].all() and not f["audio_heldout"][rows["train"]].any()
    assert not set(spk[rows["test"]]) & set(spk[rows["train"]])
    assert not set(rows["val"]) & set(rows["train"])  # no utterance shared by train and validation
    assert np.array_equal(f["audio_label"][rows["test"]], s.test.labels.numpy())  # paired by label


def test_av_digits_flat_image_and_seeded_pairing():
    a = build_splits("av-digits", {"flat_image": True}, seed=2)
    b = build_splits("av-digits", {"flat_image": True}, seed=2)
    assert a.train.tensors["image"].shape[1:] == (64,)
    assert a.train.fingerprint() == b.train.fingerprint()


def test_energy_removal_takes_out_the_requested_share_of_training_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10)) * np.arange(10, 0, -1)  # decreasing variance per axis
    out, k = remove_top_energy(x, np.arange(200), 0.5)
    var_in = ((x - x.mean(0)) ** 2).sum()
    var_out = ((out - out.mean(0)) ** 2).sum()
    assert k >= 1 and var_out <= 0.5 * var_in + 1e-9
    assert remove_top_energy(x, np.arange(200), 0.0)[1] == 0


def test_pairing_within_class_uses_each_pool_row_once_before_repeating():
    labels = np.array([0, 0, 0, 1, 1])
    pool_labels = np.array([0, 0, 1, 1, 1])
    out = pair_within_class(labels, pool_labels, np.arange(5), np.random.default_rng(0))
    assert (pool_labels[out] == labels).all()
    assert sorted(out[:2].tolist()) == [0, 1]  # both class-0 rows used before one repeats
    assert len(set(out[3:].tolist())) == 2


def test_log_mel_of_a_pure_tone_peaks_in_the_band_holding_its_frequency():
    sr = 16000
    t = np.arange(sr) / sr
    spec = log_mel_spectrogram(np.sin(2 * np.pi * 1000 * t), sr, n_fft=512, hop=256, n_mels=24, fmax=8000)
    fb = mel_filterbank(sr, 512, 24, 50.0, 8000)
    assert spec.shape[0] == 24
    assert spec.mean(1).argmax() == fb[:, round(1000 / (sr / 512))].argmax()


def test_noise_is_added_at_the_requested_snr():
    rng = np.random.default_rng(0)
    x = np.sin(np.linspace(0, 400, 20000))
    for color in ("white", "pink"):
        noisy = add_noise(x, 6.0, rng, color=color)
        snr = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
        assert abs(snr - 6.0) < 1e-6


def test_data_describe_prints_one_line(capsys):
    assert main(["data", "describe", "mfeat", "--param", "views=[fou,mor]"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert "train 1200 / val 400 / test 400; 10 classes; modalities: fou[76], mor[6]" in out[0]


def test_data_describe_unknown_param_is_an_error(capsys):
    assert main(["data", "describe", "av-digits", "--param", "snr=3"]) == 2
    assert "unknown parameter of dataset 'av-digits'" in capsys.readouterr().err


def test_av_digits_build_runs_with_the_engine_when_installed(tmp_path):
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("sklearn")
    from mmdistill.data.builders.av_digits_build import build_av_digits

    meta = build_av_digits(
        tmp_path / "f.npz",
        per_digit_train=2,
        per_digit_test=1,
        voices=("en-us",),
        train_variants=("m1",),
        heldout_variants=("f3",),
    )
    f = load_features(tmp_path / "f.npz")
    assert f["audio"].shape == (30, meta["n_mels"], meta["frames"])
    assert f["audio_heldout"].sum() == 10 and np.isfinite(f["audio"].astype(np.float32)).all()
