"""Where training runs and in what arithmetic: the device, its name, and autocast's dtype."""

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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for autocast when asked for, or when `auto` on a CPU where it was measured faster; else None (fp32).

    `auto` keeps fp32 on CUDA: this 10k-parameter net is bound by kernel latency there, not arithmetic, and
    autocast's casts are extra kernels (an H100: 15 epochs in 8.7 s fp32, 11.8 s bf16). On CPUs, by their
    flags, the 2-epoch train stage side by side (bench/results/zen5-2026-12-02, README "How long it takes"):
    - amx_bf16 (Intel Xeon, Sapphire Rapids on): bf16, a 64-image step 15 ms against 20 ms in fp32;
    - avx512_bf16 with avx_vnni (AMD Zen 5): bf16, 1.13x as fast as fp32;
    - avx512_bf16 without avx_vnni (AMD Zen 4): fp32, bf16 was no faster (and its models differed more);
    - no native bf16 (AVX2, AVX-512 without it): fp32, where bf16 is emulated.
    oneDNN's own bf16 check follows ONEDNN_MAX_CPU_ISA, so under the AVX2 cap any x86 host trains in fp32.
    """
    if precision == "fp32" or device.type == "mps":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return None
    faster = torch.cpu._is_amx_tile_supported() or (torch.cpu._is_avx512_bf16_supported() and "avx_vnni" in cpu_flags())
    return torch.bfloat16 if faster and torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
