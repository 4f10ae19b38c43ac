"""VGGSound event classification in the layout of the MFH code (Xue et al., ICLR 2023; ``vggsound/`` of its repository).

    root/train/video_jpg/<name>.jpg     num_frames frames of 256x256, stacked top to bottom in one JPEG
    root/train/video_jpg/<name>/*.jpg   or: a folder of frame files (num_frames taken evenly, by name order)
    root/train/audio_npy/<name>.npy     16 kHz waveform, shape (1, L) or (L,)
    root/test/...                       the same; root/val/... optional (else a seeded val_fraction of train)
    label.json                          {"<class name>": <class id>, ...}

As in the MFH code: the clip's class name is the second-to-last ``_``-separated field of
``<name>`` (``name.split("_")[-2]``), looked up in the label JSON; frames become
``(num_frames, 3, 256, 256)`` float32, ``/255`` then ImageNet-normalised; the waveform is divided
by ``1.1 * max|w|`` and turned into an STFT magnitude ``|STFT|`` (Hann window of 1,024 samples,
hop 512, centred with reflect padding: nnAudio's ``STFT(output_format="Magnitude")`` defaults,
here computed with ``torch.stft``), shape ``(1, 513, 1 + L // 512)`` -- no log. Their training
code samples 32 frames (``num_frames``). Their test set of 10 s WAV clips is resized to 313 STFT
frames; ``audio_frames`` does the same (bilinear) for clips of another length, so items stack.
A silent clip (all zeros) is left at zero (their division would give NaN).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from .file_dataset import (
    SPLITS,
    FileDataset,
    FileSplits,
    Item,
    Transform,
    imagenet_normalized,
    read_image,
    read_npy,
    require_files,
    split_transforms,
)

SAMPLE_RATE, N_FFT, HOP = 16000, 1024, 512


def spectrogram(wave: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """``|STFT(w / (1.1 max|w|))|``, Hann window, centred (reflect pad): (L,) -> (1, n_fft // 2 + 1, 1 + L // hop)."""
    peak = wave.abs().max()
    if peak > 0:
        wave = wave / (1.1 * peak)
    window = torch.hann_window(n_fft, periodic=True, dtype=wave.dtype)
    z = torch.stft(
        wave,
        n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return z.abs()[None]


def clip_label(name: str, labels: Mapping[str, int], source: str) -> int:
    """The class id of a clip: ``labels[name.split("_")[-2]]``."""
    fields = name.split("_")
    if len(fields) < 2:
        raise DataError(f"{source}: clip name {name!r} has no class field (expected <...>_<class>_<...>)")
    if fields[-2] not in labels:
        raise DataError(f"{source}: class {fields[-2]!r} of clip {name!r} is not in the label JSON")
    return labels[fields[-2]]


class VGGSoundDataset(FileDataset):
    """Clips of one split of the MFH VGGSound layout (see the module docstring)."""

    task = "classification"
    modalities = ("video", "audio")

    def __init__(
        self,
        clips: list[tuple[Path, Path, int]],
        num_classes: int,
        num_frames: int = 32,
        frame_size: int = 256,
        audio_frames: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform)
        self.clips, self.num_classes = clips, num_classes
        self.num_frames, self.frame_size, self.audio_frames = num_frames, frame_size, audio_frames

    def __len__(self) -> int:
        return len(self.clips)

    def frames(self, video: Path) -> np.ndarray:
        """(num_frames, S, S, 3) uint8 from a stacked JPEG or a folder of frames."""
        t, s = self.num_frames, self.frame_size
        if video.is_dir():
            files = sorted(p for p in video.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if not files:
                raise DataError(f"{video}: no frame images (.jpg/.png) in the clip's folder")
            pick = np.linspace(0, len(files) - 1, t).round().astype(int)
            out = np.stack([read_image(files[i], ("RGB",), "video frame") for i in pick])
            if out.shape[1:3] != (s, s):
                raise DataError(f"{files[0]}: frame is {out.shape[2]}x{out.shape[1]}; expected {s}x{s} (frame_size)")
            return out
        stack = read_image(video, ("RGB",), "video")
        if stack.shape != (t * s, s, 3):
            raise DataError(
                f"{video}: image is {stack.shape[1]}x{stack.shape[0]} (WxH); expected {s}x{t * s}: "
                f"num_frames={t} frames of {s}x{s} stacked top to bottom"
            )
        return stack.reshape(t, s, s, 3)

    def load(self, index: int) -> Item:
        video_path, audio_path, label = self.clips[index]
        video = torch.from_numpy(np.ascontiguousarray(self.frames(video_path).transpose(0, 3, 1, 2))).float() / 255.0
        wave = read_npy(audio_path, "waveform")
        if wave.ndim == 2 and wave.shape[0] == 1:
            wave = wave[0]
        if wave.ndim != 1 or len(wave) <= N_FFT // 2:
            raise DataError(
                f"{audio_path}: waveform has shape {wave.shape}; expected (1, L) or (L,) "
                f"with L > {N_FFT // 2} samples at {SAMPLE_RATE} Hz"
            )
        spec = spectrogram(torch.from_numpy(wave.astype(np.float32)))
        if self.audio_frames is not None and spec.shape[-1] != self.audio_frames:
            size = (spec.shape[1], self.audio_frames)
            spec = torch.nn.functional.interpolate(spec[None], size, mode="bilinear", align_corners=False)[0]
        return {"video": imagenet_normalized(video), "audio": spec, "label": torch.tensor(label, dtype=torch.int64)}


def read_label_json(path: Path) -> dict[str, int]:
    """``{"class name": id}``; ids must be distinct integers 0..C-1."""
    if not path.is_file():
        raise DataError(f'{path}: label JSON not found ({{"<class name>": <class id>, ...}})')
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: expected a non-empty JSON object mapping class names to ids")
    ids = list(labels.values())
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ids) or sorted(ids) != list(range(len(ids))):
        raise DataError(f"{path}: class ids must be the distinct integers 0..{len(ids) - 1}")
    return labels


def list_clips(folder: Path, labels: Mapping[str, int]) -> list[tuple[Path, Path, int]]:
    """(video, audio, label) per clip of ``folder/video_jpg`` (sorted by name), its audio in ``folder/audio_npy``."""
    video_dir, audio_dir = folder / "video_jpg", folder / "audio_npy"
    for d in (video_dir, audio_dir):
        if not d.is_dir():
            raise DataError(f"{d}: folder not found; a VGGSound split holds video_jpg and audio_npy")
    clips = []
    for entry in sorted(video_dir.iterdir()):
        if entry.is_dir():
            name = entry.name
        elif entry.suffix == ".jpg":
            name = entry.stem
        else:
            continue
        clips.append((entry, audio_dir / f"{name}.npy", clip_label(name, labels, str(entry))))
    if not clips:
        raise DataError(f"{video_dir}: no clips (<name>.jpg files or <name>/ frame folders)")
    require_files([c[1] for c in clips], f"{folder.name} split's audio")
    return clips


def vggsound_splits(
    root: str | Path,
    label_json: str | Path | None = None,
    num_frames: int = 32,
    frame_size: int = 256,
    audio_frames: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    transforms: Mapping[str, Transform | None] | None = None,
) -> FileSplits:
    """Train/val/test :class:`VGGSoundDataset` of ``root`` (``train/``, ``test/``, optional ``val/``).

    ``label_json`` defaults to ``root/label.json``. Without ``root/val``, validation is a seeded
    ``val_fraction`` of the training clips (the MFH code has no validation split).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: VGGSound folder not found")
    for name, v in (("num_frames", num_frames), ("frame_size", frame_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{name}: expected a positive integer, got {v!r}")
    if audio_frames is not None and (
        isinstance(audio_frames, bool) or not isinstance(audio_frames, int) or audio_frames < 1
    ):
        raise DataError(f"audio_frames: expected a positive integer or None, got {audio_frames!r}")
    labels = read_label_json(Path(label_json) if label_json is not None else root / "label.json")
    transform = split_transforms(transforms)
    train, test = list_clips(root / "train", labels), list_clips(root / "test", labels)
    if (root / "val").is_dir():
        val = list_clips(root / "val", labels)
    else:
        if not 0 < val_fraction < 1:
            raise DataError(f"val_fraction: expected a share in (0, 1), got {val_fraction!r}")
        n_val = max(1, round(len(train) * val_fraction))
        if n_val >= len(train):
            raise DataError(f"{root / 'train'}: {len(train)} clips are too few to carve a validation split")
        order = np.random.default_rng(seed).permutation(len(train))
        val = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
    c = len(labels)
    return FileSplits(
        *(
            VGGSoundDataset(clips, c, num_frames, frame_size, audio_frames, transform[s])
            for s, clips in zip(SPLITS, (train, val, test))
        )
    )
