"""Procedural RGB-D scenes where depth disambiguates classes: the MFH paper's RGB-D -> RGB failure case, small.

Each scene is a background wall with 1..``max_objects`` shapes in front of it, drawn far to near:

    class 0  background   grey, tinted, shaded      depth 4.0-6.0 m (a tilted plane)
    class 1  near box     red-orange rectangles     depth 1.0-2.0 m
    class 2  far box      the same colours, sizes   depth 2.6-3.6 m
    class 3  ball         blue disks                depth 1.0-3.6 m

Classes 1 and 2 have identical colour, shape and size distributions (size does not shrink with
distance), so RGB alone cannot tell them apart (at best about half of their pixels), while depth
separates them with one threshold; class 3 is told by colour and shape. A 1-pixel ring around
each object is unlabelled (``ignore_index`` 255), as object boundaries often are in NYU Depth V2.
Optional noise: Gaussian on RGB (``rgb_noise``, of the 0..1 range) and on depth (``depth_noise``,
metres), and ``depth_dropout``, the fraction of pixels with no depth reading (stored 0).

Scene ``i`` depends only on ``(seed, i)``: :func:`generate_rgbd_scenes` returns the arrays;
:func:`rgbd_scene_splits` serves them from memory;
:func:`write_rgbd_scenes` writes the layout :mod:`~mmdistill.data.formats.rgbd_folder` reads (depth in
millimetres, 16-bit), atomically, into a folder it marks with ``rgbd_scenes.json``.
:func:`pixel_probe_miou` is a cheap check of what each input carries: a per-pixel linear softmax
probe fitted on training pixels and scored (mIoU) on test pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from ...io import write_json, write_text
from ..builders.build_output import BuiltFolder, build_folder
from ..formats.file_dataset import SPLITS, FileDataset, FileSplits, Item, Transform, split_transforms

MARKER = "rgbd_scenes.json"
BUILT = BuiltFolder(
    MARKER,
    outputs=("rgb", "depth", "label", *(f"{split}.txt" for split in SPLITS)),
    made_by="write_rgbd_scenes",
    finished=f"RGB-D scenes already ({MARKER}); pass overwrite=True to replace them",
)
CLASSES = ("background", "near box", "far box", "ball")
IGNORE_INDEX = 255
NEAR_M, FAR_M, BALL_M, WALL_M = (1.0, 2.0), (2.6, 3.6), (1.0, 3.6), (4.0, 6.0)


def _scene(rng: np.random.Generator, size: int, max_objects: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One clean scene: rgb (H, W, 3) in [0, 1], depth (H, W) metres, label (H, W) uint8."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1) - 0.5
    tint = rng.uniform(0.35, 0.65) + rng.uniform(-0.05, 0.05, 3)
    rgb = np.clip(tint + rng.uniform(-0.15, 0.15) * yy[..., None], 0, 1)
    d0 = rng.uniform(WALL_M[0] + 0.5, WALL_M[1] - 0.5)
    depth = d0 + rng.uniform(-0.8, 0.8) * yy + rng.uniform(-0.8, 0.8) * xx
    label = np.zeros((size, size), np.uint8)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, 4))
        lo, hi = {1: NEAR_M, 2: FAR_M, 3: BALL_M}[cls]
        objects.append(
            (
                rng.uniform(lo, hi),
                cls,
                rng.uniform(-0.4, 0.4, 2),
                rng.uniform(0.08, 0.18),
                rng.uniform(0.7, 1.4),
                rng.uniform(0, 1, 3),
            )
        )
    for z, cls, (cy, cx), r, aspect, u in sorted(objects, key=lambda o: -o[0]):  # far first: near ones occlude
        if cls == 3:
            rho2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
            mask = rho2 <= 1.0
            colour = np.array([0.05 + 0.2 * u[0], 0.2 + 0.25 * u[1], 0.6 + 0.3 * u[2]])
            surface = z - 0.5 * r * np.sqrt(np.clip(1.0 - rho2, 0, 1))  # a sphere's bulge
        else:
            mask = (np.abs(yy - cy) <= r * aspect) & (np.abs(xx - cx) <= r / aspect)
            colour = np.array([0.6 + 0.3 * u[0], 0.1 + 0.25 * u[1], 0.05 + 0.2 * u[2]])
            surface = np.full_like(depth, z)
        shade = 1.0 - 0.25 * (yy - cy)  # lit from above, the same for every class
        rgb[mask] = np.clip(colour * shade[mask][:, None], 0, 1)
        depth[mask] = surface[mask]
        label[mask] = cls
    return rgb, depth, label


def _boundaries(label: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class."""
    edge = np.zeros(label.shape, bool)
    dy, dx = label[1:, :] != label[:-1, :], label[:, 1:] != label[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def generate_rgbd_scenes(
    n_scenes: int = 300,
    size: int = 64,
    seed: int = 0,
    max_objects: int = 4,
    rgb_noise: float = 0.03,
    depth_noise: float = 0.02,
    depth_dropout: float = 0.0,
    ignore_boundary: bool = True,
) -> dict[str, np.ndarray]:
    """``{"rgb": (N, H, W, 3) uint8, "depth": (N, H, W) uint16 millimetres, "label": (N, H, W) uint8}``."""
    _check_params(n_scenes, size, max_objects, rgb_noise, depth_noise, depth_dropout)
    rgb = np.empty((n_scenes, size, size, 3), np.uint8)
    depth = np.empty((n_scenes, size, size), np.uint16)
    label = np.empty((n_scenes, size, size), np.uint8)
    for i in range(n_scenes):
        rng = np.random.default_rng([seed, i])
        c, d, y = _scene(rng, size, max_objects)
        c = c + rgb_noise * rng.standard_normal(c.shape)
        d = d + depth_noise * rng.standard_normal(d.shape)
        d[rng.random(d.shape) < depth_dropout] = 0.0
        if ignore_boundary:
            y[_boundaries(y)] = IGNORE_INDEX
        rgb[i] = np.round(np.clip(c, 0, 1) * 255).astype(np.uint8)
        depth[i] = np.round(np.clip(d, 0, 65.535) * 1000).astype(np.uint16)
        label[i] = y
    return {"rgb": rgb, "depth": depth, "label": label}


def _check_params(n_scenes, size, max_objects, rgb_noise, depth_noise, depth_dropout) -> None:
    for name, v, lo in (("n_scenes", n_scenes, 3), ("size", size, 8), ("max_objects", max_objects, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise DataError(f"{name}: expected an integer >= {lo}, got {v!r}")
    for name, v in (("rgb_noise", rgb_noise), ("depth_noise", depth_noise)):
        if not (isinstance(v, (int, float)) and 0 <= v < 10):
            raise DataError(f"{name}: expected a number in [0, 10), got {v!r}")
    if not (isinstance(depth_dropout, (int, float)) and 0 <= depth_dropout < 1):
        raise DataError(f"depth_dropout: expected a fraction in [0, 1), got {depth_dropout!r}")


def split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Scenes per split: train, val, test (each at least 1)."""
    if len(fractions) != 3 or not all(0 < f < 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"fractions: expected three shares in (0, 1) summing to 1, got {fractions!r}")
    n_val, n_test = max(1, round(n * fractions[1])), max(1, round(n * fractions[2]))
    return n - n_val - n_test, n_val, n_test


class RGBDSceneDataset(FileDataset):
    """Scenes held in memory, with the items :class:`~mmdistill.data.formats.rgbd_folder.RGBDSegmentationDataset`
    gives."""

    task = "segmentation"
    modalities = ("rgb", "depth")
    num_classes = len(CLASSES)
    ignore_index = IGNORE_INDEX

    def __init__(self, arrays: dict[str, np.ndarray], transform: Transform | None = None) -> None:
        super().__init__(transform)
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["label"])

    def load(self, index: int) -> Item:
        return {
            "rgb": torch.from_numpy(np.ascontiguousarray(self.arrays["rgb"][index].transpose(2, 0, 1))).float() / 255.0,
            "depth": torch.from_numpy(self.arrays["depth"][index].astype(np.float32) * np.float32(1e-3))[None],
            "label": torch.from_numpy(self.arrays["label"][index].astype(np.int64)),
        }


def rgbd_scene_splits(
    n_scenes: int = 300,
    size: int = 64,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    transforms: dict[str, Transform | None] | None = None,
    **scene_params,
) -> FileSplits:
    """Train/val/test splits of generated scenes in memory: the items the folder loader reads from the written set."""
    arrays = generate_rgbd_scenes(n_scenes, size, seed, **scene_params)
    transform = split_transforms(transforms)
    bounds = np.cumsum((0, *split_sizes(n_scenes, fractions)))
    return FileSplits(
        *(
            RGBDSceneDataset({k: v[a:b] for k, v in arrays.items()}, transform[s])
            for s, a, b in zip(SPLITS, bounds[:-1], bounds[1:])
        )
    )


def write_rgbd_scenes(
    out: str | Path,
    n_scenes: int = 300,
    size: int = 64,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    overwrite: bool = False,
    **scene_params,
) -> dict:
    """Write scenes into ``out`` in the :mod:`~mmdistill.data.formats.rgbd_folder` layout; returns what the marker
    records.

    Written as ``.<name>.partial-XXXX`` beside ``out`` and renamed into place when complete, under a lock that
    refuses a second build into the same folder (:mod:`mmdistill.data.builders.build_output`). A non-empty ``out`` that
    this function did not make (no ``rgbd_scenes.json``) is refused and left untouched; a previous set of ours is
    replaced only with ``overwrite``; a file put into ``out`` during the build is never deleted.
    """
    from PIL import Image

    with build_folder(out, BUILT, overwrite) as staging:
        arrays = generate_rgbd_scenes(n_scenes, size, seed, **scene_params)
        sizes = split_sizes(n_scenes, fractions)
        for folder in ("rgb", "depth", "label"):
            (staging / folder).mkdir()
        stems = [f"scene_{i:05d}" for i in range(n_scenes)]
        for i, stem in enumerate(stems):
            Image.fromarray(arrays["rgb"][i]).save(staging / "rgb" / f"{stem}.png")
            Image.fromarray(arrays["depth"][i]).save(staging / "depth" / f"{stem}.png")  # uint16 -> mode "I;16"
            Image.fromarray(arrays["label"][i]).save(staging / "label" / f"{stem}.png")
        start = 0
        for split, k in zip(SPLITS, sizes):
            write_text(staging / f"{split}.txt", "".join(f"{s}\n" for s in stems[start : start + k]))
            start += k
        meta = {
            "generator": "mmdistill.data.generated.rgbd_scenes",
            "n_scenes": n_scenes,
            "size": size,
            "seed": seed,
            "splits": dict(zip(SPLITS, sizes)),
            "num_classes": len(CLASSES),
            "classes": list(CLASSES),
            "ignore_index": IGNORE_INDEX,
            "depth_unit": "millimetre",
            **scene_params,
        }
        write_json(staging / MARKER, meta)
    return meta


def pixel_probe_miou(
    arrays: dict[str, np.ndarray],
    inputs: tuple[str, ...],
    n_train: int,
    max_pixels: int = 20000,
    steps: int = 100,
    seed: int = 0,
) -> float:
    """Test mIoU (%) of a per-pixel linear softmax probe on ``inputs`` (``"rgb"``, ``"depth"``).

    Fitted (L-BFGS, cross-entropy) on up to ``max_pixels`` labelled pixels of the first
    ``n_train`` scenes, scored on every labelled pixel of the others; a class absent from both
    prediction and truth is left out of the mean.
    """

    def features(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        cols = []
        if "rgb" in inputs:
            cols.append(arrays["rgb"][sl].reshape(-1, 3) / 255.0)
        if "depth" in inputs:
            cols.append(arrays["depth"][sl].reshape(-1, 1) / 1000.0)
        x, y = np.concatenate(cols, 1), arrays["label"][sl].reshape(-1).astype(np.int64)
        keep = y != IGNORE_INDEX
        return torch.as_tensor(x[keep], dtype=torch.float64), torch.as_tensor(y[keep])

    x, y = features(slice(0, n_train))
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(y), generator=g)[:max_pixels]
    x, y = x[pick], y[pick]
    mu, sd = x.mean(0), x.std(0) + 1e-8
    k = len(CLASSES)
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(((x - mu) / sd) @ w + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    xt, yt = features(slice(n_train, None))
    with torch.no_grad():
        pred = (((xt - mu) / sd) @ w + b).argmax(1)
    ious = []
    for c in range(k):
        inter, union = ((pred == c) & (yt == c)).sum().item(), ((pred == c) | (yt == c)).sum().item()
        if union:
            ious.append(inter / union)
    return 100.0 * float(np.mean(ious))
