"""Where training runs: CUDA GPUs this PyTorch build cannot drive, and arithmetic a device does not train in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from stages import device, params
from stages.errors import ParamsError, StageError
from stages.step import autocast_dtype

# torch.cuda.get_arch_list() of a CUDA 13 wheel, and of an older one that still carried PTX for sm_50.
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
WITH_PTX = ["sm_50", "sm_60", "sm_70", "compute_50"]


@pytest.mark.parametrize("capability, arch_list, supported", [
    ((9, 0), CU130, True),  # H100
    ((8, 9), CU130, True),  # L4, Ada: sm_86's cubin runs on 8.9
    ((12, 1), CU130, True),  # a newer minor of a built major
    ((6, 1), CU130, False),  # GTX 1080: older than every architecture of the build
    ((7, 0), CU130, False),  # V100: sm_75 is not for 7.0
    ((6, 1), WITH_PTX, True),  # sm_60's cubin
    ((5, 2), WITH_PTX, True),  # compute_50's PTX, compiled by the driver
    ((9, 0), ["sm_90a"], True),  # arch-specific: only its own GPU
    ((10, 0), ["sm_90a"], False),
    ((13, 0), CU130, True),  # a future major: compute_120's PTX
])
def test_a_gpu_is_supported_where_the_build_has_its_kernels(capability, arch_list, supported) -> None:
    assert device.cuda_arch_supported(capability, arch_list) is supported


def fake_gpu(monkeypatch, capability: tuple[int, int], arch_list: list[str] = CU130) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: arch_list)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA GeForce GTX 1080")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_skips_a_gpu_without_kernels_in_one_line_and_explicit_cuda_refuses_it(monkeypatch, capsys) -> None:
    fake_gpu(monkeypatch, (6, 1))
    assert device.resolve_device("auto") == torch.device("cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['train.device auto: not CUDA: NVIDIA GeForce GTX 1080 (compute capability 6.1) has no kernels '
                   'in this PyTorch build (built for sm_75 and up): it would fail with "no kernel image is '
                   'available"; training on cpu']
    with pytest.raises(StageError, match=r"train.device: 'cuda': NVIDIA GeForce GTX 1080 .* use 'auto' or 'cpu'"):
        device.resolve_device("cuda")


def test_auto_takes_a_supported_gpu_silently(monkeypatch, capsys) -> None:
    fake_gpu(monkeypatch, (9, 0))
    assert device.resolve_device("auto") == torch.device("cuda")
    assert capsys.readouterr().err == ""


def test_bf16_on_mps_is_refused_in_one_line_and_auto_trains_fp32_there() -> None:
    with pytest.raises(StageError, match=r"^params.yaml: train.precision: 'bf16' is not trained on MPS"):
        autocast_dtype("bf16", torch.device("mps"))
    assert autocast_dtype("fp32", torch.device("mps")) is None


@pytest.mark.parametrize("train_device", ["auto", "mps"])
def test_the_params_stage_refuses_bf16_where_the_device_is_an_apple_gpu(project: Path, monkeypatch,
                                                                         train_device: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"].update(device=train_device, precision="bf16")
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="train.precision: 'bf16' is not trained on MPS.*no stage ran"):
        params.main(params.parser().parse_args([]))
    assert not (project / "reports" / "params.ok").exists()
    raw["train"]["precision"] = "fp32"
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    params.main(params.parser().parse_args([]))
    assert (project / "reports" / "params.ok").exists()


def test_the_precision_report_names_the_device_train_resolves_to(project: Path, monkeypatch, capsys) -> None:
    from stages import precision

    fake_gpu(monkeypatch, (9, 0))
    monkeypatch.setattr(precision, "device_info", lambda d: {"device": "cuda:0", "device_name": "NVIDIA H100"})
    monkeypatch.setattr(precision, "measure", lambda *a, **k: pytest.fail("the CPU probe ran for a GPU"))
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"].update(device="auto", precision="bf16")
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    precision.main(precision.parser().parse_args([]))
    assert capsys.readouterr().out == ("train.device auto trains on cuda:0 (NVIDIA H100): fp32 is advised there; "
                                       "train.precision is bf16\n")
