"""The training step and what it needs: seeding, the optimizer, the arithmetic, one step under autocast.

Shared by the train stage (stages/train.py) and the advisor that times the same step in fp32 and
bf16 (stages/precision.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from stages import config
from stages.device import check_precision


def seed_everything(seed: int) -> None:
    # cuBLAS needs this for deterministic results; it is read when cuBLAS starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    # Same params, seed and machine must give the same weights and metrics.
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor with NaN, which cost 6 % of
    # a CPU training step; nothing here reads memory it has not written.
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for autocast under train.precision bf16 (refused on MPS: StageError), None for fp32."""
    check_precision(precision, device)
    return torch.bfloat16 if precision == "bf16" else None


def make_optimizer(model: torch.nn.Module, cfg: config.Train, device: torch.device) -> torch.optim.Optimizer:
    """SGD or Adam over model's parameters; fused kernels on CPU and CUDA.

    On CUDA the learning rate is a tensor on the device, so a captured step
    reads the value the scheduler sets instead of the one it was captured with.
    """
    fused = device.type in ("cpu", "cuda") or None
    lr = torch.tensor(cfg.lr, device=device) if device.type == "cuda" else cfg.lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay,
                               fused=fused)
    # capturable: Adam keeps its step count on the device, as a CUDA graph needs.
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, fused=fused,
                            capturable=device.type == "cuda")


def make_step(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, amp_dtype: torch.dtype | None,
              label_smoothing: float, loss_sum: torch.Tensor, correct: torch.Tensor,
              losses: torch.Tensor | None = None) -> Callable[..., None]:
    """One optimizer step on a batch; the batch's loss and correct count are added to the two sums in place.

    With `losses` (a tensor of one batch's size), step(x, y, weight) also takes a loss weight per image, and
    writes each image's own (unweighted) loss into `losses` for the caller to read after the step.
    """
    device_type = loss_sum.device.type

    def step(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        # No cast cache: each weight is cast once per forward anyway, and a CUDA graph may not keep one.
        with torch.autocast(device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None,
                            cache_enabled=False):
            out = model(x)
        if losses is None:
            loss = reported = F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
        else:
            each = F.cross_entropy(out.float(), y, label_smoothing=label_smoothing, reduction="none")
            losses.copy_(each.detach())
            loss = (each * weight).mean()
            reported = each.mean()  # the history's train loss: the images' own, not scaled by their weights
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum.add_(reported.detach())
        correct.add_((out.argmax(1) == y).sum())
    return step
