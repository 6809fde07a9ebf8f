"""Whether bf16 autocast would pay on this machine: advice, which decides nothing by itself.

`train.precision` is what params.yaml says, fp32 unless it says bf16, so the trained weights follow
from what dvc.yaml declares (code, params, data) and the machine's kernels, never from a timing. Five
CPU classes have behaved five ways in bf16 (1.33x as fast as fp32 on an AMX Xeon, 1.13x on a Zen 5
EPYC, no faster on a Zen 4, 0.79x on a Xeon whose AMX its hypervisor hides, about 0.3x emulated on
AVX2), and their flags did not predict it. So this command times the real training step (the CPU
layout, the optimizer, the augmentation; random images) in both, block by block in turn, and says
which to set:

    python -m stages.precision        # a step in fp32 and in bf16 here, and the advice; writes nothing
    dvc exp run -S train.precision=bf16   # then, where it advises bf16: an experiment you can compare
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stages import cli, config, data, paths
from stages.device import cpu_kernels, cpu_model, device_info, resolve_device
from stages.model import Net
from stages.step import make_optimizer, make_step, seed_everything

# bf16 is advised from this much faster than fp32 (a step's time, fp32 / bf16): below it, noise. One probe
# on a Zen 5 measured 1.07-1.49x where bf16 was 1.08x as fast per 2-epoch stage
# (bench/results/zen5-2026-12-04/precision.md).
BF16_MIN_SPEEDUP = 1.05
PROBE_STEPS = 16  # training steps in a timed block: 0.2-0.5 s on two cores
PROBE_ROUNDS = 5  # timed blocks of each arithmetic, in turn, after one warm-up block each


def measure(cfg: config.Train, rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """Milliseconds a CPU training step takes in fp32 and in bf16 (medians of the timed blocks), and their ratio.

    Each arithmetic has its own Net and optimizer; the blocks alternate fp32, bf16, fp32, ... so that a
    machine that speeds up or slows down meanwhile (turbo, a neighbour) weighs on both alike.
    """
    seed_everything(0)  # the train stage's settings: deterministic kernels, as in its real steps
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    n = PROBE_STEPS * cfg.batch_size
    images, labels = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    steps = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model = Net().to_cpu_layout()
        steps[name] = make_step(model=model, optimizer=make_optimizer(model, cfg, cpu), amp_dtype=dtype,
                                label_smoothing=cfg.label_smoothing, loss_sum=torch.zeros(()),
                                correct=torch.zeros((), dtype=torch.long))

    def block(name: str) -> float:
        start = time.perf_counter()
        xs = data.augment(images, rotate=cfg.augment.rotate, translate=cfg.augment.translate,
                          scale=cfg.augment.scale, generator=g)
        for i in range(0, n, cfg.batch_size):
            steps[name](xs[i:i + cfg.batch_size], labels[i:i + cfg.batch_size])
        return (time.perf_counter() - start) / PROBE_STEPS * 1000

    for name in steps:
        block(name)  # warm-up: oneDNN picks and caches its kernels on the first steps
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name in steps:
            times[name].append(block(name))
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    return {"fp32_step_ms": round(fp32, 3), "bf16_step_ms": round(bf16, 3), "bf16_speedup": round(fp32 / bf16, 3)}


def advice(bf16_speedup: float, precision: str) -> str:
    """One line: which train.precision a measured ratio (a step's time, fp32 / bf16) advises, given today's."""
    better = "bf16" if bf16_speedup >= BF16_MIN_SPEEDUP else "fp32"
    why = (f"bf16 is {bf16_speedup:.2f}x as fast as fp32 here"
           f" ({'at least' if better == 'bf16' else 'below'} {BF16_MIN_SPEEDUP:.2f}x)")
    if better == precision:
        return f"{why}: keep train.precision: {precision}"
    return (f"{why}: set train.precision: {better} (`dvc exp run -S train.precision={better}` to compare; "
            "the weights differ from fp32's, its accuracy was checked on fewer seeds)")


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.precision", reads=["params.yaml (train)"], writes=["nothing"])


def main(args: argparse.Namespace) -> None:
    cfg = config.load().train if paths.PARAMS.exists() else config.Train()
    device = resolve_device(cfg.device)
    where = device_info(device)
    if device.type != "cpu":
        # CUDA: this 10k-parameter net is bound by kernel latency, and autocast's casts are extra kernels (an H100:
        # 15 epochs in 8.7 s fp32, 11.8 s bf16). MPS refuses bf16 (device.check_precision).
        print(f"train.device {cfg.device} trains on {where['device']} ({where['device_name']}): fp32 is advised "
              f"there; train.precision is {cfg.precision}")
        return
    print(f"this machine: {cpu_model()}, {cpu_kernels(device)} kernels, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, batch {cfg.batch_size}", flush=True)
    timing = measure(cfg)
    print(f"a step: fp32 {timing['fp32_step_ms']:.1f} ms, bf16 {timing['bf16_step_ms']:.1f} ms")
    print(advice(timing["bf16_speedup"], cfg.precision))


if __name__ == "__main__":
    cli.run(main, parser())
