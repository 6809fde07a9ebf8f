"""Ghost batches: BatchNorm statistics per group of a batch, each group a thread of its own on a CPU.

With `train.ghost_batch` G below `train.batch_size` B, one optimizer step on B
images is K = B / G forward and backward passes of G images each, every one
normalized with its own batch statistics ("ghost BatchNorm"); the loss is the
mean over all B images. K replicas of the net share one set of weights (the
optimizer updates them in place), and each keeps its own gradients and its
own BatchNorm running averages. The gradients are summed in replica order,
and the running averages are averaged over the replicas before the model is
validated or saved: an average of exponential moving averages is the moving
average of the averaged statistics, so it does not matter when that happens.

How the K passes run is a choice per machine that leaves the function alone:
on a CPU with at least K threads they run at once, one replica a thread
(torch's kernels release the GIL), each with 1/K of the intra-op threads; on a
GPU, or with dropout (it draws from torch's single global random stream, in
whatever order the threads come), they run one after the other.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

# One replica's pass: (its images, its labels) -> (its mean loss, its correct count), both 0-d tensors.
Pass = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class GhostBatches:
    """K copies of a model sharing its parameters (the first is the model itself), and how their passes run.

    A context manager: leaving it stops the threads.
    """

    def __init__(self, model: nn.Module, k: int, *, threads: int) -> None:
        """threads: how many of the K passes run at once (1: in turn, on the caller's thread)."""
        self.models = [model]
        for _ in range(k - 1):
            replica = copy.deepcopy(model)
            for mine, theirs in zip(replica.parameters(), model.parameters(), strict=True):
                mine.data = theirs.data  # the same storage: the optimizer's in-place update reaches every replica
            self.models.append(replica)
        parallel = threads > 1 and k > 1
        # Each thread's share of the intra-op threads; the caller's own thread runs the first replica.
        self.intra = max(1, torch.get_num_threads() // k) if parallel else None
        self.pool = (ThreadPoolExecutor(k - 1, thread_name_prefix="ghost", initializer=torch.set_num_threads,
                                        initargs=(self.intra,)) if parallel else None)

    def __len__(self) -> int:
        return len(self.models)

    def __enter__(self) -> GhostBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def train(self) -> None:
        for m in self.models:
            m.train()

    def zero_grad(self) -> None:
        for m in self.models:
            m.zero_grad(set_to_none=True)

    @contextlib.contextmanager
    def stepping(self) -> Iterator[None]:
        """While steps run in threads, the caller's thread too uses only its share of the intra-op threads."""
        if self.intra is None:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.intra)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def run(self, one_pass: Pass, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """one_pass of each replica on its equal share of the batch; the results in replica order."""
        shares = list(zip(self.models, x.chunk(len(self)), y.chunk(len(self)), strict=True))
        if self.pool is None:
            return [one_pass(*share) for share in shares]
        others = [self.pool.submit(one_pass, *share) for share in shares[1:]]
        return [one_pass(*shares[0])] + [f.result() for f in others]

    def gather_gradients(self) -> None:
        """Sum every replica's gradients into the first one's, in replica order (the same bits on every run)."""
        for first, *others in zip(*(m.parameters() for m in self.models), strict=True):
            for other in others:
                first.grad.add_(other.grad)

    @torch.no_grad()
    def average_batchnorm_statistics(self) -> None:
        """Give every replica the mean of their BatchNorm running means and variances."""
        if len(self) == 1:
            return
        norms = [[m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
                 for model in self.models]
        for layer in zip(*norms, strict=True):
            for name in ("running_mean", "running_var"):
                mean = torch.stack([getattr(bn, name) for bn in layer]).mean(0)
                for bn in layer:
                    getattr(bn, name).copy_(mean)
