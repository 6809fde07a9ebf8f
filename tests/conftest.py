"""Shared fixtures: tiny, generated IDX datasets (never the network, never real MNIST)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch
import yaml

from stages import idx

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
REPO = Path(__file__).resolve().parent.parent


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n learnable 28x28 'digits': class c is a bright square of side 4 + 2c, shifted up to 2 px, on noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=g)]
    images = torch.randint(0, 40, (n, 28, 28), generator=g, dtype=torch.uint8)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    for i, (c, (dy, dx)) in enumerate(zip(labels.tolist(), shifts.tolist())):
        side = 4 + 2 * c
        top, left = 14 - side // 2 + dy, 14 - side // 2 + dx
        images[i, max(top, 0):top + side, max(left, 0):left + side] = 255
    return images, labels.to(torch.uint8)


def write_dataset(directory: Path, n_train: int = 600, n_test: int = 200, gz: bool = False) -> dict[str, str]:
    """Write the four IDX files (optionally gzipped) into directory; return their uncompressed MD5s."""
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_images(n_train, seed=1)
    test_x, test_y = make_images(n_test, seed=2)
    tensors = {"train-images-idx3-ubyte": train_x, "train-labels-idx1-ubyte": train_y,
               "t10k-images-idx3-ubyte": test_x, "t10k-labels-idx1-ubyte": test_y}
    md5 = {}
    for name, tensor in tensors.items():
        data = idx.encode(tensor)
        md5[name] = idx.md5(data)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return md5


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A directory with four small generated IDX files and their MD5s."""
    directory = tmp_path / "mnist"
    return directory, write_dataset(directory)


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    """A working directory laid out like the repository, with tiny generated data in data/raw."""
    md5 = write_dataset(tmp_path / "data" / "raw", n_train=300, n_test=100)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(md5=md5, sources=[str(tmp_path / "data" / "raw")], holdout_size=50)
    raw["train"].update(epochs=1, batch_size=50, device="cpu")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.delenv("MNIST_DEBUG", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh git+DVC copy of this project on tiny data, `dvc repro` run once, and the env to run dvc in;
    one per test module (tests/e2e.py)."""
    from tests.e2e import make_repo

    return make_repo(tmp_path_factory)
