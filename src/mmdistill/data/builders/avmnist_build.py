"""Build AV-MNIST (Vielzeuf et al., 2018; MultiBench's layout) from MNIST and the Free Spoken Digit Dataset.

    mmdistill data build av-mnist --mnist DIR --fsdd DIR --out DIR

Inputs, in their standard download layouts: ``DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``
(MNIST IDX files) and ``DIR/{digit}_{speaker}_{index}.wav`` (FSDD; index 0-4 test, 5-49 train).
Output, the folder :func:`mmdistill.data.formats.loaders.avmnist` (and MultiBench's ``get_data.py``) reads::

    image/train_data.npy  (60000, 784) float32, 0..255     audio/train_data.npy  (60000, 112, 112) float16, 0..255
    image/test_data.npy   (10000, 784)                     audio/test_data.npy   (10000, 112, 112)
    train_labels.npy, test_labels.npy (N,) int64           build.json  (parameters, counts, timings)

* **image**: AV-MNIST's degradation, "75% of the energy removed by PCA": with ``mu`` and the
  eigenvectors ``V`` of the *training* images' covariance (eigenvalues ``l`` descending), the top
  ``k = min{k : sum_{i<=k} l_i / sum_i l_i >= 0.75}`` components are projected out,
  ``x' = x - (x - mu) V_k V_k^T`` (the same rule as AV-Digits, :func:`av_digits.remove_top_energy`),
  then mapped affinely to 0..255 with the training minimum and maximum.
* **audio**: each recording is peak-normalised, mixed with white Gaussian noise at ``snr_db`` (default -6 dB)
  (relative to the recording's mean power; fresh noise for every paired row, seeded), centre
  padded/cropped to 6,438 samples (0.80 s at 8 kHz) and turned into a log power spectrogram:
  Hann STFT, 222-sample windows, hop 56, no boundary padding, so 112 frequency bins (0-4 kHz) x
  112 frames; ``10 log10(|Z|^2 + 1e-10)`` clipped to [ref - 80 dB, ref] (``ref``: the largest
  value over the clean training recordings) and mapped to 0..255.
* **pairing**: each image is paired with a recording of the same digit from its own split (test
  images only with test recordings), each recording used once before any repeats, seeded.

The output folder is written as ``.<name>.partial-XXXX`` beside it and renamed into place when
complete, under a lock that refuses a second build into the same folder; an existing folder is
refused unless it is empty, or a finished build of this command and ``overwrite`` is set, and a
file put into it during the build is never deleted (:mod:`mmdistill.data.builders.build_output`).
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...io import write_json
from ..formats.av_digits import pair_within_class
from .build_output import BuiltFolder, build_folder

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # magic numbers: ubyte data, 3 dims / 1 dim
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
RATE, SAMPLES, NPERSEG, HOP, SIDE = 8000, 6438, 222, 56, 112  # 222 + 111 * 56 = 6438 samples -> 112 frames
DB_RANGE = 80.0
MARKER = "build.json"
CHUNK = 256  # paired rows per spectrogram chunk (scipy's STFT holds about 0.5 MB per row while it runs)


def read_idx(path: Path, magic: int, tail: tuple[int, ...]) -> np.ndarray:
    """A gzipped IDX file as uint8, checked: its magic number, dimension count, trailing shape and length."""
    if not path.is_file():
        raise DataError(f"{path}: MNIST file not found")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from err
    ndim = 1 + len(tail)
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(f"{path}: IDX magic number 0x{got:08x}, expected 0x{magic:08x} (ubyte, {ndim} dims)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if shape[1:] != tail:
        raise DataError(f"{path}: IDX shape {shape}, expected (N, {', '.join(map(str, tail))})")
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"{path}: {len(body)} data bytes, but the header's shape {shape} needs {int(np.prod(shape))}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def read_mnist(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images (N, 784) uint8, labels (N,) int64)} from the four IDX files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--mnist {folder}: not a folder")
    out = {}
    for split, (images, labels) in MNIST_FILES.items():
        x = read_idx(folder / images, IDX_IMAGES, (28, 28)).reshape(-1, 784)
        y = read_idx(folder / labels, IDX_LABELS, ()).astype(np.int64)
        if len(x) != len(y):
            raise DataError(f"{folder / labels}: {len(y)} labels, but {folder / images} holds {len(x)} images")
        if y.max() > 9:
            raise DataError(f"{folder / labels}: label {int(y.max())} outside 0..9")
        out[split] = (x, y)
    return out


def read_wav(path: Path) -> np.ndarray:
    """A mono 8 kHz WAV as float32 in [-1, 1] (soundfile if installed, else scipy), peak-normalised."""
    try:
        import soundfile

        x, rate = soundfile.read(str(path), dtype="float32")
    except ImportError:
        from scipy.io import wavfile

        try:
            rate, x = wavfile.read(path)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable WAV file ({err})") from err
        x = x.astype(np.float32) / (32768.0 if x.dtype == np.int16 else 1.0)
    except RuntimeError as err:  # soundfile's error for a malformed file
        raise DataError(f"{path}: not a readable WAV file ({err})") from err
    if x.ndim != 1:
        raise DataError(f"{path}: expected a mono recording, got {x.shape[1]} channels")
    if rate != RATE:
        raise DataError(f"{path}: sample rate {rate} Hz, expected {RATE} Hz (FSDD)")
    if len(x) == 0 or not np.abs(x).max() > 0:
        raise DataError(f"{path}: the recording is empty or silent")
    return x / np.abs(x).max()


def read_fsdd(folder: str | Path, test_below: int = 5) -> dict[str, tuple[list[np.ndarray], np.ndarray, list[str]]]:
    """{split: (recordings, digits, speakers)}: FSDD's official split, index < ``test_below`` is test."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--fsdd {folder}: not a folder")
    paths = sorted(folder.glob("*.wav"))
    if not paths:
        raise DataError(f"--fsdd {folder}: no .wav files (expected {{digit}}_{{speaker}}_{{index}}.wav)")
    out: dict[str, tuple[list, list, list]] = {"train": ([], [], []), "test": ([], [], [])}
    for p in paths:
        m = FSDD_NAME.match(p.name)
        if not m:
            raise DataError(f"{p}: file name does not follow FSDD's {{digit}}_{{speaker}}_{{index}}.wav")
        split = "test" if int(m.group(3)) < test_below else "train"
        out[split][0].append(read_wav(p))
        out[split][1].append(int(m.group(1)))
        out[split][2].append(m.group(2))
    for split, (_, digits, _) in out.items():
        missing = sorted(set(range(10)) - set(digits))
        if missing:
            raise DataError(f"--fsdd {folder}: split {split!r} has no recording of digit(s) {missing}")
    return {s: (w, np.array(d, dtype=np.int64), sp) for s, (w, d, sp) in out.items()}


