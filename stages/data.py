"""MNIST as tensors on the training device, and batch augmentation there.

The IDX files are parsed once into uint8 tensors and normalized once; batches
are slices of a `randperm`, augmented as a whole with one affine grid per
image. No Dataset, DataLoader or per-sample PIL work anywhere.
"""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from stages import idx
from stages.cli import StageError
from stages.model import MEAN, STD


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit accelerator must exist."""
    has = {"cuda": torch.cuda.is_available(),
           "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
           "cpu": True}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    if not has[name]:
        available = ", ".join(d for d in ("cuda", "mps", "cpu") if has[d])
        raise StageError(f"params.yaml: train.device: {name!r} is not available on this machine "
                         f"(available: {available}; 'auto' picks the best)")
    return torch.device(name)


def cpu_model() -> str:
    """The CPU's model name ('AMD EPYC', 'Intel Xeon Platinum 8480+'), without trademarks and clock speed."""
    name = ""
    if sys.platform == "linux":
        with open("/proc/cpuinfo") as cpuinfo:
            name = next((line.split(":", 1)[1] for line in cpuinfo if line.startswith("model name")), "")
    elif sys.platform == "darwin":
        name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True).stdout
    name = re.sub(r"\((R|TM)\)|\bCPU\b|\bProcessor\b|@.*$|\s\d+-Core", "", name or platform.processor())
    return " ".join(name.split()) or platform.machine()


def device_info(device: torch.device) -> dict[str, str]:
    """What a run used, for its metrics: `device` in PyTorch's notation (cpu, mps, cuda:2) and its model name.

    On CUDA the index is the machine's (nvidia-smi's): a queue worker started with CUDA_VISIBLE_DEVICES=2 sees
    that GPU as cuda:0, and reports cuda:2.
    """
    if device.type != "cuda":
        # MPS is the Apple chip's GPU: the chip's name names it.
        return {"device": device.type, "device_name": cpu_model()}
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    physical = int(visible[index]) if index < len(visible) and visible[index].strip().isdigit() else index
    return {"device": f"cuda:{physical}", "device_name": torch.cuda.get_device_name(index)}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for autocast when asked for, or when `auto` on a CPU that does it natively; else None (fp32).

    `auto` keeps fp32 on CUDA: this 10k-parameter net is bound by kernel
    latency there, not arithmetic, and autocast's casts are extra kernels.
    On an H100, 15 epochs took 8.7 s in fp32 and 11.8 s in bf16 (bench/holdout.py).
    On a 2-core CPU with AMX, a bf16 training step of 64 images took about 15 ms, fp32 20 ms.
    """
    if precision == "fp32" or device.type == "mps":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


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
