"""Helpers for the end-to-end tests: a temporary git + DVC copy of this project, and the dvc queue.

conftest.py turns make_repo into the module-scoped fixture `dvc_repo`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from tests.helpers import REPO, write_dataset


def sh(repo: Path, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def make_repo(root: Path, data: Path | None = None, repro: bool = True,
              device: str = "cpu") -> tuple[Path, dict[str, str]]:
    """A fresh git+DVC copy of this project in root/repo, set up for tiny data (in `data`, by default
    root/mnist) and train.device `device`, with `dvc repro` run once and its results committed unless `repro`
    is False."""
    repo = root / "repo"
    repo.mkdir()
    data = data or root / "mnist"
    shutil.copytree(REPO / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", "params.schema.json"):
        shutil.copy(REPO / name, repo / name)
    md5 = write_dataset(data, n_train=400, n_test=100, gz=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(md5=md5, sources=[str(root / "no-such-mirror")], holdout_size=100)
    params["train"].update(epochs=2, batch_size=50, device=device)
    params["plots"].update(dpi=40, misclassified=20)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = {**os.environ, "MNIST_DIR": str(data), "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
           "HOME": str(root), "PYTHONPATH": ""}
    sh(repo, "git", "init", "-q", "-b", "main", env=env)
    sh(repo, "dvc", "init", "-q", env=env)
    # The project's DVC config and plot templates: the offline plots page (vega/page.html), the confusion matrix.
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", repo / ".dvc" / "plots")
    shutil.copytree(REPO / "vega", repo / "vega", ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-q", "-m", "pipeline", env=env)
    if not repro:
        return repo, env
    out = sh(repo, "dvc", "repro", env=env)
    stages = ("params", "download", "corrupt", "train", "evaluate", "plots")
    assert all(f"Running stage '{s}'" in out for s in stages), out
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-q", "-m", "first run", env=env)
    return repo, env


def start_queue(repo: Path, env: dict[str, str], jobs: int) -> None:
    """`dvc queue start -j jobs`, returning at once.

    Not through `sh`: the workers it forks inherit its stdout and stderr, so reading
    those to their end would wait for the workers to finish.
    """
    done = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=env, timeout=120,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert done.returncode == 0


def experiment_refs(repo: Path, env: dict[str, str]) -> set[str]:
    """The Git refs of finished experiments (refs/exps/<baseline commit>/<name>), read without DVC."""
    refs = sh(repo, "git", "for-each-ref", "--format=%(refname)", "refs/exps", env=env).split()
    return {r for r in refs if re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/[^/]+", r)}


def wait_queue(repo: Path, env: dict[str, str], tasks: int) -> None:
    """Wait until the repository has `tasks` finished experiments and its queue is idle; fail on a failed one.

    It waits on the experiments' Git refs, which cost nothing to read: `dvc queue status` takes seconds
    of a CPU that the workers need, so it runs only every 15 s, and once the refs are all there.
    """
    deadline, asked = time.monotonic() + 400, time.monotonic()
    while time.monotonic() < deadline:
        done = len(experiment_refs(repo, env)) >= tasks
        if done or time.monotonic() - asked > 15:
            status, asked = sh(repo, "dvc", "queue", "status", env=env), time.monotonic()
            if "Failed" in status or (done and "Queued" not in status and "Running" not in status):
                break
        time.sleep(1)
    assert "Failed" not in status, sh(repo, "dvc", "queue", "logs", status.split()[-1], env=env)
    assert done, status
