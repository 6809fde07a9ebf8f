"""Where training runs: the device, its name, the CPU's model and kernels."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys

import torch

from stages.errors import StageError


def cuda_arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a PyTorch build compiled for `arch_list` (torch.cuda.get_arch_list()) has kernels for a GPU of
    compute `capability`.

    A cubin (sm_XY) runs on GPUs of the same major version and a minor at least Y (sm_80 runs on an sm_86);
    an arch-specific one (sm_90a) only on its own GPU; PTX (compute_XY) is compiled by the driver for any
    GPU from XY up.
    """
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
        if not match:
            continue
        kind, major, minor, suffix = match[1], int(match[2]), int(match[3]), match[4]
        if suffix:
            if (major, minor) == capability:
                return True
        elif kind == "sm" and major == capability[0] and minor <= capability[1]:
            return True
        elif kind == "compute" and (major, minor) <= capability:
            return True
    return False


def _cuda_problem() -> str | None:
    """Why this machine's CUDA GPU cannot train with this PyTorch build; None when it can."""
    capability = torch.cuda.get_device_capability()
    arch_list = torch.cuda.get_arch_list()
    if not arch_list or cuda_arch_supported(capability, arch_list):
        return None
    built = sorted({a.split("_")[1].rstrip("af") for a in arch_list if a.startswith(("sm_", "compute_"))}, key=int)
    return (f"{torch.cuda.get_device_name()} (compute capability {capability[0]}.{capability[1]}) has no kernels "
            f"in this PyTorch build (built for sm_{built[0]} and up): it would fail with "
            f"\"no kernel image is available\"")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit accelerator must exist.

    A CUDA GPU that this PyTorch build has no kernels for (older than its architectures) counts as absent:
    `auto` says so in one line on stderr and goes on to MPS or the CPU; an explicit `cuda` is an error.
    """
    has = {"cuda": torch.cuda.is_available(),
           "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
           "cpu": True}
    unusable = _cuda_problem() if has["cuda"] else None
    if unusable:
        has["cuda"] = False
    if name == "auto":
        chosen = next(d for d in ("cuda", "mps", "cpu") if has[d])
        if unusable:
            print(f"train.device auto: not CUDA: {unusable}; training on {chosen}", file=sys.stderr)
        return torch.device(chosen)
    if unusable and name == "cuda":
        raise StageError(f"params.yaml: train.device: 'cuda': {unusable}; use 'auto' or 'cpu', or a PyTorch "
                         f"build for this GPU")
    if not has[name]:
        available = ", ".join(d for d in ("cuda", "mps", "cpu") if has[d])
        raise StageError(f"params.yaml: train.device: {name!r} is not available on this machine "
                         f"(available: {available}; 'auto' picks the best)")
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """StageError for an arithmetic that this device does not train in: bf16 on MPS.

    PyTorch's MPS autocast takes bfloat16 only from macOS 14, and no run of this project has trained in it on an
    Apple GPU, so it is refused rather than trained in float32 under a bf16 label.
    """
    if precision == "bf16" and device.type == "mps":
        raise StageError("params.yaml: train.precision: 'bf16' is not trained on MPS (Apple GPUs); "
                         "use 'fp32'")


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


def cpuinfo(key: str) -> str:
    """The value of the first `key` line of Linux's /proc/cpuinfo; '' where there is none."""
    try:
        with open("/proc/cpuinfo") as lines:
            return next((value.strip() for name, _, value in (line.partition(":") for line in lines)
                         if name.strip() == key), "")
    except OSError:
        return ""
