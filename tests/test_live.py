"""Live progress: the train stage's history and summary hold each epoch as soon as it has ended."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stages import paths
from stages.device import cpu_model, device_info
from tests.helpers import REPO, set_param


def history_steps(project: Path, metric: str) -> list[int]:
    path = project / "reports" / "train" / "plots" / "metrics" / f"{metric}.tsv"
    with path.open() as rows:
        return [int(row["step"]) for row in csv.DictReader(rows, delimiter="\t")]


def test_each_epoch_is_in_the_history_and_summary_as_soon_as_it_ends(project: Path) -> None:
    set_param(project, "train.epochs", 4)
    set_param(project, "train.precision", "fp32")
    summary = project / paths.TRAIN_METRICS
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=project, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in proc.stdout:
        if not line.startswith("epoch "):
            continue
        epoch = int(line.split()[1].split("/")[0])
        # The line is printed after the epoch is logged: its files already hold it (or a later epoch, where this
        # reader fell behind on a busy machine), and the model comes only after the last epoch. The model is looked
        # for before the summary is read, so that a model seen implies a summary at the last epoch.
        model_there = (project / "models" / "model.pt").exists()
        live = json.loads(summary.read_text())
        seen.append(epoch)
        if "step" not in live:  # so far behind that the run has ended since: the final summary replaced it
            assert live["epochs_run"] == 4
            continue
        assert live["step"] >= epoch and set(live["val"]) == {"accuracy", "loss"}
        for name in ("val/accuracy", "train/loss"):  # each epoch once, in order, up to the summary's at least
            steps = history_steps(project, name)
            assert steps == list(range(1, len(steps) + 1)) and len(steps) >= live["step"], (name, steps)
        assert not model_there or live["step"] == 4
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert seen == [1, 2, 3, 4]  # one line an epoch in a log: no progress bar off a terminal
    assert "img/s" not in proc.stderr.read()

    # At the end the summary holds what a person compares across runs (in `dvc metrics show`), run.json the rest,
    # and the model is there.
    final = json.loads(summary.read_text())
    assert set(final) == {"epochs_run", "train_seconds", "device"}
    assert final["epochs_run"] == 4 and final["device"] == "cpu" and final["train_seconds"] > 0
    run = json.loads((project / "reports" / "train" / "run.json").read_text())
    assert set(run) == {"stopped_because", "saved_epoch", "saved_val_accuracy", "device_name", "precision",
                        "kernels", "torch"}
    assert run["stopped_because"] == "epochs" and run["torch"] == torch.__version__ and run["precision"] == "fp32"
    # What this machine ran: the CPU kernels PyTorch dispatched to (AVX2 here, AVX512 on others).
    assert run["kernels"] == torch.backends.cpu.get_cpu_capability()
    assert run["device_name"] == cpu_model() != ""
    assert history_steps(project, "val/accuracy") == [1, 2, 3, 4]
    assert (project / "models" / "model.pt").exists()


@pytest.mark.parametrize("visible, index, expected", [(None, 0, 0), ("2,3", 1, 3), ("GPU-8f3c", 0, 0), ("1", 0, 1)])
def test_cuda_index_is_the_machines_not_the_workers(monkeypatch, visible, index, expected) -> None:
    # A queue worker pinned with CUDA_VISIBLE_DEVICES sees its GPU as cuda:0; the report names the machine's GPU.
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU {i}")
    expected_info = {"device": f"cuda:{expected}", "device_name": f"GPU {index}"}
    assert device_info(torch.device("cuda", index)) == expected_info


def run_on_a_terminal(project: Path, module: str) -> str:
    """What `python -m module` shows on a 120-column terminal (a pseudo-terminal), stdout and stderr together."""
    import fcntl
    import pty
    import struct
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=project, stdout=child, stderr=child,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(child)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert proc.wait(timeout=120) == 0, shown.decode(errors="replace")
    return shown.decode(errors="replace")


def test_a_terminal_shows_progress_within_the_epoch(project: Path) -> None:
    # (Off a terminal there is no bar: the test above reads a log.)
    set_param(project, "train.epochs", 2)
    shown = run_on_a_terminal(project, "stages.train")
    assert "epoch 1/2:" in shown and "img/s]" in shown  # tqdm's bar: images done, images/s, time left
    assert "epoch  1/2  train loss" in shown and "epoch  2/2  train loss" in shown
