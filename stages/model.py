"""The seed's CNN: six 3x3 convolutions, two max-pools, global average pooling.

9,658 convolution weights and biases (the seed's table says 9,720, but its own
rows sum to 9,658) plus 144 BatchNorm scales and shifts: 9,802 trainable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Normalization of MNIST pixels in [0, 1]: the training set's mean and std.
MEAN, STD = 0.1307, 0.3081


class _ChannelsLast(torch.autograd.Function):
    """Identity that gives the next layer a channels-last copy and takes its gradient back as NCHW."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class ToChannelsLast(nn.Module):
    """The layout boundary between Conv1's NCHW block and the channels-last rest (see Net.to_cpu_layout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ChannelsLast.apply(x)


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
        x = F.max_pool2d(x, 2)  # (N, 16, 14, 14)
        x = self.conv3(x)  # (N, 16, 14, 14)
        x = self.conv4(x)  # (N, 16, 14, 14)
        x = F.max_pool2d(x, 2)  # (N, 16, 7, 7)
        x = self.conv5(x)  # (N, 16, 5, 5)
        x = self.conv6(x)  # (N, 10, 3, 3)
        return x.mean(dim=(2, 3))  # (N, 10) class scores (logits); GAP

    def to_cpu_layout(self) -> Net:
        """Conv2 onward in channels-last (NHWC), for training on the CPU; returns self.

        oneDNN computes CPU convolutions in NHWC: with NCHW tensors each one
        copies its input or output between the layouts. With AVX-512, the NHWC
        BatchNorm backward for Conv1's 8 channels took 4.7 ms against 0.18 ms in
        NCHW (64 images), so Conv1's block stays NCHW. On 2 such cores a 64-image
        step took 8.3 ms this way against 10.6 ms all-NCHW and 12.6 ms all-NHWC
        (bf16). With AVX2 (2-core AMD EPYC, Zen 3) all-NHWC was no faster: 0.96-1.00x
        this layout's step time, side by side (bench/results/avx2-2026-12-01).
        The function computed is the same; only float rounding differs.

        At the boundary, Conv2's backward hands back a channels-last gradient, and
        ReLU's backward on Conv1's NCHW output with it took 0.9 ms (64 images)
        instead of 0.03: element-wise kernels are slow on mixed layouts. So Conv1's
        block ends in an explicit conversion whose backward returns NCHW: the same
        weights bit for bit, a step 10 % faster in fp32 and 14 % in bf16 (2-core AMD EPYC).
        It holds no weights, so checkpoints are unchanged.
        """
        for block in (self.conv2, self.conv3, self.conv4, self.conv5, self.conv6):
            block.to(memory_format=torch.channels_last)
        self.conv1.append(ToChannelsLast())
        return self
