"""The seed's CNN: six 3x3 convolutions, two max-pools, global average pooling.

9,658 convolution weights and biases (the seed's table says 9,720, but its own
rows sum to 9,658) plus 144 BatchNorm scales and shifts: 9,802 trainable.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Normalization of MNIST pixels in [0, 1]: the training set's mean and std.
MEAN, STD = 0.1307, 0.3081


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max-pool of an NCHW tensor: the same values, indices and gradients as F.max_pool2d.

    On 2 CPU cores, PyTorch's NCHW max-pool of 64 x 16 x 28 x 28 took 1.9 ms,
    pooling a channels-last copy 0.6 ms (copy included); but the backward
    took 0.9 ms in NCHW and about 2 ms in channels-last. So the forward pools
    a channels-last copy and the backward scatters into NCHW: 7 % off a
    64-image training step.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y, indices = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), [2, 2])
        ctx.save_for_backward(x, indices)
        return y.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                               indices.contiguous())


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2), faster on the CPU (see _MaxPool2x2); elsewhere F.max_pool2d itself."""
    return _MaxPool2x2.apply(x) if x.device.type == "cpu" else F.max_pool2d(x, 2)


def _block(c_in: int, c_out: int, padding: int, dropout: float) -> nn.Sequential:
    """Conv 3x3 -> BatchNorm -> ReLU -> Dropout, as after each of Conv1-Conv5.

    ReLU works in place on BatchNorm's output (BatchNorm's backward needs only
    its input): one activation-sized tensor fewer to write, 8 % off a 64-image
    CPU training step.
    """
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=padding), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Dropout(dropout))


class Net(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = _block(1, 8, padding=1, dropout=dropout)
        self.conv2 = _block(8, 16, padding=1, dropout=dropout)
        self.conv3 = _block(16, 16, padding=1, dropout=dropout)
        self.conv4 = _block(16, 16, padding=1, dropout=dropout)
        self.conv5 = _block(16, 16, padding=0, dropout=dropout)
        self.conv6 = nn.Conv2d(16, 10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, 1, 28, 28), normalized with MEAN and STD
        x = self.conv1(x)  # (N, 8, 28, 28)
        x = self.conv2(x)  # (N, 16, 28, 28)
        x = max_pool2x2(x)  # (N, 16, 14, 14)
        x = self.conv3(x)  # (N, 16, 14, 14)
        x = self.conv4(x)  # (N, 16, 14, 14)
        x = max_pool2x2(x)  # (N, 16, 7, 7)
        x = self.conv5(x)  # (N, 16, 5, 5)
        x = self.conv6(x)  # (N, 10, 3, 3)
        return x.mean(dim=(2, 3))  # (N, 10) class scores (logits); GAP
