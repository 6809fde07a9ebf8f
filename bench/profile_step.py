"""Where a CPU training step's time goes: per layer and per kind of op, forward and backward.

    python -m bench.profile_step [--batch-size 64] [--threads N] [--layout split|channels_last] [--json FILE]

One fp32 step of the train stage (Net in its CPU layout, Net.to_cpu_layout();
`--layout channels_last` for all-NHWC instead; label-smoothed cross-entropy,
fused Nesterov SGD) on random images: only the shapes matter for time. Printed:
- the step's wall time, uninstrumented (median of --rounds rounds of --steps steps);
- a table per layer, forward and backward: milliseconds a step, and for the
  convolutions their GFLOP/s and the share of this host's GEMM rate (a 2048 x
  2048 fp32 torch.mm on the same threads);
- a table per kind of op (convolution, BatchNorm, ReLU, pooling, copies, ...).
Each op is timed by a TorchDispatchMode around its call, less the timer's own
cost per op (measured on a 1-element add), so its figure has the op's dispatch
in it; what the step spends outside ops (Python, autograd's engine) is the
uninstrumented step less the ops' sum.

To see another CPU class on this one, cap the kernels:
`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m bench.profile_step`.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from stages.cli import keep_freed_memory
from stages.device import cpu_model
from stages.model import Net

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6")
KINDS = {"convolution": "convolution", "convolution_backward": "convolution",
         "native_batch_norm": "batchnorm", "native_batch_norm_backward": "batchnorm",
         "relu_": "relu", "threshold_backward": "relu",
         "max_pool2d_with_indices": "pooling", "max_pool2d_with_indices_backward": "pooling",
         "clone": "layout copies", "copy_": "layout copies", "_to_copy": "layout copies",
         "_fused_sgd_": "optimizer"}


def gemm_gflops(size: int = 2048, repeats: int = 10) -> float:
    """This host's fp32 GEMM rate on the current threads: median of `repeats` size x size torch.mm."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def conv_flops(net: Net, x: torch.Tensor) -> dict[str, dict[str, float]]:
    """Multiply-adds x 2 of each convolution, forward and backward (input gradient, except Conv1's, + weights)."""
    flops: dict[str, dict[str, float]] = {}

    def hook(name: str):
        def record(conv: nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            per_pass = 2 * out.numel() * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
            flops[name] = {"forward": per_pass, "backward": per_pass * (1 if name == "conv1" else 2)}
        return record
    convs = {name: getattr(net, name) if name == "conv6" else getattr(net, name)[0] for name in LAYERS}
    handles = [conv.register_forward_hook(hook(name)) for name, conv in convs.items()]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return flops


class OpTimer(TorchDispatchMode):
    """Seconds and count of each aten op, by (layer, pass, kind).

    The step sets `phase`; the blocks' hooks set `block`: a forward pre-hook on
    entry (cleared on exit), a backward pre-hook when the block's backward
    starts (it runs until the next block's). Pooling and the optimizer are
    named by their ops; everything else outside a block is "loss, GAP, rest".
    """

    def __init__(self) -> None:
        super().__init__()
        self.phase, self.block = "forward", None
        self.seconds: dict[tuple[str, str, str], float] = collections.defaultdict(float)
        self.calls: dict[tuple[str, str, str], int] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # torch's signature
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        kind = KINDS.get(func.overloadpacket.__name__, "other")
        layer = kind if kind in ("pooling", "optimizer") else self.block or "loss, GAP, rest"
        key = (layer, self.phase, kind)
        self.seconds[key] += time.perf_counter() - start
        self.calls[key] += 1
        return out

    def attach(self, net: Net) -> None:
        def enter(name: str, phase: str):
            return lambda *hook_args: setattr(self, "block", name)
        for name in LAYERS:
            block = getattr(net, name)
            block.register_forward_pre_hook(enter(name, "forward"))
            block.register_forward_hook(lambda *hook_args: setattr(self, "block", None))
            block.register_full_backward_pre_hook(enter(name, "backward"))


def timer_cost(repeats: int = 2000) -> float:
    """Seconds OpTimer adds to one op: a 1-element add timed with and without it."""
    a, b = torch.ones(1), torch.ones(1)

    def loop() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            torch.add(a, b)
        return time.perf_counter() - start
    plain = min(loop() for _ in range(3))
    with OpTimer():
        timed = min(loop() for _ in range(3))
    return max(0.0, (timed - plain) / repeats)


def make_step(net: Net, x: torch.Tensor, y: torch.Tensor, timer: OpTimer | None = None):  # noqa: ANN201
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, fused=True)

    def phase(name: str) -> None:
        if timer is not None:
            timer.phase, timer.block = name, None

    def step() -> None:
        phase("forward")
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        phase("backward")
        loss.backward()
        phase("forward")  # the optimizer's ops are named by kind
        optimizer.step()
    return step


