"""A small two-modality Gaussian task for the quick demo and the tests.

Each class has a mean in a shared latent space; modality ``a`` sees the latent through a
fixed random linear map plus noise, and so does modality ``b`` with its own map and
``noise_b`` (default: b is the noisier, weaker modality). A teacher on a+b beats a
student on b alone, which is the crossmodal KD setting in miniature.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from ...errors import ConfigError
from ...registry import DATASETS
from ..contracts.card import dataset_card
from ..contracts.dataset import DataSplits, Seed, splits_from_arrays


@DATASETS.register("toy-two-modality")
@dataset_card(
    modalities="a[16] (clean), b[16] (noisy) vectors",
    rows="1,200 rows (n), split 60/20/20",
    task="classification, 4 classes",
    source="a seeded Gaussian mixture generated in memory",
)
def toy_two_modality(
    seed: int = 0,
    n: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 1200,
    num_classes: Annotated[int, Field(strict=True, ge=2, le=1000)] = 4,
    latent_dim: Annotated[int, Field(strict=True, ge=1, le=4096)] = 8,
    dim_a: Annotated[int, Field(strict=True, ge=1, le=65536)] = 16,
    dim_b: Annotated[int, Field(strict=True, ge=1, le=65536)] = 16,
    noise_a: Annotated[float, Field(strict=True, ge=0, le=1e6, allow_inf_nan=False)] = 1.0,
    noise_b: Annotated[float, Field(strict=True, ge=0, le=1e6, allow_inf_nan=False)] = 2.0,
    data_seed: Seed = 1234,
) -> DataSplits:
    """``n`` examples; the data are fixed by ``data_seed``, the split by ``seed``."""
    if n < 5 * num_classes:  # the 60/20/20 split per class needs about 5 examples of each class
        raise ConfigError(
            f"data.params.n: {n} examples for {num_classes} classes leave a split without examples; "
            f"use n >= {5 * num_classes} (5 per class)"
        )
    g = torch.Generator().manual_seed(data_seed)
    means = torch.randn(num_classes, latent_dim, generator=g) * 1.5
    y = torch.arange(n) % num_classes
    z = means[y] + torch.randn(n, latent_dim, generator=g)
    map_a = torch.randn(latent_dim, dim_a, generator=g) / latent_dim**0.5
    map_b = torch.randn(latent_dim, dim_b, generator=g) / latent_dim**0.5
    xa = z @ map_a + noise_a * torch.randn(n, dim_a, generator=g)
    xb = z @ map_b + noise_b * torch.randn(n, dim_b, generator=g)
    return splits_from_arrays(
        {"a": xa, "b": xb},
        y,
        num_classes,
        seed=data_seed,
        name="toy-two-modality",
        description="toy-two-modality (synthetic Gaussian, a: clean, b: noisy):",
    )
