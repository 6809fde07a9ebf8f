"""Where training runs: the device, its name, the CPU's kernels and flags (stages/precision.py picks the arithmetic)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys

import torch

from stages.errors import StageError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit accelerator must exist."""
    has = {"cuda": torch.cuda.is_available(),
           "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
           "cpu": True}
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    if not has[name]:
        available = ", ".join(d for d in ("cuda", "mps", "cpu") if has[d])
        raise StageError(f"params.yaml: train.device: {name!r} is not available on this machine "
                         f"(available: {available}; 'auto' picks the best)")
    return torch.device(name)


def cpu_model() -> str:
    """The CPU's model name ('AMD EPYC', 'Intel Xeon Platinum 8480+'), without trademarks and clock speed."""
    name = cpuinfo("model name")
    if sys.platform == "darwin":
        name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True).stdout
    name = re.sub(r"\((R|TM)\)|\bCPU\b|\bProcessor\b|@.*$|\s\d+-Core", "", name or platform.processor())
    return " ".join(name.split()) or platform.machine()


def device_info(device: torch.device) -> dict[str, str]:
    """What a run used, for its metrics: `device` in PyTorch's notation (cpu, mps, cuda:2) and its model name.

    On CUDA the index is the machine's (nvidia-smi's): a queue worker started with CUDA_VISIBLE_DEVICES=2 sees
    that GPU as cuda:0, and reports cuda:2.
    """
    if device.type != "cuda":
        # MPS is the Apple chip's GPU: the chip's name names it.
        return {"device": device.type, "device_name": cpu_model()}
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    physical = int(visible[index]) if index < len(visible) and visible[index].strip().isdigit() else index
    return {"device": f"cuda:{physical}", "device_name": torch.cuda.get_device_name(index)}


def cpu_kernels(device: torch.device) -> str:
    """For the summary: the CPU kernels PyTorch dispatches to here ('AVX2', 'AVX512'; ATEN_CPU_CAPABILITY caps
    them), '-' off the CPU."""
    return torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else "-"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (/proc/cpuinfo); empty elsewhere."""
    return set(cpuinfo("flags").split())


def cpuinfo(key: str) -> str:
    """The value of the first `key` line of Linux's /proc/cpuinfo; '' where there is none."""
    try:
        with open("/proc/cpuinfo") as lines:
            return next((value.strip() for name, _, value in (line.partition(":") for line in lines)
                         if name.strip() == key), "")
    except OSError:
        return ""