def fit_energy_removal(train: np.ndarray, fraction: float, chunk: int = 10000) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, V_k, k): the top principal components of ``train`` holding ``fraction`` of its variance."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"--energy-removed must lie in [0, 1), got {fraction}")
    mu = train.mean(0, dtype=np.float64)
    cov = np.zeros((train.shape[1],) * 2)
    for a in range(0, len(train), chunk):
        c = train[a : a + chunk] - mu
        cov += c.T @ c
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    k = 0 if fraction == 0 else int(np.searchsorted(np.cumsum(vals) / vals.sum(), fraction) + 1)
    return mu, vecs[:, :k], k


def spectrograms(waves: list[np.ndarray], noise_std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 112, 112) float32 log power spectrograms in dB of centre padded/cropped ``waves`` plus white noise."""
    from scipy.signal import stft

    x = np.zeros((len(waves), SAMPLES), np.float32)
    for i, w in enumerate(waves):
        if len(w) >= SAMPLES:
            a = (len(w) - SAMPLES) // 2
            x[i] = w[a : a + SAMPLES]
        else:
            a = (SAMPLES - len(w)) // 2
            x[i, a : a + len(w)] = w
    x += rng.standard_normal(x.shape, dtype=np.float32) * noise_std[:, None].astype(np.float32)
    _, _, z = stft(x, fs=RATE, window="hann", nperseg=NPERSEG, noverlap=NPERSEG - HOP, boundary=None, padded=False)
    assert z.shape[1:] == (SIDE, SIDE), z.shape
    return (10.0 * np.log10(np.abs(z) ** 2 + 1e-10)).astype(np.float32)


BUILT = BuiltFolder(
    MARKER,
    outputs=("image", "audio", "train_labels.npy", "test_labels.npy"),
    made_by="`mmdistill data build av-mnist`",
    finished=f"a finished AV-MNIST build ({MARKER}); pass --overwrite to rebuild",
)


def build_av_mnist(
    mnist: str | Path,
    fsdd: str | Path,
    out: str | Path,
    seed: int = 0,
    snr_db: float | None = -6.0,
    energy_removed: float = 0.75,
    limit: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda part: None,
) -> dict:
    """Write AV-MNIST into ``out`` (see the module docstring); returns what ``build.json`` records.

    ``limit``: keep only the first ``limit`` training and ``limit // 6`` test images (quick builds and tests);
    ``snr_db`` ``None``: no noise; ``log`` hears each finished part (the inputs read, each split written).
    """
    t0 = time.perf_counter()
    with build_folder(out, BUILT, overwrite, label=f"--out {out}") as staging:
        images, sounds = read_mnist(mnist), read_fsdd(fsdd)
        if limit is not None:
            if limit < 10:
                raise DataError(f"--limit must be at least 10, got {limit}")
            (x_train, y_train), (x_test, y_test), n_test = images["train"], images["test"], max(10, limit // 6)
            images = {"train": (x_train[:limit], y_train[:limit]), "test": (x_test[:n_test], y_test[:n_test])}
        mu, v, k = fit_energy_removal(images["train"][0].astype(np.float32), energy_removed)
        mu, v = mu.astype(np.float32), v.astype(np.float32)
        degrade = {s: images[s][0] - ((images[s][0] - mu) @ v) @ v.T for s in images}  # float32: 188 MB for train
        lo, hi = float(degrade["train"].min()), float(degrade["train"].max())
        n_images, n_sounds = (sum(len(parts[s][0]) for s in parts) for parts in (images, sounds))
        log(f"read {n_images} MNIST images and {n_sounds} FSDD recordings; {k} principal components to remove")
        meta = _write(staging, images, sounds, degrade, (lo, hi), _reference_db(sounds["train"][0]), seed, snr_db, log)
        meta.update(
            {
                "mnist": str(mnist),
                "fsdd": str(fsdd),
                "energy_removed": energy_removed,
                "pca_components_removed": k,
                "limit": limit,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        write_json(staging / MARKER, meta)
    return meta


def _reference_db(waves: list[np.ndarray]) -> float:
    """The largest log power over the clean training recordings (the top of the spectrograms' 80 dB range)."""
    return max(
        float(spectrograms(waves[a : a + CHUNK], np.zeros(len(waves[a : a + CHUNK])), np.random.default_rng(0)).max())
        for a in range(0, len(waves), CHUNK)
    )


def _write(
    tmp: Path,
    images: dict,
    sounds: dict,
    degrade: dict,
    image_range: tuple[float, float],
    ref: float,
    seed: int,
    snr_db: float | None,
    log: Callable[[str], None],
) -> dict:
    """The arrays of both splits into ``tmp``; returns the build record (without the caller's fields)."""
    lo, hi = image_range
    (tmp / "image").mkdir()
    (tmp / "audio").mkdir()
    counts = {}
    for i, split in enumerate(("train", "test")):
        x = (degrade[split] - lo) * (255.0 / (hi - lo))
        np.save(tmp / "image" / f"{split}_data.npy", x.astype(np.float32))
        y = images[split][1]
        np.save(tmp / f"{split}_labels.npy", y)
        waves, digits, _ = sounds[split]
        rng = np.random.default_rng([seed, i])
        pair = pair_within_class(y, digits, np.arange(len(digits)), rng)
        with open(
            tmp / "audio" / f"{split}_data.npy", "wb"
        ) as f:  # header, then rows in chunks: RSS stays at one chunk
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f2", "fortran_order": False, "shape": (len(y), SIDE, SIDE)}
            )
            for a in range(0, len(y), CHUNK):
                rows = pair[a : a + CHUNK]
                w = [waves[r] for r in rows]
                power = np.array([np.mean(np.square(x)) for x in w])
                std = np.zeros(len(w)) if snr_db is None else np.sqrt(power / 10 ** (snr_db / 10))
                db = spectrograms(w, std, rng)
                f.write(
                    ((np.clip(db, ref - DB_RANGE, ref) - (ref - DB_RANGE)) * (255.0 / DB_RANGE)).astype("<f2").tobytes()
                )
        np.save(tmp / "audio" / f"{split}_pairing.npy", pair)
        counts[split] = {"images": len(y), "recordings": len(waves), "recordings_used": int(len(np.unique(pair)))}
        log(f"{split} split: {len(y)} image+audio pairs written")
    return {
        "dataset": "av-mnist (MNIST + FSDD)",
        "seed": seed,
        "snr_db": snr_db,
        "image_range_train": [lo, hi],
        "spectrogram": {
            "rate": RATE,
            "samples": SAMPLES,
            "nperseg": NPERSEG,
            "hop": HOP,
            "db_range": DB_RANGE,
            "ref_db": ref,
        },
        "counts": counts,
    }
