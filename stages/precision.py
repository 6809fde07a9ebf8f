"""`train.precision: auto` on a CPU: bf16 autocast only where this machine trains faster in it, as measured.

Five CPU classes have behaved five ways (bf16 1.33x as fast as fp32 on an AMX Xeon, 1.13x on
a Zen 5 EPYC, no faster on a Zen 4, 0.79x on a Xeon whose AMX its hypervisor hides, emulated
on AVX2), and their flags did not predict it. So the first CPU run with `auto` on a machine
times a short probe of the real training step (the CPU layout, the optimizer, the
augmentation; random images) in fp32 and in bf16, block by block in turn, and trains in
bf16 only where it was at least BF16_MIN_SPEEDUP times as fast. Where oneDNN has no native
bf16 (AVX2, AVX-512 without AVX512-BF16, `ONEDNN_MAX_CPU_ISA=AVX2`) there is nothing to
measure: fp32.

The result is cached per machine, outside the workspace, in this user's cache directory
(`~/.cache/mnist-dvc/` on Linux; XDG_CACHE_HOME moves it). Its key is the CPU's model
name and flags, PyTorch's CPU kernels and oneDNN's ISA cap, the threads, torch's version
and the batch size. Every later run with that key makes the same choice, so the same seed
gives the same bytes. CUDA keeps fp32 (see autocast_dtype); explicit fp32 or bf16 skips it.

    python -m stages.precision            # this machine's choice and the ratio (measured once if none cached)
    python -m stages.precision --measure  # measure again and replace the cached choice
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from stages import atomic, cli, config, data, paths
from stages.device import check_precision, cpu_flags, cpu_kernels, cpu_model, device_info, resolve_device
from stages.model import Net
from stages.step import make_optimizer, make_step, seed_everything

# bf16 is chosen from this much faster than fp32 (a step's time, fp32 / bf16). `auto` should never
# train more than 5 % slower than the faster arithmetic; a bar above that margin failed it on a Zen 5,
# where bf16 was 1.08x as fast per 2-epoch stage and one probe measured 1.07-1.49x: at 1.10 it chose
# fp32 in 2 probes of 3 (bench/results/zen5-2026-12-04/precision.md). Where bf16 is measured this fast
# by noise alone, choosing it costs a few per cent at most.
BF16_MIN_SPEEDUP = 1.05
PROBE_STEPS = 16  # training steps in a timed block: 0.2-0.5 s on two cores
PROBE_ROUNDS = 5  # timed blocks of each arithmetic, in turn, after one warm-up block each


@dataclass(frozen=True)
class Choice:
    """What `auto` trains in on this CPU, and why."""

    precision: str  # "fp32" or "bf16"
    bf16_speedup: float | None  # a step's time in fp32 / in bf16, as measured; None: not measured
    how: str  # "measured", "cached" or "no native bf16"
    cache: Path | None  # the cache file of this machine's key (None: nothing to measure)


# Choices measured in this process that could not be cached (a read-only home): the train stage asks twice.
_unsaved: dict[Path, Choice] = {}


def native_bf16() -> bool:
    """Whether oneDNN computes bf16 natively here (AMX, or AVX512-BF16), read through PyTorch.

    oneDNN's own check follows ONEDNN_MAX_CPU_ISA, so the AVX2 cap makes this False on any x86
    host; on AVX-512 without AVX512-BF16 it says yes but emulates, which only slows a step.
    """
    return ((torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine_key(batch_size: int) -> dict[str, str | int]:
    """What the measured ratio depends on: the CPU, the kernels PyTorch and oneDNN may use, threads, torch."""
    flags = " ".join(sorted(cpu_flags()))
    return {"cpu": cpu_model(), "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
            "kernels": cpu_kernels(torch.device("cpu")), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "batch_size": batch_size}


def cache_dir() -> Path:
    """This user's cache directory for the project (platformdirs: ~/.cache/mnist-dvc on Linux)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mnist-dvc", appauthor=False))


