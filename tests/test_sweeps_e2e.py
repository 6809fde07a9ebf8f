"""Sweeps on several machines, as the README's "Sweeps on several machines" runs them.

A bare Git repository stands for the team's Git server and a local directory for the
DVC remote; three clones of it are three machines. Real `dvc` commands throughout.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e import sh, start_queue, wait_queue

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("sweeps_e2e")]  # one test process, one repository


def experiments(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """`dvc exp show --json`'s experiments by name: params, metrics and output hashes under "data", and
    "state" (queued, running, success, failed) from the executor that ran it, if any."""
    return by_name(json.loads(sh(repo, "dvc", "exp", "show", "--json", env=env)))


def by_name(shown: list[dict]) -> dict[str, dict]:
    return {rev["name"]: {**rev, "state": (exp.get("executor") or {}).get("state")}
            for commit in shown for exp in (commit.get("experiments") or []) for rev in exp["revs"] if rev.get("name")}


def machine(server: Path, path: Path, env: dict[str, str]) -> Path:
    sh(server.parent, "git", "clone", "-q", str(server), str(path), env=env)
    sh(path, "dvc", "pull", env=env)
    return path


def poll(repo: Path, env: dict[str, str], failed: list[str]) -> dict[str, dict] | None:
    """`dvc exp show`'s experiments, or None where this poll failed as it may while queued runs work.

    A poll may fail while a queued run's temporary files under .dvc/tmp/exps/ come or go, seen
    here with two queues at work: "failed to show experiments - directory '.../.dvc/tmp/exps/
    tmp.../.dvc' does not exist" and "unexpected error - [Errno 2] No such file or directory:
    '.../.dvc/tmp/exps/run/<rev>/<rev>.run'". Or it may hang, seen once in CI: pygit2 (1.21) failed to
    look up a blob in BlobIO's writer thread (NotFoundError) and returned without signalling its
    reader, which then waits forever. As a user would, the caller asks again (after Ctrl-C, here a
    timeout), a few times at most (`failed` counts them); any other failure fails the test.
    """
    try:
        shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, env=env, capture_output=True,
                               text=True, timeout=90)
    except subprocess.TimeoutExpired as hung:  # run() killed it; what it printed says why it hung
        printed = hung.stderr.decode(errors="replace") if isinstance(hung.stderr, bytes) else hung.stderr or ""
        failed.append(printed)
        assert "NotFoundError" in printed and len(failed) <= 5, printed
        return None
    if shown.returncode != 0:
        failed.append(shown.stderr)
        assert "/.dvc/tmp/exps/" in shown.stderr and len(failed) <= 5, shown.stderr
        time.sleep(1)
        return None
    return by_name(json.loads(shown.stdout))


def live_step(train: psutil.Process) -> int | None:
    """The epoch a running train stage's live summary (DVCLive's, in its workspace) has reached, if any."""
    try:
        return json.loads((Path(train.cwd()) / "reports" / "train" / "metrics.json").read_text()).get("step")
    except (FileNotFoundError, ValueError):  # no epoch ended yet, or caught mid-write
        return None


def held_at(repo: Path, epoch: int, deadline: float) -> tuple[psutil.Process, int]:
    """The train stage of the queued run in `repo`, stopped (SIGSTOP) once its live summary shows
    `epoch` or later, and the epoch it shows. Held, the run stays mid-way however fast the machine is,
    so a poll of `dvc exp show` lands while it runs: on a fast CI host 40 tiny epochs once ended
    between two polls, and the test saw none of them."""
    workspaces = str(repo / ".dvc" / "tmp" / "exps")
    while time.monotonic() < deadline:
        for train in psutil.process_iter(["cmdline", "cwd"]):
            if "stages.train" in (train.info["cmdline"] or []) and (train.info["cwd"] or "").startswith(workspaces):
                try:
                    step = live_step(train)
                    if step is not None and step >= epoch:
                        train.suspend()
                        step = live_step(train)  # again, now that it cannot move: that read was not mid-write
                        if step is not None:
                            return train, step
                        train.resume()
                except psutil.NoSuchProcess:  # it ended between two looks; the assertion below says so
                    pass
        time.sleep(0.05)  # reading a file and the process table: no CPU the run needs
    raise AssertionError(f"no train stage under {workspaces} reached epoch {epoch}")


def watch(repo: Path, env: dict[str, str], name: str) -> list[int]:
    """The epochs (`step`) that `dvc exp show` showed for experiment `name` while it ran, then its end.

    Its train stage is held twice, at its first epoch and two epochs later; each time `dvc exp show`
    must list the experiment as running at exactly the epoch its workspace's summary holds.
    """
    steps, failed, deadline = [], [], time.monotonic() + 400
    for _ in range(2):
        train, step = held_at(repo, steps[-1] + 2 if steps else 1, deadline)
        try:
            for _ in range(10):  # the first poll may come before DVC has written the run's state
                exp = (poll(repo, env, failed) or {}).get(name, {})
                summary = ((exp.get("data") or {}).get("metrics") or {}).get("reports/train/metrics.json", {})
                if exp.get("state") == "running" and "step" in summary.get("data", {}):
                    break
            assert exp.get("state") == "running" and summary.get("data", {}).get("step") == step, (step, exp)
            steps.append(step)
        finally:
            train.resume()
    state = "running"
    while state not in ("success", "failed") and time.monotonic() < deadline:
        shown = poll(repo, env, failed)
        state = (shown or {}).get(name, {}).get("state", state)
        time.sleep(1)  # each poll takes seconds of a CPU the experiments need
    assert state == "success", sh(repo, "dvc", "queue", "logs", name, env=env)
    return steps


def test_two_machines_publish_sweeps_watched_as_they_run_and_a_third_pulls_them_all(dvc_repo, tmp_path) -> None:
    repo, env = dvc_repo
    server, remote = tmp_path / "server.git", tmp_path / "dvc-remote"
    sh(repo, "dvc", "remote", "add", "-d", "team", str(remote), env=env)
    sh(repo, "git", "commit", "-q", "-am", "The team's DVC remote", env=env)
    sh(repo, "dvc", "push", env=env)
    sh(tmp_path, "git", "clone", "-q", "--bare", str(repo), str(server), env=env)

    # Machine A: its own queue of two, two workers at once; it publishes with `dvc exp push` afterwards.
    a = machine(server, tmp_path / "a", env)
    sh(a, "dvc", "exp", "run", "--queue", "-S", "train.seed=3,4", env=env)
    # Machine B, at the same time: pushes each experiment as it finishes (exp.auto_push), Git refs and DVC
    # outputs; its one experiment trains long enough to be watched while it runs.
    b = machine(server, tmp_path / "b", env)
    sh(b, "dvc", "config", "--local", "exp.auto_push", "true", env=env)
    sh(b, "dvc", "config", "--local", "exp.git_remote", "origin", env=env)
    epochs = 10  # watch() holds the run mid-way; early stopping off: on tiny data it could end it first
    sh(b, "dvc", "exp", "run", "--queue", "-n", "long-e2e", "-S", "train.seed=5", "-S", f"train.epochs={epochs}",
       "-S", "train.patience=0", env=env)
    start_queue(a, env, jobs=2)
    start_queue(b, env, jobs=1)

    # While B's experiment ran, `dvc exp show` read its workspace and saw the epochs as they ended.
    steps = watch(b, env, "long-e2e")
    assert 1 <= steps[0] and steps[0] + 2 <= steps[1] < epochs, steps  # it moved on between the two looks
    final = experiments(b, env)["long-e2e"]["data"]["metrics"]["reports/train/metrics.json"]["data"]
    assert final["epochs_run"] == epochs and "step" not in final  # at the end, the summary
    logs = sh(b, "dvc", "queue", "logs", "long-e2e", env=env)
    assert f"epoch  1/{epochs}" in logs and f"epoch {epochs}/{epochs}" in logs

    wait_queue(a, env, tasks=2)  # done by now, or soon
    for exp in experiments(a, env).values():
        assert "accuracy" in exp["data"]["metrics"]["reports/metrics.json"]["data"]["test"]
        assert exp["data"]["metrics"]["reports/train/metrics.json"]["data"]["epochs_run"] == 2
    sh(a, "dvc", "exp", "push", "origin", env=env)
    # A Git remote that cannot be reached: DVC's own error, and the experiments stay.
    failed = subprocess.run(["dvc", "exp", "push", str(tmp_path / "no-such-server.git")], cwd=a, env=env,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "ERROR" in failed.stderr and "Traceback" not in failed.stderr
    assert len(experiments(a, env)) == 2
    from_b = experiments(b, env)
    on_server = sh(b, "dvc", "exp", "list", "origin", "--name-only", env=env).split()
    assert list(from_b) == ["long-e2e"] and set(on_server) == set(from_b) | set(experiments(a, env))

    # Machine C: pulls everything and sees all three, summarised as one sweep.
    c = machine(server, tmp_path / "c", env)
    sh(c, "dvc", "exp", "pull", "origin", env=env)
    pulled = experiments(c, env)
    assert len(pulled) == 3
    seeds = sorted(e["data"]["params"]["params.yaml"]["data"]["train"]["seed"] for e in pulled.values())
    assert seeds == [3, 4, 5]
    table = sh(c, sys.executable, "-m", "stages.report", env=env)
    assert table.startswith("| experiment | seed | test accuracy (%) |")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| **", "| exp"))]
    assert sorted(r.split("|")[1].strip() for r in rows) == sorted(pulled)
    assert all(r.endswith("| cpu |") for r in rows)
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| **")] == [
        "**mean**", "**std**", "**min**", "**max**"]
    last = table.strip().splitlines()[-1]
    assert re.fullmatch(r"\d of 3 reach >= 99.41% test accuracy \(in one pass: \d of 3\)\.", last), last

    # B's experiment, applied on C with its outputs pulled: exactly the model B produced.
    produced = from_b["long-e2e"]["data"]["outs"]["models/model.pt"]["hash"]
    sh(c, "dvc", "exp", "apply", "long-e2e", env=env)
    sh(c, "dvc", "pull", env=env)
    assert hashlib.md5((c / "models" / "model.pt").read_bytes()).hexdigest() == produced
