"""Pixel rows: a segmentation pair as the advisor's inputs of one class per row.

The advisor's probes and pilot read one target per row; segmentation has a class per pixel. :func:`pixel_rows`
samples labelled pixels of each image and makes each a row: its ``patch x patch`` neighbourhood in each modality
(channels x patch x patch values, 0 beyond the image border) and its class. A one-hidden-layer MLP on such rows is a
fully convolutional net (one ``patch x patch`` convolution, then a 1 x 1 one) evaluated at the sampled pixels, so
the pilot's teacher and students are small segmentation nets. From Python::

    rows, y = pixel_rows({"rgb": rgb, "depth": depth}, label, patch=5, per_image=10)   # (N, C, H, W) each
    advice = advise(rows["rgb"], rows["depth"], y, num_classes=4)                     # depth -> rgb

Pixels of one image are not independent examples, so read the advice's row counts as pixels, not scenes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DataError


def pixel_rows(
    images: dict[str, Tensor],
    target: Tensor,
    patch: int = 5,
    per_image: int = 10,
    ignore_index: int = 255,
    seed: int = 0,
) -> tuple[dict[str, Tensor], Tensor]:
    """``({modality: (M, C * patch * patch) float rows}, (M,) classes)`` of up to ``per_image`` labelled pixels drawn
    at random (seeded) from each image; ``images``: ``{name: (N, C, H, W) or (N, H, W)}``, ``target``: ``(N, H, W)``
    classes, ``ignore_index`` marking unlabelled pixels (never drawn). Rows are in image order, a pixel's values
    channel by channel, each channel's patch row by row."""
    if not isinstance(patch, int) or patch < 1 or patch % 2 == 0:
        raise DataError(f"patch: expected an odd positive number of pixels, got {patch!r}")
    if not isinstance(per_image, int) or per_image < 1:
        raise DataError(f"per_image: expected a positive number of pixels, got {per_image!r}")
    if target.ndim != 3:
        raise DataError(f"target: expected (images, height, width) classes, got shape {tuple(target.shape)}")
    if not images:
        raise DataError("images: expected at least one modality")
    shaped = {}
    for name, x in images.items():
        x = x[:, None] if x.ndim == 3 else x
        if x.ndim != 4 or (x.shape[0], *x.shape[2:]) != tuple(target.shape):
            raise DataError(
                f"images[{name!r}]: expected (images, channels, height, width) matching the target's "
                f"{tuple(target.shape)}, got shape {tuple(images[name].shape)}"
            )
        shaped[name] = x.float()
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for n in range(len(target)):
        labelled = (target[n] != ignore_index).nonzero()
        picked.append(
            torch.cat(
                [
                    torch.full((min(per_image, len(labelled)), 1), n),
                    labelled[torch.randperm(len(labelled), generator=gen)[:per_image]],
                ],
                1,
            )
        )
    at = torch.cat(picked)
    if not len(at):
        raise DataError(f"target: no labelled pixel (every pixel is ignore_index {ignore_index})")
    half = patch // 2
    dy, dx = (d.reshape(-1) for d in torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij"))
    iy, ix = at[:, 1:2] + dy, at[:, 2:3] + dx  # (M, patch * patch) in padded coordinates
    rows = {}
    for name, x in shaped.items():
        padded = torch.nn.functional.pad(x, (half, half, half, half)).permute(0, 2, 3, 1)  # (N, H + 2h, W + 2h, C)
        values = padded[at[:, :1], iy, ix]  # (M, patch * patch, C)
        rows[name] = values.permute(0, 2, 1).reshape(len(at), -1)
    return rows, target[at[:, 0], at[:, 1], at[:, 2]].long()
