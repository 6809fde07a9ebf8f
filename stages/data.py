"""MNIST as tensors on the training device, and batch augmentation there.

The IDX files are parsed once into uint8 tensors and normalized once; batches
are slices of a `randperm`, augmented as a whole with one affine grid per
image. No Dataset, DataLoader or per-sample PIL work anywhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from stages import idx
from stages.errors import StageError
from stages.model import MEAN, STD


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), standardized with the training set's MEAN and STD."""
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def load(raw_dir: Path, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized images (N, 1, 28, 28) and int64 labels (N,) of a split, on `device`."""
    images, labels = idx.load_split(raw_dir, split)
    return normalize(images).to(device), labels.to(device)


def holdout_split(n: int, holdout_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, holdout) of a seeded random split of n items; the same seed gives the same split."""
    if not 0 < holdout_size < n:
        raise StageError(f"params.yaml: data.holdout_size: must be in [1, {n - 1}] for {n} training images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[holdout_size:].sort().values, perm[:holdout_size].sort().values


def load_holdout(raw_dir: Path, holdout_size: int, seed: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, val_x, val_y): the training split less a seeded hold-out, and that hold-out, on `device`."""
    images, labels = load(raw_dir, "train", device)
    fit, held = (i.to(device) for i in holdout_split(len(images), holdout_size, seed))
    # Indexing copies; the unsplit tensors are freed on return, leaving one copy of the data.
    return images[fit], labels[fit], images[held], labels[held]


def augment(x: torch.Tensor, *, rotate: float, translate: float, scale: float,
            generator: torch.Generator) -> torch.Tensor:
    """Random affine transform of each image of a batch (N, 1, H, W), on x's device.

    rotate in degrees, translate as a fraction of the side, scale relative.
    Pixels pulled in from outside repeat the border, which in MNIST is
    background, so the normalized background value stays right.
    """
    n = x.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * half_width

    angle = uniform(math.radians(rotate))
    inv_scale = 1.0 / (1.0 + uniform(scale))
    cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
    # affine_grid works in [-1, 1] coordinates: a shift of 1 image side is 2.
    tx, ty = uniform(2 * translate), uniform(2 * translate)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