def profile(*, batch_size: int, layout: str, steps: int, rounds: int) -> dict[str, Any]:
    torch.manual_seed(0)
    x, y = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))
    net = Net().to_cpu_layout() if layout == "split" else Net().to(memory_format=torch.channels_last)
    flops = conv_flops(net, x)
    step = make_step(net, x, y)
    for _ in range(10):
        step()
    rounds_ms = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rounds_ms.append((time.perf_counter() - start) / steps * 1000)
    timer = OpTimer()
    timer.attach(net)
    timed_step = make_step(net, x, y, timer)
    cost = timer_cost()
    with timer:
        for _ in range(steps):
            timed_step()
    ms = {key: (seconds - timer.calls[key] * cost) / steps * 1000 for key, seconds in timer.seconds.items()}
    return {"step_ms": statistics.median(rounds_ms), "rounds_ms": rounds_ms, "flops": flops,
            "ops_ms": [{"layer": k[0], "pass": k[1], "kind": k[2], "ms": v} for k, v in sorted(ms.items())]}


def tables(result: dict[str, Any]) -> str:
    gemm, step_ms, ops = result["gemm_gflops"], result["step_ms"], result["ops_ms"]
    by = collections.defaultdict(float)
    for op in ops:
        by[op["layer"], op["pass"]] += op["ms"]
    lines = [f"| layer | forward ms | backward ms | conv GFLOP/s fwd / bwd | of GEMM ({gemm:.0f} GFLOP/s) |",
             "|---|---|---|---|---|"]
    layers = [*LAYERS, "pooling", "loss, GAP, rest", "optimizer"]
    for layer in layers:
        fwd, bwd = by[layer, "forward"], by[layer, "backward"]
        rates = ""
        if layer in result["flops"]:
            conv = {p: sum(o["ms"] for o in ops if (o["layer"], o["pass"], o["kind"]) == (layer, p, "convolution"))
                    for p in ("forward", "backward")}
            gf = {p: result["flops"][layer][p] / (conv[p] / 1000) / 1e9 if conv[p] else 0.0 for p in conv}
            rates = (f"{gf['forward']:.0f} / {gf['backward']:.0f} | "
                     f"{gf['forward'] / gemm:.0%} / {gf['backward'] / gemm:.0%}")
        lines.append(f"| {layer} | {fwd:.2f} | {bwd:.2f} | {rates or ' | '} |")
    in_ops = sum(o["ms"] for o in ops)
    total_flops = sum(f["forward"] + f["backward"] for f in result["flops"].values())
    lines += ["", "| kind of op | ms a step | share of the step |", "|---|---|---|"]
    kinds = collections.defaultdict(float)
    for op in ops:
        kinds[op["kind"]] += op["ms"]
    for kind, kind_ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {kind_ms:.2f} | {kind_ms / step_ms:.0%} |")
    lines.append(f"| outside ops (Python, autograd; the step less the ops) | {step_ms - in_ops:.2f} | "
                 f"{(step_ms - in_ops) / step_ms:.0%} |")
    lines += ["", f"step: {step_ms:.2f} ms ({result['batch_size']} images, median of rounds "
              f"{', '.join(f'{r:.1f}' for r in result['rounds_ms'])}); {total_flops / 1e6:.0f} MFLOP of "
              f"convolutions = {total_flops / (step_ms / 1000) / 1e9:.1f} GFLOP/s over the whole step, "
              f"{total_flops / (step_ms / 1000) / 1e9 / gemm:.0%} of this host's GEMM rate"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's, one per core)")
    parser.add_argument("--layout", choices=["split", "channels_last"], default="split",
                        help="split: the train stage's (Conv1's block NCHW, the rest NHWC); channels_last: all NHWC")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    keep_freed_memory()  # as the stages run
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = args.layout
    result = {"cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "layout": layout, "batch_size": args.batch_size,
              "gemm_gflops": gemm_gflops(),
              **profile(batch_size=args.batch_size, layout=layout, steps=args.steps, rounds=args.rounds)}
    print(f"{result['cpu']}, PyTorch {result['torch']} ({result['capability']}), {result['threads']} threads, "
          f"{layout} layout, fp32\n")
    print(tables(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
