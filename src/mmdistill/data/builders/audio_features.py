"""Audio front end in numpy/scipy: silence trimming, additive noise at a set SNR, log-mel spectrograms.

Used by the AV-Digits build (:mod:`mmdistill.data.builders.av_digits_build`); nothing here needs a
speech engine.

Log-mel spectrogram (Davis & Mermelstein, 1980; the HTK mel scale)::

    mel(f)   = 2595 log10(1 + f / 700)
    S[k, t]  = |STFT_hann(x)[k, t]|^2                  (power spectrum)
    M[b, t]  = sum_k W[b, k] S[k, t]                   (W: triangular filters, equal width on the mel scale)
    L[b, t]  = 10 log10(max(M[b, t], 1e-10))           (decibels)

Noise at a signal-to-noise ratio (dB) over the voiced part of the signal::

    SNR = 10 log10(P_signal / P_noise),  so  sigma_noise = sqrt(P_signal / 10^(SNR/10)).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import stft


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters with centres equally spaced in mel, peak 1."""
    fmax = sample_rate / 2 if fmax is None else fmax
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (centre - lo)
    falling = (hi - freqs[None, :]) / (hi - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def log_mel_spectrogram(
    x: np.ndarray,
    sample_rate: int,
    n_fft: int = 1024,
    hop: int = 512,
    n_mels: int = 32,
    fmin: float = 50.0,
    fmax: float = 8000.0,
) -> np.ndarray:
    """(n_mels, frames) log-mel power in dB of a mono signal (Hann window, ``hop`` samples between frames)."""
    _, _, z = stft(
        np.asarray(x, dtype=np.float64),
        fs=sample_rate,
        window="hann",
        nperseg=n_fft,
        noverlap=n_fft - hop,
        boundary=None,
        padded=False,
    )
    power = np.abs(z) ** 2
    mel = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax) @ power
    return (10.0 * np.log10(np.maximum(mel, 1e-10))).astype(np.float32)


def trim_silence(x: np.ndarray, threshold_db: float = -40.0, frame: int = 256) -> np.ndarray:
    """Cut leading and trailing frames whose RMS is ``threshold_db`` below the loudest frame."""
    n = len(x) // frame
    if n == 0:
        return x
    rms = np.sqrt((x[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > threshold_db)
    return x[loud[0] * frame : (loud[-1] + 1) * frame]


def place_in_window(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` at a random offset in a zero signal of ``length`` samples (cropped at the centre if longer)."""
    if len(x) >= length:
        start = (len(x) - length) // 2
        return x[start : start + length].copy()
    out = np.zeros(length, dtype=x.dtype)
    offset = int(rng.integers(0, length - len(x) + 1))
    out[offset : offset + len(x)] = x
    return out


def add_noise(
    x: np.ndarray, snr_db: float, rng: np.random.Generator, signal_power: float | None = None, color: str = "white"
) -> np.ndarray:
    """``x`` plus Gaussian noise whose power is ``snr_db`` below ``signal_power`` (default: the power of ``x``).

    ``color="pink"`` shapes the noise spectrum as 1/f (by a 1/sqrt(f) amplitude filter in the
    frequency domain) before scaling it to the same power.
    """
    p_signal = float(np.mean(np.asarray(x, dtype=np.float64) ** 2)) if signal_power is None else signal_power
    noise = rng.standard_normal(len(x))
    if color == "pink":
        spec = np.fft.rfft(noise)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        noise = np.fft.irfft(spec / np.sqrt(f), n=len(x))
    elif color != "white":
        raise ValueError(f"noise color must be 'white' or 'pink', got {color!r}")
    noise *= np.sqrt(p_signal / 10 ** (snr_db / 10) / np.mean(noise**2))
    return x + noise
