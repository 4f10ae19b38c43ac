"""RAVDESS emotion recognition in the layout of the MFH code (Xue et al., ICLR 2023; ``ravdess/`` of its repository).

    root/aud_features/<audio>.npy     (40, 256) audio features  -> "audio" float32 (1, 40, 256), (x - mean) / std
    root/vid_features/<image>         a face image (JPEG/PNG)   -> "image" float32 (3, H, W), RGB, ImageNet-normalised
    root/data_file/spa_dl.csv         train   (header line audio,image,label; names relative to the folders above)
    root/data_file/spa_val.csv        val
    root/data_file/spa_test.csv       test

What the MFH loader does, and we do: the audio array gets a channel axis and is normalised with
mean -10.59 and std 85.66 (their constants, parameters here); the image is decoded to RGB,
scaled to [0, 1] and normalised with ImageNet's channel mean and std, not resized. Labels are
integer class ids (8 emotions). Their loader also swaps time columns 0 and 2 of the audio
features (a leftover of a BGR -> RGB swap); we do not.

Checks: the CSV header (three columns read by position, as the MFH code does; a first line of data or
the three names in another order are refused), each row's three fields, labels in ``[0, num_classes)`` (file and line
named), every listed file present (when the splits are built); per item the audio shape and
finiteness, and the image decodes (and has ``image_size`` when given).
"""

from __future__ import annotations

import csv
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
    member_path,
    read_image,
    read_npy,
    require_files,
    split_transforms,
)

CSV_FILES = {"train": "spa_dl.csv", "val": "spa_val.csv", "test": "spa_test.csv"}
HEADER = ("audio", "image", "label")
AUDIO_SHAPE = (40, 256)
AUDIO_MEAN, AUDIO_STD = -10.59, 85.66  # the MFH code's normalisation of the audio features


class RavdessDataset(FileDataset):
    """One split of the MFH RAVDESS layout (see the module docstring)."""

    task = "classification"
    modalities = ("audio", "image")

    def __init__(
        self,
        rows: list[tuple[Path, Path, int]],
        num_classes: int,
        audio_mean: float = AUDIO_MEAN,
        audio_std: float = AUDIO_STD,
        image_size: tuple[int, int] | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform)
        self.rows, self.num_classes = rows, num_classes
        self.audio_mean, self.audio_std, self.image_size = audio_mean, audio_std, image_size

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int) -> Item:
        audio_path, image_path, label = self.rows[index]
        audio = read_npy(audio_path, "audio features")
        if audio.shape != AUDIO_SHAPE:
            raise DataError(f"{audio_path}: audio features have shape {audio.shape}; expected {AUDIO_SHAPE}")
        rgb = read_image(image_path, ("RGB", "L"), "face")
        if rgb.ndim == 2:  # a grey JPEG: three equal channels, as OpenCV's imread gives
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        if self.image_size is not None and rgb.shape[:2] != tuple(self.image_size):
            raise DataError(f"{image_path}: image is {rgb.shape[0]}x{rgb.shape[1]} (HxW); expected {self.image_size}")
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0
        return {
            "audio": (torch.from_numpy(audio.astype(np.float32))[None] - self.audio_mean) / self.audio_std,
            "image": imagenet_normalized(image),
            "label": torch.tensor(label, dtype=torch.int64),
        }


def read_split_csv(path: Path, audio_dir: Path, image_dir: Path, num_classes: int) -> list[tuple[Path, Path, int]]:
    """Rows (audio path, image path, label) of one ``spa_*.csv``; every problem names the file and line."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found (columns {','.join(HEADER)})")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from err
    lines = [row for row in lines if any(cell.strip() for cell in row)]
    if not lines:
        raise DataError(f"{path}: empty; expected a header line {','.join(HEADER)} and one row per example")
    header = tuple(c.strip().lower() for c in lines[0])
    # the MFH code reads columns by position (pandas: line 1 is the header, whatever its names), so other names
    # pass; a first line of data (it would be dropped) and the expected names in another order are refused
    if len(header) != 3 or header[2].lstrip("+-").isdigit() or (set(header) == set(HEADER) and header != HEADER):
        raise DataError(f"{path}: line 1 is {','.join(lines[0])!r}; expected the header {','.join(HEADER)}")
    if len(lines) == 1:
        raise DataError(f"{path}: the split is empty (a header and no rows)")
    rows = []
    for lineno, row in enumerate(lines[1:], start=2):
        where = f"{path}, line {lineno}"
        if len(row) != 3:
            raise DataError(f"{where}: expected 3 fields ({','.join(HEADER)}), got {len(row)}")
        audio, image, label = (c.strip() for c in row)
        try:
            y = int(label)
        except ValueError:
            raise DataError(f"{where}: label {label!r} is not an integer class id") from None
        if not 0 <= y < num_classes:
            raise DataError(f"{where}: label {y} is out of range; expected 0..{num_classes - 1}")
        rows.append((member_path(audio_dir, audio, where), member_path(image_dir, image, where), y))
    return rows


def ravdess_splits(
    root: str | Path,
    num_classes: int = 8,
    audio_mean: float = AUDIO_MEAN,
    audio_std: float = AUDIO_STD,
    image_size: tuple[int, int] | None = None,
    transforms: Mapping[str, Transform | None] | None = None,
) -> FileSplits:
    """Train/val/test :class:`RavdessDataset` of ``root`` (the MFH code's ``ravdess/data`` folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: RAVDESS folder not found")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DataError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    if not (np.isfinite(audio_std) and audio_std > 0):
        raise DataError(f"audio_std: expected a positive number, got {audio_std!r}")
    audio_dir, image_dir = root / "aud_features", root / "vid_features"
    for d in (audio_dir, image_dir, root / "data_file"):
        if not d.is_dir():
            raise DataError(
                f"{d}: folder not found; the MFH RAVDESS layout holds aud_features, vid_features, data_file"
            )
    transform = split_transforms(transforms)
    out = []
    for split in SPLITS:
        rows = read_split_csv(root / "data_file" / CSV_FILES[split], audio_dir, image_dir, num_classes)
        require_files([r[0] for r in rows], f"{split} split's audio")
        require_files([r[1] for r in rows], f"{split} split's image")
        out.append(RavdessDataset(rows, num_classes, audio_mean, audio_std, image_size, transform[split]))
    return FileSplits(*out)
