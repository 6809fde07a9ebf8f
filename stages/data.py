"""MNIST as tensors on the training device, and batch augmentation there.

The IDX files are parsed once into uint8 tensors and normalized once; batches
are slices of a `randperm`, augmented as a whole with one affine grid per
image, then (train.augment.appearance) a share of them changed in look. No
Dataset, DataLoader or per-sample PIL work anywhere.
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
    if x.device.type == "mps":
        return border_by_clamping(x, grid)
    # CPU and CUDA keep PyTorch's own border padding: border_by_clamping differs from it by float rounding, which
    # would change every trained weight, and the promise's evidence was measured with this one.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def border_by_clamping(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """F.grid_sample(x, grid) with bilinear sampling and padding_mode="border" (align_corners=False), in ops MPS runs.

    Some PyTorch releases refuse border padding on MPS ("MPS: Unsupported Border padding mode"). Clamping each
    sampling point to the centres of the edge pixels, then sampling with zero padding, reads only pixels inside
    the image with border's weights: the same function, to float rounding.
    """
    # With align_corners=False the first and last pixel centres of a side of n are at -1 + 1/n and 1 - 1/n.
    edge = torch.tensor([1 - 1 / x.shape[3], 1 - 1 / x.shape[2]], device=x.device, dtype=grid.dtype)
    grid = torch.maximum(torch.minimum(grid, edge), -edge)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# The changes of look that data.appearance draws from, each on pixels in [0, 1] (N, 1, 28, 28). Each is a
# kind of change a user's picture brings (the robustness suite's trained-on group, stages/corruptions.py
# TRAINED_ON); the held-out group's corruptions are none of them (bench/results/zen4-2026-12-03/augment.md).

def _stroke(p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A pen 2 px wider or narrower: grey dilation or erosion by a 3 px cross, half the images each."""
    def dilate(q: torch.Tensor) -> torch.Tensor:
        return torch.maximum(F.max_pool2d(q, (1, 3), 1, (0, 1)), F.max_pool2d(q, (3, 1), 1, (1, 0)))

    thinner = (torch.rand(len(p), 1, 1, 1, generator=g, device=p.device) < 0.5)
    return torch.where(thinner, -dilate(-p), dilate(p))


def _blur(p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """An isotropic Gaussian blur, sigma uniform in [0.5, 1.5] px per image (a soft or out-of-focus pen)."""
    n = len(p)
    sigma = 0.5 + torch.rand(n, 1, generator=g, device=p.device)
    t = torch.arange(-3, 4, device=p.device, dtype=p.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum(1, keepdim=True)  # (N, 7): one kernel per image, applied as N groups
    q = p.reshape(1, n, *p.shape[2:])
    q = F.conv2d(F.pad(q, (3, 3, 0, 0)), k.view(n, 1, 1, 7), groups=n)
    q = F.conv2d(F.pad(q, (0, 0, 3, 3)), k.view(n, 1, 7, 1), groups=n)
    return q.reshape(p.shape)


def pooling_matrix(size: int, out: int, device: torch.device) -> torch.Tensor:
    """(out, size): row i averages the input pixels that adaptive average pooling gives output pixel i.

    PyTorch's adaptive pooling windows: floor(i * size / out) up to ceil((i + 1) * size / out), exclusive.
    """
    i = torch.arange(out, device=device)
    start, end = (i * size) // out, ((i + 1) * size + out - 1) // out
    j = torch.arange(size, device=device)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return inside.float() / (end - start)[:, None].float()


def _low_resolution(p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Averaged down to a side of 7 to 14 px, uniform per image, and bilinear back up (a digit photographed small).

    On MPS the averaging is F.adaptive_avg_pool2d's as two products with pooling_matrix: MPS refuses adaptive
    pooling from 28 px to a side that does not divide it ("input sizes must be divisible by output sizes").
    CPU and CUDA keep the op itself, whose rounding the promise's evidence was measured with.
    """
    side = torch.randint(7, 15, (len(p),), generator=g, device=p.device)
    out = p.clone()
    for s in side.unique().tolist():
        rows = side == s
        if p.device.type == "mps":
            rows_pool, cols_pool = (pooling_matrix(n, s, p.device) for n in p.shape[2:])
            small = rows_pool @ p[rows] @ cols_pool.T  # (n, 1, s, s)
        else:
            small = F.adaptive_avg_pool2d(p[rows], s)
        out[rows] = F.interpolate(small, size=p.shape[2:], mode="bilinear", align_corners=False)
    return out


def _noise(p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Gaussian sensor noise, sigma uniform in [0.05, 0.35] of full brightness per image, clipped to [0, 1]."""
    sigma = 0.05 + 0.3 * torch.rand(len(p), 1, 1, 1, generator=g, device=p.device)
    return (p + sigma * torch.randn(p.shape, generator=g, device=p.device)).clamp(0, 1)


def _level(p: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Grey paper and faded ink: background raised to 0.1-0.6, ink from 0.3 above it up to full brightness."""
    n = len(p)
    background = 0.1 + 0.5 * torch.rand(n, 1, 1, 1, generator=g, device=p.device)
    low = (background + 0.3).clamp(max=1.0)
    ink = low + (1 - low) * torch.rand(n, 1, 1, 1, generator=g, device=p.device)
    return background + (ink - background) * p


APPEARANCE = (_stroke, _blur, _low_resolution, _noise, _level)


def appearance(x: torch.Tensor, *, share: float, generator: torch.Generator) -> torch.Tensor:
    """A normalized batch (N, 1, H, W) with each image, at probability `share`, changed by one of APPEARANCE.

    The change is drawn uniformly per image; the rest are returned as they were. The clean images keep the
    recipe's accuracy on MNIST itself, the changed ones teach the looks that MNIST's scanning never shows.
    """
    n = x.shape[0]
    changed = torch.rand(n, generator=generator, device=x.device) < share
    which = torch.randint(len(APPEARANCE), (n,), generator=generator, device=x.device)
    pixels = x * STD + MEAN
    out = pixels.clone()
    for k, change in enumerate(APPEARANCE):
        rows = (changed & (which == k)).nonzero().squeeze(1)
        if len(rows):
            out[rows] = change(pixels[rows], generator)
    return (out - MEAN) / STD
