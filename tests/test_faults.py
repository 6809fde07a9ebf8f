"""The machine's faults, on a real file system: a disk that fills while the checkpoint or the metrics are
written (by a stage alone and under `dvc repro`), a read-only workspace, and two `dvc repro` at once.

Each case checks the line printed, the exit status, that no partial output is left, and the same bytes
once the fault is cleared. The workspace is a small tmpfs mounted for the test, so this needs root (as CI
is); where mounting is not allowed the tests skip and say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e import make_repo, sh
from tests.helpers import REPO, file_hashes, write_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("faults")]

PAGE = 4096  # tmpfs allocates whole pages: every small file takes one
FULL = "could not be written: the disk is full (No space left on device); free some space and run again"


def _mount(point: Path) -> None:
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(done.stderr or done.stdout).strip()}): these faults need root")


def _unmount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 48 MB tmpfs, unmounted afterwards."""
    point = tmp_path / "disk"
    _mount(point)
    yield point
    _unmount(point)


def fill(point: Path, leave: int) -> Path:
    """Fill the file system at point with one file, so that `leave` bytes (whole pages) stay free."""
    stats = os.statvfs(point)
    filler = point / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - leave))
    assert os.statvfs(point).f_bavail * stats.f_frsize == leave
    return filler


def pages(*paths: Path) -> int:
    """Pages the files take (under folders too), as tmpfs counts them."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(-(-f.stat().st_size // PAGE) for f in files)


def leftovers(root: Path) -> list[str]:
    """Temp files of an interrupted atomic write (stages/atomic.py names them .NAME.XXXX.tmp)."""
    return [str(p.relative_to(root)) for p in root.rglob("*.tmp")]


def stage(root: Path, name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MNIST_DIR", None)
    return subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_disk_that_fills_while_the_checkpoint_or_the_metrics_are_written(disk: Path) -> None:
    root = disk / "project"
    md5 = write_dataset(root / "data" / "raw", n_train=300, n_test=100)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(md5=md5, sources=[str(root / "data" / "raw")], holdout_size=50)
    raw["train"].update(epochs=1, batch_size=50, device="cpu", precision="fp32")
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    # With room: the bytes every later run must give, and how much each step writes.
    for name in ("corrupt", "train", "evaluate"):
        assert stage(root, name).returncode == 0
    model, metrics = (root / "models/model.pt").read_bytes(), (root / "reports/metrics.json").read_bytes()
    history, eval_rows = pages(root / "reports/train/plots"), pages(root / "reports/eval")
    model_pages = pages(root / "models/model.pt")
    assert model_pages >= 8  # so that half of it is a clear margin on either side

    # train: the history fits (one page a file; DVCLive rewrites metrics.json in place), the checkpoint does not.
    shutil.rmtree(root / "models")
    shutil.rmtree(root / "reports/train")
    filler = fill(disk, (history + 1 + model_pages // 2) * PAGE)
    done = stage(root, "train")
    assert done.returncode == 2 and done.stderr.splitlines()[-1] == f"error: models/model.pt: {FULL}", done.stderr
    assert not (root / "models/model.pt").exists() and leftovers(root) == []
    filler.unlink()
    assert stage(root, "train").returncode == 0
    assert (root / "models/model.pt").read_bytes() == model

    # evaluate: the per-image and per-digit rows and the model card fit, the metrics file after them does not.
    card_pages = pages(root / "reports/model_card.md")
    shutil.rmtree(root / "reports/eval")
    (root / "reports/metrics.json").unlink()
    (root / "reports/model_card.md").unlink()
    filler = fill(disk, (eval_rows + card_pages) * PAGE)
    done = stage(root, "evaluate")
    assert done.returncode == 2 and done.stderr.splitlines()[-1] == f"error: reports/metrics.json: {FULL}", done.stderr
    assert not (root / "reports/metrics.json").exists() and leftovers(root) == []
    filler.unlink()
    assert stage(root, "evaluate").returncode == 0
    assert (root / "reports/metrics.json").read_bytes() == metrics


@pytest.fixture(scope="module")
def repo_on_disk(tmp_path_factory) -> Iterator[tuple[Path, dict[str, str], Path]]:
    """A git+DVC repository of this project on its own tmpfs (data, HOME and caches of tools outside it)."""
    outside = tmp_path_factory.mktemp("faults")
    point = outside / "disk"
    _mount(point)
    repo, env = make_repo(point, data=outside / "mnist", repro=False)
    env.update(HOME=str(outside), PYTHONDONTWRITEBYTECODE="1")
    yield repo, env, point
    _unmount(point)


def results(repo: Path) -> dict[str, bytes]:
    """What a rerun must give again: the checkpoint and the test metrics."""
    return {name: (repo / name).read_bytes() for name in ("models/model.pt", "reports/metrics.json")}


def run(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)


# train's outputs, as dvc.yaml declares them (outs and metrics)
TRAIN_OUTS = [next(iter(out)) if isinstance(out, dict) else out
              for kind in ("outs", "metrics") for out in
              yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"].get(kind, [])]


def test_dvc_repro_on_a_full_disk_names_the_file_and_the_rerun_gives_the_same_bytes(repo_on_disk) -> None:
    repo, env, point = repo_on_disk
    sh(repo, "dvc", "repro", env=env)  # in case this test runs first
    before = results(repo)["models/model.pt"]
    for out in TRAIN_OUTS:  # lost, as if never made: the disk holds only what was there before train's first run
        shutil.rmtree(repo / out) if (repo / out).is_dir() else (repo / out).unlink()
    # Room for the history and DVC's own lock files, and for half of the checkpoint.
    filler = fill(point, 16 * PAGE)
    done = run(repo, env, "dvc", "repro", "-f", "-s", "train")  # -f: trained, not restored from the run cache
    assert done.returncode != 0
    assert f"error: models/model.pt: {FULL}" in done.stderr, done.stderr
    assert "failed to reproduce 'train'" in done.stderr
    assert not (repo / "models/model.pt").exists() and leftovers(repo) == []
    filler.unlink()
    sh(repo, "dvc", "repro", "-f", "-s", "train", env=env)
    assert (repo / "models/model.pt").read_bytes() == before


def test_a_second_dvc_repro_while_one_runs_is_refused_and_the_first_gives_the_same_bytes(repo_on_disk) -> None:
    repo, env, _ = repo_on_disk
    sh(repo, "dvc", "repro", env=env)  # in case this test runs first
    before = results(repo)
    # -s: only these two stages, not their upstream ones again (-f alone forces those too)
    first = subprocess.Popen(["dvc", "repro", "-f", "-s", "train", "evaluate"], cwd=repo, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in first.stdout:  # the first holds DVC's lock from here until it ends
        if "Running stage 'train'" in line:
            break
    second = run(repo, env, "dvc", "repro")
    rest, _ = first.communicate(timeout=300)
    assert first.returncode == 0, rest
    assert second.returncode != 0
    # DVC's own refusal names the outputs the first run holds, and its process.
    assert "is busy, it is being blocked by" in second.stderr and f"(PID {first.pid})" in second.stderr, second.stderr
    assert results(repo) == before


def test_a_read_only_workspace_changes_nothing_and_predict_and_report_still_work(repo_on_disk) -> None:
    repo, env, point = repo_on_disk
    sh(repo, "dvc", "repro", env=env)  # in case this test runs first
    before = file_hashes(repo)
    assert subprocess.run(["mount", "-o", "remount,ro", str(point)], capture_output=True).returncode == 0
    try:
        set_seed = run(repo, env, "dvc", "exp", "run", "-S", "train.seed=3")
        assert set_seed.returncode != 0 and "Read-only file system" in set_seed.stderr, set_seed.stderr
        predicted = run(repo, env, sys.executable, "-m", "stages.predict", str(REPO / "tests/data/seven.png"))
        assert predicted.returncode == 0 and predicted.stdout.startswith(f"{REPO / 'tests/data/seven.png'}: ")
        reported = run(repo, env, sys.executable, "-m", "stages.report")
        assert reported.returncode == 0 and "| workspace |" in reported.stdout, reported.stderr
        assert file_hashes(repo) == before
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(point)], capture_output=True)
