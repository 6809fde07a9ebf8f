"""Do two cores train more images a second as two single-threaded replicas than as one two-threaded step?

    python bench/results/avx2-2026-12-01/two_replicas.py > bench/results/avx2-2026-12-01/two_replicas.txt

The measurement behind the ghost-batch variant of this folder's study: one 64-image fp32 training
step of Net in its CPU layout (forward, label-smoothed cross-entropy, backward, fused Nesterov SGD;
random images, as only the shapes matter) on 1 and 2 intra-op threads, and two replicas, each on
one thread of its own, stepping at once (torch's kernels release the GIL). Prints the median ms a
step and images/s of each; the replicas' images/s counts both.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from stages.cli import keep_freed_memory  # noqa: E402
from stages.device import cpu_model  # noqa: E402
from stages.model import Net  # noqa: E402

BATCH, ROUNDS, STEPS = 64, 5, 40


def make_step(seed: int) -> Callable[[], None]:
    torch.manual_seed(seed)
    net = Net().to_cpu_layout()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, fused=True)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(BATCH, 1, 28, 28, generator=g), torch.randint(0, 10, (BATCH,), generator=g)

    def step() -> None:
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def rounds(step: Callable[[], None], out: list[float]) -> None:
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        out.append((time.perf_counter() - start) / STEPS * 1000)


def main() -> None:
    keep_freed_memory()
    threads = torch.get_num_threads()
    print(f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, "
          f"{threads} threads; batch {BATCH}, median of {ROUNDS} rounds of {STEPS} steps")
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        step, ms = make_step(0), []
        for _ in range(20):
            step()
        rounds(step, ms)
        m = statistics.median(ms)
        print(f"one replica, {n} thread(s): {m:.2f} ms a step, {BATCH / m * 1000:,.0f} images/s")
    torch.set_num_threads(1)
    steps, ms = [make_step(0), make_step(1)], []
    for step in steps:
        for _ in range(20):
            step()
    barrier = threading.Barrier(len(steps))

    def work(step: Callable[[], None]) -> None:
        barrier.wait()
        rounds(step, ms)
    workers = [threading.Thread(target=work, args=(s,)) for s in steps]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    m = statistics.median(ms)
    print(f"two replicas, 1 thread each, at once: {m:.2f} ms a step each, {len(steps) * BATCH / m * 1000:,.0f} "
          f"images/s together")


if __name__ == "__main__":
    main()
