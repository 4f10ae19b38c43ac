"""RGB-D semantic segmentation from a folder, the layout NYU Depth V2 is commonly redistributed in.

    root/rgb/<stem>.png      8-bit RGB                          -> "rgb"   float32 (3, H, W) in [0, 1]
    root/depth/<stem>.png    16-bit grey (Pillow "I;16" / "I")  -> "depth" float32 (1, H, W) = value * depth_scale
    root/label/<stem>.png    8-bit class ids ("L" or "P")       -> "label" int64 (H, W); ignore_index = unlabelled
    root/train.txt, val.txt, test.txt   one stem per line

``depth_scale`` turns stored units into metres (default 1/1000: millimetres, as NYU's 16-bit
PNGs store them; 0 means no reading). Checks: every listed file exists (when the splits are
built); each image decodes, has the expected mode, and the depth and label maps have the RGB
image's size; label values are class ids < ``num_classes`` or ``ignore_index`` (the file and the
value are named); an ``ignore_index`` that is also a class id is refused.
"""

from __future__ import annotations

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
    member_path,
    read_image,
    require_files,
    split_transforms,
)

FOLDERS = ("rgb", "depth", "label")
DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I")
LABEL_MODES = ("L", "P")


class RGBDSegmentationDataset(FileDataset):
    """One split of an RGB-D segmentation folder (see the module docstring)."""

    task = "segmentation"
    modalities = ("rgb", "depth")

    def __init__(
        self,
        root: Path,
        stems: list[str],
        num_classes: int,
        ignore_index: int = 255,
        depth_scale: float = 1e-3,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform)
        self.root, self.stems = Path(root), list(stems)
        self.num_classes, self.ignore_index, self.depth_scale = num_classes, ignore_index, depth_scale

    def __len__(self) -> int:
        return len(self.stems)

    def paths(self, index: int) -> dict[str, Path]:
        stem = self.stems[index]
        return {k: self.root / k / f"{stem}.png" for k in FOLDERS}

    def load(self, index: int) -> Item:
        p = self.paths(index)
        rgb = read_image(p["rgb"], ("RGB",), "RGB")
        depth = read_image(p["depth"], DEPTH_MODES, "16-bit depth")
        label = read_image(p["label"], LABEL_MODES, "8-bit label")
        h, w = rgb.shape[:2]
        for name, arr in (("depth", depth), ("label", label)):
            if arr.shape[:2] != (h, w):
                raise DataError(
                    f"{p[name]}: {name} map is {arr.shape[1]}x{arr.shape[0]} (WxH) but its RGB image "
                    f"{p['rgb'].name} is {w}x{h}; they must be the same size"
                )
        bad = (label >= self.num_classes) & (label != self.ignore_index)
        if bad.any():
            y, x = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(
                f"{p['label']}: label {int(label[y, x])} at pixel (row {y}, col {x}) is not a class id "
                f"< num_classes={self.num_classes} nor ignore_index={self.ignore_index}"
            )
        return {
            "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0,
            "depth": torch.from_numpy(depth.astype(np.float32) * np.float32(self.depth_scale))[None],
            "label": torch.from_numpy(label.astype(np.int64)),
        }


def read_split_list(path: Path) -> list[str]:
    """Stems listed one per line (blank lines skipped); a missing or empty list is a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: split list not found (one file stem per line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: split list is not UTF-8 text ({err})") from err
    stems = [s.strip() for s in lines if s.strip()]
    if not stems:
        raise DataError(f"{path}: split list is empty")
    for s in stems:
        member_path(path.parent, s, str(path))  # no absolute names, no '..'
    return stems


def rgbd_folder_splits(
    root: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    depth_scale: float = 1e-3,
    transforms: Mapping[str, Transform | None] | None = None,
) -> FileSplits:
    """Train/val/test :class:`RGBDSegmentationDataset` of ``root`` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: RGB-D folder not found")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 256:
        raise DataError(f"num_classes: expected an integer in [2, 256] (8-bit label maps), got {num_classes!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
        raise DataError(f"ignore_index: expected an integer in [0, 255] (8-bit label maps), got {ignore_index!r}")
    if ignore_index < num_classes:
        raise DataError(
            f"ignore_index={ignore_index} collides with a real class id (classes are 0..{num_classes - 1}); "
            "choose an ignore_index >= num_classes (255 by default)"
        )
    if not (isinstance(depth_scale, (int, float)) and np.isfinite(depth_scale) and depth_scale > 0):
        raise DataError(f"depth_scale: expected a positive number (metres per stored unit), got {depth_scale!r}")
    for folder in FOLDERS:
        if not (root / folder).is_dir():
            raise DataError(
                f"{root / folder}: folder not found; an RGB-D folder holds {', '.join(FOLDERS)} "
                "and train.txt, val.txt, test.txt"
            )
    transform = split_transforms(transforms)
    out = []
    for split in SPLITS:
        ds = RGBDSegmentationDataset(
            root,
            read_split_list(root / f"{split}.txt"),
            num_classes,
            ignore_index,
            float(depth_scale),
            transform[split],
        )
        require_files([p for i in range(len(ds)) for p in ds.paths(i).values()], f"{split} split's")
        out.append(ds)
    return FileSplits(*out)
