"""End to end on a CUDA GPU: `dvc repro` of tiny generated data with `train.device: auto`.

Skipped, saying so, where PyTorch sees no usable CUDA GPU (CI and most laptops). On a GPU machine:
`python -m pytest tests/test_gpu_e2e.py`, or `python -m bench.gpu`, which runs it beside the real pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from stages.device import resolve_device
from tests.e2e import make_repo, sh


def usable_gpu() -> str | None:
    """None where `auto` trains on CUDA here; else why this test cannot run."""
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine (torch.cuda.is_available() is False)"
    if resolve_device("auto").type != "cuda":
        return "this machine's GPU has no kernels in this PyTorch build"
    return None


pytestmark = [pytest.mark.e2e, pytest.mark.skipif(usable_gpu() is not None, reason=str(usable_gpu()))]


def test_repro_with_device_auto_trains_and_evaluates_on_the_gpu(tmp_path: Path) -> None:
    repo, env = make_repo(tmp_path, device="auto")
    summary = json.loads((repo / "reports/train/metrics.json").read_text())
    run = json.loads((repo / "reports/train/run.json").read_text())
    assert summary["device"].startswith("cuda:") and run["kernels"] == "-", (summary, run)
    assert run["precision"] == "fp32"  # the default
    lrs = [float(line.split("\t")[-1]) for line in
           (repo / "reports/train/plots/metrics/lr.tsv").read_text().splitlines()[1:]]
    # onecycle starts at lr / 25 (PyTorch's div_factor): the schedule's float, not a float32 tensor's read back
    lr = yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"]
    assert lrs[0] == lr / 25, lrs
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert 0 <= metrics["test"]["accuracy"] <= 1 and 0 <= metrics["robustness"]["mean"] <= 1
    for png in ("training_curves", "confusion_matrix", "misclassified", "robustness_suite"):
        assert (repo / f"reports/plots/{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert "Data and pipelines are up to date." in sh(repo, "dvc", "repro", env=env)
