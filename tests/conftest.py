"""Fixtures: tiny generated IDX datasets (never the network, never real MNIST) and the e2e repository."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from stages import data
from tests.helpers import REPO, make_images, write_dataset

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# The user cache directory of this test run (DVC's and any library's), never the user's own: shared by the
# run's test processes and the commands they start.
os.environ["XDG_CACHE_HOME"] = str(Path(tempfile.gettempdir()) / "mnist-dvc-tests"
                                   / os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid())))

# Each of xdist's test processes gets its share of the cores, for itself and the stage processes it starts
# (OMP_NUM_THREADS): two processes of two threads each on two cores made a 12 s training test take 130 s.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    _threads = max(1, torch.get_num_threads() // _workers)  # torch's default: the cores this process may use
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A directory with four small generated IDX files and their MD5s."""
    directory = tmp_path / "mnist"
    return directory, write_dataset(directory)


@pytest.fixture(scope="module")
def tiny() -> dict[str, torch.Tensor]:
    """600 training and 200 validation images, normalized, with labels: stages.train.train's inputs."""
    x, y = make_images(600, seed=1)
    vx, vy = make_images(200, seed=2)
    return {"train_x": data.normalize(x), "train_y": y.long(), "val_x": data.normalize(vx), "val_y": vy.long()}


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


@pytest.fixture(scope="session")
def dvc_repo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh git+DVC copy of this project on tiny data, `dvc repro` run once, and the env to run dvc in
    (tests/e2e.py); one for the whole session: the e2e tests add experiments and remotes, never remove any."""
    from tests.e2e import make_repo

    return make_repo(tmp_path_factory.mktemp("e2e"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest tests first, so that the two test processes (pyproject.toml) end at about the same time."""
    first = ("test_sweeps_e2e.py", "test_pipeline_e2e.py", "test_faults.py")
    items.sort(key=lambda item: first.index(item.path.name) if item.path.name in first else len(first))
