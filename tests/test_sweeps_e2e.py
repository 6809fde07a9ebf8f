"""Sweeps on several machines, as the README's "Sweeps on several machines" runs them.

A bare Git repository stands for the team's Git server and a local directory for the
DVC remote; three clones of it are three machines. Real `dvc` commands throughout.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import run_queue, sh, start_queue

pytestmark = pytest.mark.e2e


def experiments(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """`dvc exp show --json`'s experiments by name: params, metrics and output hashes under "data", and
    "state" (queued, running, success, failed) from the executor that ran it, if any."""
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json", env=env))
    return {rev["name"]: {**rev, "state": (exp.get("executor") or {}).get("state")}
            for commit in shown for exp in (commit.get("experiments") or []) for rev in exp["revs"] if rev.get("name")}


def machine(server: Path, path: Path, env: dict[str, str]) -> Path:
    sh(server.parent, "git", "clone", "-q", str(server), str(path), env=env)
    sh(path, "dvc", "pull", env=env)
    return path


def test_two_machines_publish_sweeps_and_a_third_pulls_them_all(dvc_repo, tmp_path) -> None:
    repo, env = dvc_repo
    server, remote = tmp_path / "server.git", tmp_path / "dvc-remote"
    sh(repo, "dvc", "remote", "add", "-d", "team", str(remote), env=env)
    sh(repo, "git", "commit", "-q", "-am", "The team's DVC remote", env=env)
    sh(repo, "dvc", "push", env=env)
    sh(tmp_path, "git", "clone", "-q", "--bare", str(repo), str(server), env=env)

    # Machine A: its own queue, then publishes its experiments with `dvc exp push`.
    a = machine(server, tmp_path / "a", env)
    sh(a, "dvc", "exp", "run", "--queue", "-S", "train.seed=3,4", env=env)
    run_queue(a, env, jobs=2)  # two workers at once
    for exp in experiments(a, env).values():
        assert "accuracy" in exp["data"]["metrics"]["reports/metrics.json"]["data"]["test"]
        assert exp["data"]["metrics"]["reports/train/metrics.json"]["data"]["epochs_run"] == 2
    sh(a, "dvc", "exp", "push", "origin", env=env)
    # A Git remote that cannot be reached: DVC's own error, and the experiments stay.
    failed = subprocess.run(["dvc", "exp", "push", str(tmp_path / "no-such-server.git")], cwd=a, env=env,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "ERROR" in failed.stderr and "Traceback" not in failed.stderr
    assert len(experiments(a, env)) == 2

    # Machine B: pushes each experiment as it finishes (exp.auto_push), Git refs and DVC outputs.
    b = machine(server, tmp_path / "b", env)
    sh(b, "dvc", "config", "--local", "exp.auto_push", "true", env=env)
    sh(b, "dvc", "config", "--local", "exp.git_remote", "origin", env=env)
    sh(b, "dvc", "exp", "run", "--queue", "-S", "train.seed=5,6", env=env)
    run_queue(b, env, jobs=2)
    from_b = experiments(b, env)
    assert len(from_b) == 2
    on_server = sh(b, "dvc", "exp", "list", "origin", "--name-only", env=env).split()
    assert set(from_b) <= set(on_server) and len(on_server) == 4

    # Machine C: pulls everything and sees all four, summarised as one sweep.
    c = machine(server, tmp_path / "c", env)
    sh(c, "dvc", "exp", "pull", "origin", env=env)
    pulled = experiments(c, env)
    assert len(pulled) == 4
    seeds = sorted(e["data"]["params"]["params.yaml"]["data"]["train"]["seed"] for e in pulled.values())
    assert seeds == [3, 4, 5, 6]
    table = sh(c, sys.executable, "-m", "stages.report", env=env)
    assert table.startswith("| experiment | seed | test accuracy (%) |")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| **", "| exp"))]
    assert sorted(r.split("|")[1].strip() for r in rows) == sorted(pulled)
    assert all(" cpu (" in r for r in rows)
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| **")] == [
        "**mean**", "**std**", "**min**", "**max**"]
    assert table.strip().splitlines()[-1].endswith(" of 4 reach >= 99.41% test accuracy.")

    # One of B's experiments, applied on C with its outputs pulled: exactly the model B produced.
    name = sorted(from_b)[0]
    produced = from_b[name]["data"]["outs"]["models/model.pt"]["hash"]
    sh(c, "dvc", "exp", "apply", name, env=env)
    sh(c, "dvc", "pull", env=env)
    assert hashlib.md5((c / "models" / "model.pt").read_bytes()).hexdigest() == produced


def test_a_running_experiment_shows_its_latest_epoch(dvc_repo) -> None:
    repo, env = dvc_repo
    epochs = 40  # a poll of `dvc exp show` took as long as 3-4 epochs on 2 cores: some 10 polls while it runs
    sh(repo, "dvc", "exp", "run", "--queue", "-n", "long-e2e", "-S", f"train.epochs={epochs}", env=env)
    start_queue(repo, env, jobs=1)
    steps, state = [], None
    deadline = time.monotonic() + 300
    while state not in ("success", "failed") and time.monotonic() < deadline:
        exp = experiments(repo, env).get("long-e2e", {})
        state = exp.get("state")
        summary = ((exp.get("data") or {}).get("metrics") or {}).get("reports/train/metrics.json", {}).get("data", {})
        if state == "running" and "step" in summary:
            steps.append(summary["step"])
    # While it ran, `dvc exp show` read its workspace and saw the epochs as they ended; at the end, the summary.
    assert state == "success"
    assert steps and steps == sorted(steps) and 1 <= steps[0] < epochs, steps
    final = experiments(repo, env)["long-e2e"]["data"]["metrics"]["reports/train/metrics.json"]["data"]
    assert final["epochs_run"] == epochs and "step" not in final
    logs = sh(repo, "dvc", "queue", "logs", "long-e2e", env=env)
    assert f"epoch  1/{epochs}" in logs and f"epoch {epochs}/{epochs}" in logs
