"""`python -m stages.sweep submit` refuses, in one line and before anything is submitted or written: a bad grid,
a param value stages/config.py rejects, a dirty workspace, a commit that is not on the Git remote, no DVC remote,
and no sbatch. No cluster needed: each refusal comes before sbatch would run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages import sweep
from stages.errors import ParamsError, StageError
from tests.helpers import REPO

GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **GIT, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1", **(env or {})}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def refused(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """The one error line of a submit that must be refused; nothing written."""
    done = run(cwd, sys.executable, "-m", "stages.sweep", "submit", "s", *args, env=env)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert not (cwd / "sweeps").exists()
    return done.stderr.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A Git + DVC repository with this project's params.yaml, committed, and a bare Git remote (origin)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "params.yaml", repo)
    for command in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "params"], ["git", "init", "-q", "--bare", str(tmp_path / "server")],
                    ["git", "remote", "add", "origin", str(tmp_path / "server")]):
        assert run(repo, *command).returncode == 0
    return repo


def test_a_bad_grid_or_a_bad_value_is_refused_before_anything(project: Path) -> None:
    assert refused(project, "-S", "train.seed=range(1").startswith(
        "error: -S train.seed=range(1: not a sweep DVC can read: ")
    assert refused(project, "-S", "train.seed=1,2", "-S", "train.lr=0.1,-1") == (
        "error: train.seed=1 train.lr=-1: params.yaml: train.lr: must be a number > 0")
    assert refused(project, "-S", "train.optimiser=adam").startswith("error: train.optimiser=adam: ")


def test_the_workspace_the_git_remote_the_dvc_remote_and_sbatch_are_checked_first(project: Path,
                                                                                   tmp_path: Path) -> None:
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("seed: 0", "seed: 1"))
    assert refused(project, "-S", "train.seed=1,2") == (
        "error: the workspace has uncommitted changes: the tasks clone the Git remote, so commit and push them first")
    assert run(project, "git", "checkout", "params.yaml").returncode == 0
    assert refused(project, "-S", "train.seed=1,2").startswith("error: commit ")
    assert run(project, "git", "push", "-q", "origin", "main").returncode == 0
    assert refused(project, "-S", "train.seed=1,2").startswith("error: no default DVC remote")
    assert run(project, "dvc", "remote", "add", "-d", "team", str(tmp_path / "dvc-remote")).returncode == 0
    assert run(project, "git", "commit", "-qam", "remote").returncode == 0
    assert run(project, "git", "push", "-q", "origin", "main").returncode == 0
    # A PATH with git, dvc and python but no Slurm.
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("git", "dvc"):
        (tools / tool).symlink_to(shutil.which(tool))
    assert refused(project, "-S", "train.seed=1,2", env={"PATH": str(tools)}) == (
        "error: sbatch: not on PATH (submit from a node with Slurm's client commands)")


def test_the_job_script_runs_each_point_in_its_own_clone_and_pushes_only_its_experiment() -> None:
    script = sweep.job_script(sweep="s", points=[["train.seed=1", "train.lr=0.1"], ["train.seed=2", "x=a b"]],
                              commit="abc123", remote_url="/srv/git/mnist", setup="source /shared/venv/bin/activate",
                              mnist_dir=None, allow_web=False, logs=Path("/home/u/mnist/sweeps/s/logs"),
                              options=["--time=30:00", "--gpus-per-task=1"], max_running=4)
    for line in ("#SBATCH --job-name=mnist-sweep-s", "#SBATCH --array=0-1%4", "#SBATCH --time=30:00",
                 "#SBATCH --ntasks=1", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --output=/home/u/mnist/sweeps/s/logs/%A_%a.log",
                 "  0) set -- -S train.seed=1 -S train.lr=0.1 ;;", "  1) set -- -S train.seed=2 -S 'x=a b' ;;",
                 "source /shared/venv/bin/activate", "git checkout -q abc123", 'dvc exp run --name "$name" "$@"',
                 'dvc exp push origin "$name"', "dvc pull -q params download || {",
                 "dvc status -q params download || {"):
        assert line in script, line
    assert "${SLURM_TMPDIR:-${TMPDIR:-/tmp}}" in script and "trap 'cd / && rm -rf \"$scratch\"' EXIT" in script
    # bash reads it (no syntax error)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_each_tasks_latest_attempt_is_read_from_slurms_rows() -> None:
    # Rows as sacct and squeue gave them for a 3-task array (job 30) and a resubmission of task 2 (job 41):
    # task 0 killed with kill -9, task 1 past its time limit, task 2 cancelled while pending, then running again.
    rows = ["30_0|FAILED|0:9|/home/u/mnist", "30_1|TIMEOUT|0:0|/home/u/mnist",
            "30_[1-2]|CANCELLED by 0|0:0|/home/u/mnist", "41_[2]|PENDING|0:0|/home/u/mnist",
            "41_2|RUNNING|0:0|/home/u/mnist"]
    tasks = sweep.parse_accounting(rows)
    assert [(t.index, t.job, t.state, t.exit_code) for t in tasks.values()] == [
        (0, 30, "failed", "0:9"), (1, 30, "timed out", "0:0"), (2, 41, "running", "0:0")]
    pending = sweep.parse_accounting(["7_[0-199%10]|PENDING|0:0|/w"])
    assert sorted(pending) == list(range(200)) and {t.state for t in pending.values()} == {"pending"}
    line = sweep.status_line("s", tasks[0], arrived=False)
    assert line.startswith("s-0  failed (signal 9) not on the Git remote; no log at /home/u/mnist/sweeps/s/logs/30_0")


def test_the_grid_is_the_product_of_every_sweep_as_dvc_expands_it() -> None:
    # The order of `dvc exp run --queue`: the first -S varies slowest.
    assert sweep.grid(["train.seed=range(0,6,3)", "params.yaml:train.lr=0.1,1e-3", "train.schedule=constant"]) == [
        ["train.seed=0", "train.lr=0.1", "train.schedule=constant"],
        ["train.seed=0", "train.lr=0.001", "train.schedule=constant"],
        ["train.seed=3", "train.lr=0.1", "train.schedule=constant"],
        ["train.seed=3", "train.lr=0.001", "train.schedule=constant"]]
    assert sweep.grid(["train.target_accuracy=choice(0.99,0.995)", "train.augment.rotate=5"]) == [
        ["train.target_accuracy=0.99", "train.augment.rotate=5"],
        ["train.target_accuracy=0.995", "train.augment.rotate=5"]]
    for sets, words in ((["train.lr=interval(0,1)"], "only comma lists, range(...) and choice(...)"),
                        (["train.lr=glob(*)"], "only comma lists, range(...) and choice(...)"),
                        (["other.yaml:train.lr=1"], "the pipeline's parameters are all in params.yaml")):
        with pytest.raises(StageError, match=re.escape(words)):
            sweep.grid(sets)


def test_each_point_is_applied_to_params_yaml_as_dvc_applies_it(project: Path, monkeypatch) -> None:
    monkeypatch.chdir(project)
    sweep.check_points([["train.lr=0.1", "++train.seed=3"], ["train.augment.rotate=0"]])
    for point, expected in ((["train.nosuch=1"], "train.nosuch=1: Key 'nosuch' is not in struct"),
                            (["+train.lr=0.1"], "+train.lr=0.1: params.yaml has this key already (drop the +)"),
                            (["~train.nosuch"], "~train.nosuch: params.yaml has no such key"),
                            (["+train.extra=1"], "+train.extra=1: params.yaml: unknown key 'train.extra'")):
        with pytest.raises(ParamsError, match=re.escape(expected)):
            sweep.check_points([point])
