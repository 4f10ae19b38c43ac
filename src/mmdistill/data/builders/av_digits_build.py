"""Build the AV-Digits features file: spoken digit words from espeak-ng, log-mel features, 8x8 digit images.

A build-time tool only (``mmdistill data build av-digits``); the ``av-digits`` dataset reads
the file this writes and needs no speech engine. The engine is GPL-3.0 software and is never
imported by the library at run time; it is driven through its C API (``speak_lib.h``) with
:mod:`ctypes`, from the shared library and voice data in the ``espeakng-loader`` wheel
(``pip install 'mmdistill[build-data]'``) or from Debian's ``libespeak-ng1`` + ``espeak-ng-data``.

Each utterance is one English digit word ("zero" ... "nine") spoken by a *speaker*, a pair
(voice, variant) such as ("en-gb-scotland", "f3"), with a random pitch, pitch range and rate,
then trimmed, placed at a random offset in a fixed window, mixed with white or pink noise at
an SNR drawn from ``snrs_db``, and turned into a log-mel spectrogram
(:func:`mmdistill.data.builders.audio_features.log_mel_spectrogram`). Speakers whose variant is in
``heldout_variants`` only ever speak test utterances, so the test split has unseen speakers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import DataError
from .audio_features import add_noise, log_mel_spectrogram, place_in_window, trim_silence

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-us-nyc")
TRAIN_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m6",
    "f1",
    "f2",
    "f4",
    "klatt",
    "klatt3",
    "croak",
    "whisper",
    "Andy",
    "Annie",
)
HELDOUT_VARIANTS = ("m7", "f3", "f5", "klatt2", "Denis", "belinda")

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_espeakRATE, _espeakPITCH, _espeakRANGE = 1, 3, 4


class Espeak:
    """The espeak-ng C library, synthesising into numpy arrays (int16 samples at ``sample_rate``).

    ``library``/``data_dir``: the shared library and the folder that *contains* ``espeak-ng-data``;
    by default the ``espeakng-loader`` wheel's, else the system's ``libespeak-ng.so.1``.
    """

    def __init__(self, library: str | None = None, data_dir: str | None = None) -> None:
        if library is None:
            try:
                import espeakng_loader

                library = espeakng_loader.get_library_path()
                data_dir = data_dir or os.path.dirname(espeakng_loader.get_data_path())
            except ImportError:
                library = ctypes.util.find_library("espeak-ng")
        if not library:
            raise DataError(
                "no espeak-ng library found: pip install 'mmdistill[build-data]' (the espeakng-loader wheel) "
                "or apt-get install espeak-ng"
            )
        self.lib = ctypes.CDLL(library)
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.data_dir = data_dir
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir.encode() if data_dir else None, 0
        )
        if self.sample_rate <= 0:
            raise DataError(f"espeak_Initialize failed (returned {self.sample_rate}) with data folder {data_dir!r}")
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = proto(self._collect)  # kept on self: the C side holds only a raw pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def check_variant(self, variant: str) -> None:
        """espeak-ng silently ignores an unknown variant; fail instead, when the voice data folder is known."""
        if self.data_dir and not (Path(self.data_dir) / "espeak-ng-data" / "voices" / "!v" / variant).is_file():
            raise DataError(f"espeak-ng has no voice variant {variant!r} in {self.data_dir}/espeak-ng-data/voices/!v")

    def say(self, text: str, voice: str, pitch: int = 50, pitch_range: int = 50, rate: int = 175) -> np.ndarray:
        """int16 samples of ``text`` spoken by ``voice`` (e.g. ``"en-us+f3"``); raises DataError on failure."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DataError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_espeakRATE, rate), (_espeakPITCH, pitch), (_espeakRANGE, pitch_range)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        data = text.encode() + b"\0"
        if self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, 0, None, None) != 0:
            raise DataError(f"espeak_Synth failed for {text!r} with voice {voice!r}")
        self.lib.espeak_Synchronize()
        if not self._chunks:
            raise DataError(f"espeak-ng produced no audio for {text!r} with voice {voice!r}")
        return np.concatenate(self._chunks)


