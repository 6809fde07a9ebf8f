"""Two training processes on one small machine: what a `dvc queue start -j 2` worker pair does to a step.

    python bench/results/avx2-2026-12-01/contention.py                     # alone
    python bench/results/avx2-2026-12-01/contention.py & python bench/results/avx2-2026-12-01/contention.py; wait
    OMP_NUM_THREADS=1 python bench/results/avx2-2026-12-01/contention.py & \\
        OMP_NUM_THREADS=1 python bench/results/avx2-2026-12-01/contention.py; wait

Prints the median ms of a 64-image fp32 training step of Net in its CPU layout (random images).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from stages.cli import keep_freed_memory  # noqa: E402
from stages.model import Net  # noqa: E402


def main() -> None:
    keep_freed_memory()
    torch.manual_seed(0)
    net = Net().to_cpu_layout()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, fused=True)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))

    def step() -> None:
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(10):
        step()
    ms = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            step()
        ms.append((time.perf_counter() - start) / 20 * 1000)
    print(f"threads {torch.get_num_threads()}: {statistics.median(ms):.1f} ms a 64-image step")


if __name__ == "__main__":
    main()
