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
    name = ""
    if sys.platform == "linux":
        with open("/proc/cpuinfo") as cpuinfo:
            name = next((line.split(":", 1)[1] for line in cpuinfo if line.startswith("model name")), "")
    elif sys.platform == "darwin":
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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bfloat16 for autocast when asked for, or when `auto` on a CPU that does it natively; else None (fp32).

    `auto` keeps fp32 on CUDA: this 10k-parameter net is bound by kernel
    latency there, not arithmetic, and autocast's casts are extra kernels.
    On an H100, 15 epochs took 8.7 s in fp32 and 11.8 s in bf16 (bench/holdout.py).
    On a 2-core CPU with AMX, a bf16 training step of 64 images took about 15 ms, fp32 20 ms.
    """
    if precision == "fp32" or device.type == "mps":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return None
    # Native bf16 only (AVX512-BF16 or AMX, as cpuinfo reports them): AVX-512 without it (Skylake, Cascade
    # Lake) emulates bf16, and was never measured faster here. oneDNN's own check follows ONEDNN_MAX_CPU_ISA,
    # so under the AVX2 cap any x86 host trains in fp32, as an AVX2 CPU does.
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if native and torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