def _metadata(sr, window_s, n_fft, n_mels, frames, snrs_db, seed, speakers, heldout_variants) -> dict:
    """The build's settings and sources, stored in the file as JSON under ``meta``."""
    return {
        "name": "av-digits",
        "sample_rate": sr,
        "window_s": window_s,
        "n_fft": n_fft,
        "hop": n_fft // 2,
        "n_mels": n_mels,
        "frames": frames,
        "fmin": 50.0,
        "fmax": 8000.0,
        "snrs_db": list(snrs_db),
        "seed": seed,
        "words": list(WORDS),
        "speakers": [f"{v}+{var}" for v, var in speakers],
        "heldout_variants": list(heldout_variants),
        "image_source": "sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits, 8x8, 0..16)",
        "audio_source": "espeak-ng (GPL-3.0), build-time only",
    }


def build_av_digits(
    out: str | Path,
    per_digit_train: int = 150,
    per_digit_test: int = 40,
    snrs_db: Sequence[float] = (-6.0, -3.0, 0.0, 3.0, 6.0, 9.0, 12.0, 20.0),
    window_s: float = 0.8,
    n_mels: int = 32,
    n_fft: int = 1024,
    seed: int = 2024,
    voices: Sequence[str] = VOICES,
    train_variants: Sequence[str] = TRAIN_VARIANTS,
    heldout_variants: Sequence[str] = HELDOUT_VARIANTS,
    engine: Espeak | None = None,
) -> dict:
    """Synthesise the utterance pool, compute features, and write the compressed ``.npz`` to ``out``.

    Returns the metadata dict stored in the file (also under the key ``meta`` as JSON).
    """
    from sklearn.datasets import load_digits  # build-time only: the images are copied into the file

    engine = engine or Espeak()
    sr = engine.sample_rate
    rng = np.random.default_rng(seed)
    length = int(window_s * sr)
    frames = 1 + (length - n_fft) // (n_fft // 2)
    speakers = [(v, var) for var in (*train_variants, *heldout_variants) for v in voices]
    for var in (*train_variants, *heldout_variants):
        engine.check_variant(var)
    heldout_flags = [var in heldout_variants for _, var in speakers]
    train_ids = [i for i, h in enumerate(heldout_flags) if not h]
    test_ids = [i for i, h in enumerate(heldout_flags) if h]

    feats, labels, spk, snr, pitch, rate = [], [], [], [], [], []
    for digit, word in enumerate(WORDS):
        for ids, count in ((train_ids, per_digit_train), (test_ids, per_digit_test)):
            for _ in range(count):
                s = int(rng.choice(ids))
                p, r, pr = int(rng.integers(20, 81)), int(rng.integers(110, 231)), int(rng.integers(20, 81))
                voice, variant = speakers[s]
                wav = trim_silence(engine.say(word, f"{voice}+{variant}", p, pr, r).astype(np.float64) / 32768.0)
                power = float(np.mean(wav**2))
                wav = place_in_window(wav, length, rng)
                level = float(rng.choice(snrs_db))
                wav = add_noise(wav, level, rng, signal_power=power, color=str(rng.choice(["white", "pink"])))
                feats.append(log_mel_spectrogram(wav, sr, n_fft=n_fft, hop=n_fft // 2, n_mels=n_mels))
                labels.append(digit)
                spk.append(s)
                snr.append(level)
                pitch.append(p)
                rate.append(r)

    digits = load_digits()
    meta = _metadata(sr, window_s, n_fft, n_mels, frames, snrs_db, seed, speakers, heldout_variants)
    arrays = {
        "audio": np.stack(feats).astype(np.float16),
        "audio_label": np.asarray(labels, dtype=np.int64),
        "audio_speaker": np.asarray(spk, dtype=np.int64),
        "audio_heldout": np.asarray([heldout_flags[s] for s in spk]),
        "audio_snr_db": np.asarray(snr, dtype=np.float32),
        "audio_pitch": np.asarray(pitch, dtype=np.int16),
        "audio_rate": np.asarray(rate, dtype=np.int16),
        "image": digits.data.astype(np.uint8),
        "image_label": digits.target.astype(np.int64),
        "meta": np.asarray(json.dumps(meta)),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return meta
