"""The fp32 CPU levers of README.md's "What did not help", measured side by side in one process.

    python bench/results/epyc-2026-11-27/levers.py > bench/results/epyc-2026-11-27/levers.txt

Times one 64-image training step (forward, backward, fused SGD; random images, as the
shapes are all that matter) of several variants of Net, each compiled or set up first,
then in alternating rounds of 40 steps; prints the median ms per step of each. Run from
the repository root (or anywhere: it puts the root on sys.path).
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

ROUNDS, STEPS = 5, 40


def variant(layout: str, *, boundary: bool = True) -> Net:
    torch.manual_seed(0)
    net = Net()
    if layout == "split":
        net.to_cpu_layout()
        if not boundary:
            del net.conv1[-1]  # to_cpu_layout's channels-last conversion after Conv1's block
    elif layout == "nhwc":
        net.to(memory_format=torch.channels_last)
    return net


def main() -> None:
    keep_freed_memory()
    nets = {"split (the default)": (variant("split"), {}),
            "split, without the Conv1 boundary": (variant("split", boundary=False), {}),
            "all NCHW": (variant("nchw"), {}),
            "all NHWC": (variant("nhwc"), {}),
            "split, one thread": (variant("split"), {"threads": 1}),
            "all NCHW, no oneDNN": (variant("nchw"), {"mkldnn": False})}
    for layout in ("split", "nchw", "nhwc"):
        nets[f"torch.compile, {layout}"] = (variant(layout), {"compile": True})
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    steps = {}
    for name, (net, how) in nets.items():
        model = torch.compile(net) if how.get("compile") else net
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, fused=True)

        def step(model=model, optimizer=optimizer, how=how) -> None:
            torch.set_num_threads(how.get("threads", 2))
            with torch.backends.mkldnn.flags(enabled=how.get("mkldnn", True)):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        start = time.perf_counter()
        step()
        first = time.perf_counter() - start
        for _ in range(10):
            step()
        steps[name] = step
        print(f"{name}: first step {first:.1f} s", flush=True)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(ROUNDS):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(STEPS):
                step()
            times[name].append((time.perf_counter() - start) / STEPS * 1000)
    print(f"\n| fp32, 64-image step | ms, median of {ROUNDS} rounds of {STEPS} |\n|---|---|")
    for name, ms in times.items():
        print(f"| {name} | {statistics.median(ms):.2f} |")


if __name__ == "__main__":
    main()