def cache_path(key: dict[str, str | int]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"precision-{digest}.json"


def measure(cfg: config.Train, rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """Milliseconds a training step takes here in fp32 and in bf16 (medians of the timed blocks), and their ratio.

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


def pick(bf16_speedup: float) -> str:
    """The arithmetic a measured ratio (a step's time, fp32 / bf16) chooses."""
    return "bf16" if bf16_speedup >= BF16_MIN_SPEEDUP else "fp32"


def choose(cfg: config.Train, measure_again: bool = False) -> Choice:
    """This CPU's arithmetic for `auto`: the cached choice of this machine's key, else a new measurement.

    A file lock makes two runs that start together on a new machine (two queue workers) measure once.
    """
    if not native_bf16():
        return Choice("fp32", None, "no native bf16", None)
    from filelock import FileLock

    key = machine_key(cfg.batch_size)
    path = cache_path(key)
    if not measure_again and path in _unsaved:
        return _unsaved[path]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError:  # a read-only home: measure all the same, and keep the result in this process
        lock = None
    try:
        if not measure_again:
            try:
                cached = json.loads(path.read_text())
                if cached.get("key") == key and isinstance(cached.get("bf16_speedup"), float):
                    # The choice follows from the measured ratio and this code's bar, so a cache
                    # written under another bar does not keep that bar's choice.
                    return Choice(pick(cached["bf16_speedup"]), cached["bf16_speedup"], "cached", path)
            except (OSError, ValueError):  # none yet, or damaged: measure
                pass
        timing = measure(cfg)
        choice = Choice(pick(timing["bf16_speedup"]), timing["bf16_speedup"], "measured", path)
        try:
            atomic.write_json(path, {"key": key, "precision": choice.precision, **timing,
                                     "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        except OSError as exc:
            print(f"warning: {path}: the measured choice could not be cached ({exc.strerror}); this run trains in "
                  f"{choice.precision}, and the next one measures again", file=sys.stderr)
            choice = _unsaved.setdefault(path, replace(choice, how="measured, not cached", cache=None))
        return choice
    finally:
        if lock is not None:
            lock.release()


def describe(choice: Choice) -> str:
    """One line: what `auto` trains in here, and the measurement behind it."""
    if choice.bf16_speedup is None:
        return f"{choice.precision} ({choice.how})"
    where = f"; {choice.cache}" if choice.cache else ""
    return (f"{choice.precision} (bf16 {choice.bf16_speedup:.2f}x as fast as fp32, {choice.how}; "
            f"bf16 only from {BF16_MIN_SPEEDUP:.2f}x{where})")


def autocast_dtype(precision: str, device: torch.device, cfg: config.Train | None = None) -> torch.dtype | None:
    """bfloat16 for autocast when asked for, or under `auto` on a CPU where choose() measured it faster; else None.

    `auto` keeps fp32 on CUDA: this 10k-parameter net is bound by kernel latency there, not arithmetic, and
    autocast's casts are extra kernels (an H100: 15 epochs in 8.7 s fp32, 11.8 s bf16). MPS: fp32 (bf16 is
    refused there: device.check_precision).
    `cfg` (default: the shipped train section) gives the probe its batch size and step.
    """
    check_precision(precision, device)
    if precision == "fp32" or device.type == "mps":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return None
    return torch.bfloat16 if choose(cfg or config.Train()).precision == "bf16" else None


def parser() -> argparse.ArgumentParser:
    made = cli.parser(__doc__, command="stages.precision", reads=["params.yaml (train)", "the cache (see above)"],
                      writes=["the cache file of this machine, when it measures"])
    made.add_argument("--measure", action="store_true", help="measure again and replace this machine's cached choice")
    return made


def main(args: argparse.Namespace) -> None:
    cfg = config.load().train if paths.PARAMS.exists() else config.Train()
    device = resolve_device(cfg.device)
    if device.type != "cpu":
        where = device_info(device)
        trains_in = "bf16" if autocast_dtype(cfg.precision, device, cfg) else "fp32"
        print(f"train.device {cfg.device} trains on {where['device']} ({where['device_name']}): "
              f"train.precision {cfg.precision} trains in {trains_in} there; the CPU probe below decides only "
              f"where train.device resolves to the CPU")
        if not args.measure:
            return
    choice = choose(cfg, measure_again=args.measure)
    key = machine_key(cfg.batch_size)
    print(f"this machine: {key['cpu']}, {key['kernels']} kernels, {key['threads']} threads, torch {key['torch']}, "
          f"batch {cfg.batch_size}")
    print(f"train.precision auto trains in {describe(choice)}")
    if choice.cache is not None:
        timing = json.loads(choice.cache.read_text())
        print(f"a step: fp32 {timing['fp32_step_ms']:.1f} ms, bf16 {timing['bf16_step_ms']:.1f} ms "
              f"(measured {timing['measured']}); `python -m stages.precision --measure` measures again")


if __name__ == "__main__":
    cli.run(main, parser())
