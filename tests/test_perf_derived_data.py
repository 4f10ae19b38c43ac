"""Derived data computed once per process: AV-Digits' removed image components and the PCA bases of the paired
arrays are the same arrays as computed afresh, and their SVD runs once for the same data."""

import numpy as np
import torch

from mmdistill.data import build_splits
from mmdistill.data.formats import av_digits
from mmdistill.mfh import pairs


def reference_remove_top_energy(images, train_rows, fraction):
    """The computation before it was kept per process (the same formula, an SVD each call)."""
    x = images.astype(np.float64)
    if fraction == 0.0:
        return x, 0
    mu = x[train_rows].mean(0)
    _, s, vt = np.linalg.svd(x[train_rows] - mu, full_matrices=False)
    k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), fraction) + 1)
    v = vt[:k]
    return x - (x - mu) @ v.T @ v, k


def reference_pca_basis(x, k):
    mu = x.mean(0)
    _, _, vh = torch.linalg.svd((x - mu).double(), full_matrices=False)
    v = vh[:k].t()
    v = v * torch.sign(v[v.abs().argmax(0), torch.arange(v.shape[1])])
    return mu, v.float()


def counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_removed_components_are_the_same_arrays_and_the_svd_runs_once(monkeypatch):
    rng = np.random.default_rng(0)
    images, rows = rng.normal(size=(60, 16)) @ rng.normal(size=(16, 16)), np.arange(0, 60, 2)
    svds = counting(monkeypatch, np.linalg, "svd")
    first, again = av_digits.remove_top_energy(images, rows, 0.5), av_digits.remove_top_energy(images, rows, 0.5)
    monkeypatch.undo()
    want = reference_remove_top_energy(images, rows, 0.5)
    assert np.array_equal(first[0], want[0]) and np.array_equal(again[0], want[0]) and first[1] == again[1] == want[1]
    assert len(svds) == 1


def test_other_images_rows_or_fraction_are_computed_afresh():
    rng = np.random.default_rng(1)
    images, rows = rng.normal(size=(40, 8)), np.arange(20)
    av_digits.remove_top_energy(images, rows, 0.5)
    changed = images.copy()
    changed[3, 2] += 1.0
    for args in ((changed, rows, 0.5), (images, np.arange(1, 21), 0.5), (images, rows, 0.6)):
        got = av_digits.remove_top_energy(*args)
        want = reference_remove_top_energy(*args)
        assert np.array_equal(got[0], want[0]) and got[1] == want[1]


def test_pca_basis_is_the_same_tensors_computed_once_and_a_copy_each_call(monkeypatch):
    x = torch.randn(50, 30, generator=torch.Generator().manual_seed(2))
    svds = counting(monkeypatch, torch.linalg, "svd")
    mu, basis = pairs._pca_basis(x, 5)
    mu.zero_()  # a caller's change to what it got stays its own
    again = pairs._pca_basis(x.clone(), 5)
    monkeypatch.undo()
    want = reference_pca_basis(x, 5)
    assert torch.equal(again[0], want[0]) and torch.equal(basis, want[1]) and torch.equal(again[1], want[1])
    assert len(svds) == 1
    other = x.clone()
    other[0, 0] += 1.0
    assert torch.equal(pairs._pca_basis(other, 5)[1], reference_pca_basis(other, 5)[1])
    assert pairs._pca_basis(x, 4)[1].shape == (30, 4)


def test_av_digits_and_its_pca_pairs_are_the_same_arrays_as_computed_afresh(monkeypatch):
    built, paired = build_splits("av-digits", {}, seed=0), pairs.load_pairs("av-digits", {}, seed=0, pca=64)
    again = build_splits("av-digits", {}, seed=0)
    monkeypatch.setattr(av_digits, "remove_top_energy", reference_remove_top_energy)
    monkeypatch.setattr(pairs, "_pca_basis", reference_pca_basis)
    fresh, fresh_pairs = build_splits("av-digits", {}, seed=0), pairs.load_pairs("av-digits", {}, seed=0, pca=64)
    for split in ("train", "val", "test"):
        for m in ("image", "audio"):
            want = fresh.split(split).tensors[m]
            assert torch.equal(built.split(split).tensors[m], want) and torch.equal(again.split(split).tensors[m], want)
        for side in ("xa", "xb", "y"):
            assert torch.equal(getattr(paired.split(split), side), getattr(fresh_pairs.split(split), side))
