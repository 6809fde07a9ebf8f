"""Sweeps on a Slurm cluster: one job array of DVC experiments, each task in its own clone, collected back.

    python -m stages.sweep submit NAME -S 'train.seed=range(0,10)' [-S ...] [--max-running K] [sbatch options]
    python -m stages.sweep status NAME      # a line a task: pending, running, done, failed, timed out, cancelled
    python -m stages.sweep collect NAME     # `dvc exp pull` of the sweep's experiments, then their report
    python -m stages.sweep resubmit NAME    # again, the tasks whose experiment has not reached the Git remote

`submit` checks everything first (a clean workspace whose commit is on the Git remote, a DVC remote,
`sbatch`, every grid point's params), writes the array's job script to sweeps/NAME/job.sh, submits it
once with `sbatch --parsable` and returns. Each task, on its node: a clone of the Git remote at that
commit in node-local scratch, MNIST from the DVC remote (or --mnist-dir), `dvc exp run --name NAME-I`
with its -S values on SLURM_CPUS_PER_TASK threads and the GPUs Slurm gives it, then `dvc exp push` of
that one experiment (Git refs to the Git remote, outputs to the DVC remote). A task whose experiment is
already on the Git remote (requeued, or run twice) does nothing. `status`, `collect` and `resubmit` work
from any clone: Slurm's accounting (`sacct`) and the Git remote's experiment refs say where each task is.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stages import cli, config, paths, report
from stages.errors import ParamsError, StageError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from omegaconf import DictConfig

JOB_PREFIX = "mnist-sweep-"  # Slurm's job name: JOB_PREFIX + the sweep's name
NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
# sacct's states, in the words of `status`; anything else (NODE_FAIL, PREEMPTED, ...) is shown lower-cased.
STATES = {"PENDING": "pending", "REQUEUED": "pending", "RUNNING": "running", "COMPLETING": "running",
          "COMPLETED": "done", "FAILED": "failed", "OUT_OF_MEMORY": "failed (out of memory)",
          "TIMEOUT": "timed out", "CANCELLED": "cancelled", "DEADLINE": "timed out"}
LOG_LINES = 3  # of a failed task's log, in `status`
# sbatch options passed through as they are: (option, metavar, help)
SBATCH_OPTIONS = (("--partition", "P", "the partition (default: the cluster's)"),
                  ("--time", "T", "each task's time limit, as sbatch takes it (30:00, 2:00:00, 1-0)"),
                  ("--cpus-per-task", "N", "CPUs a task: its training threads (default 1)"),
                  ("--mem", "M", "memory a task (2G)"),
                  ("--gpus-per-task", "G", "GPUs a task ('1', 'a100:1'); Slurm sets CUDA_VISIBLE_DEVICES"),
                  ("--account", "A", "the account to charge"))


def git(*args: str, cwd: Path | str = ".") -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise StageError(f"git {' '.join(args)}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout


def path_overrides(sets: list[str]) -> list[str]:
    """The -S values as overrides of params.yaml, which `dvc exp run -S` would apply: a value may name the file
    (`params.yaml:train.lr=0.1`, as DVC takes it); another file is refused (this pipeline reads no other)."""
    overrides = []
    for item in sets:
        path, colon, override = item.partition("=")[0].partition(":")
        if not colon:
            overrides.append(item)
        elif path == str(paths.PARAMS):
            overrides.append(item.partition(":")[2])
        else:
            raise StageError(f"-S {item}: the pipeline's parameters are all in {paths.PARAMS}, not {path}")
    return overrides


def parse_overrides(overrides: list[str]) -> list[Override]:
    """Hydra's override grammar, as `dvc exp run -S` parses it; StageError on a value it cannot read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # Hydra's parse errors come in several classes; each says what it could not read
        raise StageError(f"-S {' '.join(overrides)}: not a sweep DVC can read: {str(exc).splitlines()[0]}") from None


def grid(sets: list[str]) -> list[list[str]]:
    """The -S values of each grid point, as `dvc exp run --queue` expands them: comma lists, range(...),
    and the product of several -S (Hydra's override grammar, through its public parser, as DVC uses it;
    tests/test_sweeps_e2e.py holds the two to each other with a real `dvc exp run --queue`)."""
    from hydra.core.override_parser.types import ValueType

    choices = []
    for override in parse_overrides(path_overrides(sets)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices.append([f"{key}={override.get_value_element_as_str()}"])
        elif override.is_discrete_sweep() and override.value_type != ValueType.GLOB_CHOICE_SWEEP:
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:  # interval(...) or glob(...): DVC refuses them too
            raise StageError(f"-S {override.input_line}: not a sweep DVC can read: only comma lists, range(...) "
                             "and choice(...) expand into runs")
    return [list(point) for point in itertools.product(*choices)]


def apply_override(params: DictConfig, override: Override) -> None:
    """One override applied to params as Hydra applies it to a config (`key=v` sets a key that exists, `+key=v`
    adds one, `++key=v` sets or adds, `~key` deletes), through OmegaConf's public API."""
    from omegaconf import OmegaConf, open_dict

    key, value = override.key_or_group, override.value()
    exists = OmegaConf.select(params, key, throw_on_missing=False) is not None
    if override.is_delete():
        if not exists:
            raise ParamsError("params.yaml has no such key")
        parent, _, leaf = key.rpartition(".")
        with open_dict(params):
            del (OmegaConf.select(params, parent) if parent else params)[leaf]
    elif override.is_add() and exists:
        raise ParamsError("params.yaml has this key already (drop the +)")
    else:
        # As DVC: a key params.yaml does not have is an error (struct mode), unless + or ++ adds it.
        OmegaConf.update(params, key, value, merge=True, force_add=override.is_add() or override.is_force_add())


def check_points(points: list[list[str]]) -> None:
    """Raise ParamsError, naming the point, if params.yaml with a point's -S values is not valid (stages/config.py).

    The values are applied as `dvc exp run -S` applies them (Hydra's overrides on params.yaml), in memory: a
    200-point grid is checked in a fraction of a second.
    """
    from omegaconf import OmegaConf

    raw = config.read_yaml(paths.PARAMS)
    for point in points:
        params = OmegaConf.create(raw)
        OmegaConf.set_struct(params, True)  # as DVC: a key params.yaml does not have is an error, not a new key
        try:
            for override in parse_overrides(point):
                apply_override(params, override)
            config.parse(OmegaConf.to_object(params))
        except (ParamsError, StageError) as exc:
            raise ParamsError(f"{' '.join(point)}: {exc}") from None
        except Exception as exc:  # OmegaConf's errors: a key that params.yaml does not have, say
            missing = "; params.yaml has no such key" if "not in struct" in str(exc) else ""
            raise ParamsError(f"{' '.join(point)}: {str(exc).splitlines()[0]}{missing}") from None


def remote_experiments(remote: str, sweep: str) -> set[int]:
    """Indices of the sweep's experiments whose refs are on the Git remote (refs/exps/../NAME-I)."""
    refs = git("ls-remote", remote, "refs/exps/*")
    found = re.findall(rf"/{re.escape(sweep)}-(\d+)$", refs, flags=re.MULTILINE)
    return {int(i) for i in found}


def job_script(*, sweep: str, points: list[list[str]], commit: str, remote_url: str, setup: str,
               mnist_dir: str | None, allow_web: bool, logs: Path, options: list[str], max_running: int | None) -> str:
    """The array's bash script: one task per grid point, each a DVC experiment in its own clone."""
    cases = "\n".join(f"  {i}) set -- {' '.join(f'-S {shlex.quote(o)}' for o in point)} ;;"
                      for i, point in enumerate(points))
    limit = f"%{max_running}" if max_running else ""
    # sbatch refuses --gpus-per-task without a task count ("--gpus-per-task ... used without either --gpus or
    # -n/--ntasks is not allowed"): each array element is one task, and says so when it asks for GPUs.
    if any(o.startswith("--gpus-per-task") for o in options):
        options = ["--ntasks=1", *options]
    data = (f"export MNIST_DIR={shlex.quote(mnist_dir)}  # on a shared file system" if mnist_dir else
            "dvc pull -q params download || { echo 'error: MNIST is not on the DVC remote (run `dvc repro download "
            "&& dvc push` once, or submit with --mnist-dir)'; exit 3; }\n"
            "# The download stage must not run here (nodes are often offline): its code and params match dvc.lock.\n"
            "dvc status -q params download || { echo 'error: the download stage would run again on the node: its "
            "code or params differ from dvc.lock (run `dvc repro` where you submit, commit and push dvc.lock, "
            "`dvc push`; or submit with --mnist-dir or --allow-web)'; exit 3; }" if not allow_web else
            "dvc pull -q params download || echo 'MNIST is not on the DVC remote: the download stage fetches it'")
    return f"""#!/bin/bash
# Sweep {sweep}: {len(points)} DVC experiments at commit {commit}, one a task
# (written by `python -m stages.sweep submit`; `python -m stages.sweep resubmit {sweep}` runs the
# tasks whose experiment is missing again, as would `sbatch --array=I,J this-file`).
#SBATCH --job-name={JOB_PREFIX}{sweep}
#SBATCH --array=0-{len(points) - 1}{limit}
#SBATCH --output={logs}/%A_%a.log
#SBATCH --open-mode=append
{chr(10).join(f'#SBATCH {o}' for o in options)}
set -euo pipefail
case $SLURM_ARRAY_TASK_ID in
{cases}
  *) echo "error: no task $SLURM_ARRAY_TASK_ID in sweep {sweep}"; exit 2 ;;
esac
name={sweep}-$SLURM_ARRAY_TASK_ID
remote={shlex.quote(remote_url)}
echo "task $name ($*) on $(hostname), job $SLURM_JOB_ID, attempt ${{SLURM_RESTART_COUNT:-0}}"
{setup}
command -v dvc >/dev/null || {{ echo "error: dvc is not on this node's PATH (submit with --setup 'source \
/shared/venv/bin/activate', a Python environment with requirements.txt installed)"; exit 3; }}
scratch=$(mktemp -d "${{SLURM_TMPDIR:-${{TMPDIR:-/tmp}}}}/$name.XXXXXX")
trap 'cd / && rm -rf "$scratch"' EXIT  # on failure too
git clone -q "$remote" "$scratch/repo" && cd "$scratch/repo" && git checkout -q {commit}
if git ls-remote "$remote" 'refs/exps/*' | grep -q "/$name\\$"; then
  echo "$name is already on the Git remote (a requeued or repeated task): nothing to do"; exit 0
fi
{data}
export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}}  # the CPUs Slurm gave this task; GPUs: CUDA_VISIBLE_DEVICES
ready=$SECONDS
dvc exp run --name "$name" "$@"
ran=$SECONDS
dvc exp push origin "$name"
echo "$name: pushed; clone and data $ready s, experiment $((ran - ready)) s, push $((SECONDS - ran)) s"
"""


@dataclass
class Task:
    index: int
    job: int  # the array job of its latest attempt
    state: str  # in the words of STATES
    exit_code: str  # sacct's "code:signal"
    workdir: str  # where it was submitted from: its log is under there


def accounting(sweep: str) -> dict[int, Task]:
    """Each task's latest attempt, from Slurm's accounting (`sacct`) and the controller (`squeue`), by index."""
    if shutil.which("sacct") is None:
        raise StageError("sacct: not on PATH (run this where Slurm's client commands are)")
    done = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", f"--name={JOB_PREFIX}{sweep}",
                           "--starttime=now-60days", "--format=JobID,State,ExitCode,WorkDir"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise StageError(f"sacct: {done.stderr.strip()}")
    # squeue: the controller's own view of the jobs it holds, ahead of the accounting's (which lags by seconds).
    live = subprocess.run(["squeue", "-h", "-r", f"--name={JOB_PREFIX}{sweep}", "-o", "%i|%T|0:0|%Z"],
                          capture_output=True, text=True)
    return parse_accounting(done.stdout.splitlines() + (live.stdout.splitlines() if live.returncode == 0 else []))


def parse_accounting(rows: list[str]) -> dict[int, Task]:
    """Tasks from `JobID|State|ExitCode|WorkDir` rows (sacct's, then squeue's): 12_3 is task 3 of array job 12,
    12_[4-6%2] or 12_[1,4] the tasks of job 12 that had not started."""
    tasks: dict[int, Task] = {}
    ranks: dict[int, tuple[int, bool]] = {}
    for row in rows:
        job_id, state, exit_code, workdir = row.split("|")[:4]
        job, _, which = job_id.partition("_")
        indices: list[int] = []
        for part in which.strip("[]").split("%")[0].split(","):
            first, _, last = part.partition("-")
            if first.isdigit():
                indices += range(int(first), int(last or first) + 1)
        word = STATES.get(state.split()[0], state.split()[0].lower())
        # A later submission wins; within one, a task's own row wins over its array's row for the tasks that had
        # not started (which sacct keeps as "CANCELLED" once the array ends, even for tasks that ran).
        rank = (int(job), not which.startswith("["))
        for i in indices:
            if i not in ranks or rank >= ranks[i]:
                tasks[i], ranks[i] = Task(i, int(job), word, exit_code, workdir), rank
    return tasks


def log_of(sweep: str, task: Task) -> Path:
    return Path(task.workdir) / "sweeps" / sweep / "logs" / f"{task.job}_{task.index}.log"


def status_line(sweep: str, task: Task, arrived: bool) -> str:
    """`sweep-3  failed (exit 1)  not on the Git remote; log …: <its last lines>`."""
    state = task.state
    code, _, signal = task.exit_code.partition(":")
    if state == "failed":
        state += f" (signal {signal})" if signal not in ("", "0") else f" (exit {code})"
    where = "on the Git remote" if arrived else "not on the Git remote"
    line = f"{sweep}-{task.index}  {state:<16} {where}"
    log = log_of(sweep, task)
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    if task.state == "running":
        epochs = [x for x in lines if re.match(r"epoch\s+\d+/\d+ ", x)]  # the train stage's line an epoch
        line += f"; {' '.join(epochs[-1].split())}" if epochs else "; starting"
    elif not arrived and task.state != "pending":
        # A stage's one line (a param check, ...) or DVC's own (a remote that went away, ...)
        errors = [x for x in lines if x.startswith(("error: ", "ERROR: "))]
        tail = errors[-1:] or lines[-LOG_LINES:]
        line += f"; {log}: " + " | ".join(x.strip() for x in tail) if lines else f"; no log at {log}"
    return line


def sweep_tasks(sweep: str, remote: str) -> tuple[dict[int, Task], set[int]]:
    tasks = accounting(sweep)
    if not tasks:
        raise StageError(f"no Slurm jobs named {JOB_PREFIX}{sweep} in the last 60 days (see `sacct`)")
    return tasks, remote_experiments(remote, sweep)


def submit(*, sweep: str, sets: list[str], remote: str, max_running: int | None, options: list[str],
           setup: str, mnist_dir: str | None, allow_web: bool) -> int:
    """Check everything, write sweeps/SWEEP/job.sh, submit it once; return the array's job id."""
    if not NAME.fullmatch(sweep):
        raise StageError(f"sweep name {sweep!r}: lower-case letters, digits and '-', starting with a letter")
    points = grid(sets)
    check_points(points)
    if git("status", "--porcelain", "--untracked-files=no").strip():
        raise StageError("the workspace has uncommitted changes: the tasks clone the Git remote, so commit and "
                         "push them first")
    commit = git("rev-parse", "HEAD").strip()
    remote_url = git("remote", "get-url", remote).strip()
    git("fetch", "-q", remote)
    if not git("branch", "-r", "--contains", commit, "--list", f"{remote}/*").strip():
        raise StageError(f"commit {commit[:8]} is not on the Git remote {remote!r}: `git push {remote}` first")
    dvc_remote = subprocess.run(["dvc", "config", "core.remote"], capture_output=True, text=True).stdout.strip()
    if not dvc_remote:
        raise StageError("no default DVC remote: the tasks push their outputs there (`dvc remote add -d NAME URL`, "
                         "committed and pushed)")
    if mnist_dir is not None and not Path(mnist_dir).is_dir():
        raise StageError(f"--mnist-dir {mnist_dir}: no such directory (it must be on a file system the nodes see)")
    if shutil.which("sbatch") is None:
        raise StageError("sbatch: not on PATH (submit from a node with Slurm's client commands)")
    if remote_experiments(remote, sweep):
        raise StageError(f"experiments of a sweep named {sweep!r} are already on the Git remote: pick another "
                         f"name, or `python -m stages.sweep resubmit {sweep}`")
    folder = Path("sweeps") / sweep
    logs = (folder / "logs").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    script = job_script(sweep=sweep, points=points, commit=commit, remote_url=remote_url, setup=setup,
                        mnist_dir=str(Path(mnist_dir).resolve()) if mnist_dir else None, allow_web=allow_web,
                        logs=logs, options=options, max_running=max_running)
    (folder / "job.sh").write_text(script)
    return sbatch(folder / "job.sh")


def sbatch(script: Path, *extra: str) -> int:
    done = subprocess.run(["sbatch", "--parsable", *extra, str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        raise StageError(f"sbatch: {done.stderr.strip()}")
    return int(done.stdout.strip().split(";")[0])


def resubmit(*, sweep: str, remote: str) -> tuple[int | None, list[int]]:
    """Submit again the tasks that are neither on the Git remote nor pending or running."""
    tasks, arrived = sweep_tasks(sweep, remote)
    latest = max(tasks.values(), key=lambda t: t.job)
    script = Path(latest.workdir) / "sweeps" / sweep / "job.sh"
    if not script.is_file():
        raise StageError(f"{script}: missing (the sweep's job script, written by `submit`)")
    count = 1 + max(int(i) for i in re.findall(r"^  (\d+)\) set --", script.read_text(), flags=re.MULTILINE))
    missing = [i for i in range(count) if i not in arrived
               and tasks.get(i, latest).state not in ("pending", "running")]
    if not missing:
        return None, []
    limit = re.search(r"^#SBATCH --array=\S*?(%\d+)$", script.read_text(), flags=re.MULTILINE)
    array = ",".join(map(str, missing)) + (limit.group(1) if limit else "")
    return sbatch(script, f"--array={array}"), missing


def parser() -> argparse.ArgumentParser:
    made = cli.parser(__doc__, command="stages.sweep",
                      reads=["params.yaml (each grid point is checked)", "Git and DVC remotes", "sacct"],
                      writes=["sweeps/NAME/job.sh and its logs (submit); experiments pulled into .git (collect)"])
    commands = made.add_subparsers(dest="command", required=True, parser_class=cli.Parser)
    for name, text in (("submit", "submit a sweep as one job array"), ("status", "a line a task"),
                       ("collect", "pull the sweep's experiments and summarize them"),
                       ("resubmit", "submit again the tasks whose experiment is missing")):
        sub = commands.add_parser(name, help=text, description=text, epilog=made.epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("name", help="the sweep's name: its experiments are NAME-0, NAME-1, ...")
        sub.add_argument("--git-remote", default="origin", help="the Git remote the tasks clone and push to")
        if name != "submit":
            continue
        sub.add_argument("-S", "--set-param", dest="sets", action="append", required=True, metavar="KEY=VALUES",
                         help="as `dvc exp run --queue -S`: a=1,2 / a=range(0,10) / several give their product")
        sub.add_argument("--max-running", type=int, metavar="K", help="at most K tasks at once (sbatch's %%K)")
        for option, metavar, text in SBATCH_OPTIONS:
            sub.add_argument(option, metavar=metavar, help=text)
        sub.add_argument("--setup", default="", metavar="CMD",
                         help="run first in each task, e.g. 'source /shared/venv/bin/activate' (default: the "
                         "environment sbatch exports from here)")
        sub.add_argument("--mnist-dir", metavar="DIR", help="MNIST on a shared file system (default: the DVC remote)")
        sub.add_argument("--allow-web", action="store_true",
                         help="let the download stage use the web when MNIST is on neither")
    return made


def main(args: argparse.Namespace) -> None:
    if args.command == "submit":
        options = [f"{o}={getattr(args, o[2:].replace('-', '_'))}" for o, _, _ in SBATCH_OPTIONS
                   if getattr(args, o[2:].replace("-", "_")) is not None]
        if args.cpus_per_task is None:
            options.append("--cpus-per-task=1")
        job = submit(sweep=args.name, sets=args.sets, remote=args.git_remote, max_running=args.max_running,
                     options=options, setup=args.setup, mnist_dir=args.mnist_dir, allow_web=args.allow_web)
        print(f"{job}  (sweeps/{args.name}/job.sh; `python -m stages.sweep status {args.name}`)")
    elif args.command == "status":
        tasks, arrived = sweep_tasks(args.name, args.git_remote)
        for task in sorted(tasks.values(), key=lambda t: t.index):
            print(status_line(args.name, task, task.index in arrived))
    elif args.command == "collect":
        arrived = sorted(remote_experiments(args.git_remote, args.name))
        if not arrived:
            raise StageError(f"no experiment of sweep {args.name!r} on the Git remote yet (see `python -m "
                             f"stages.sweep status {args.name}`)")
        names = [f"{args.name}-{i}" for i in arrived]
        done = subprocess.run(["dvc", "exp", "pull", args.git_remote, *names], capture_output=True, text=True)
        if done.returncode != 0:
            raise StageError(f"dvc exp pull: {done.stderr.strip() or done.stdout.strip()}")
        print(report.summarize(report.experiment_rows(names, all_commits=False)))
    else:
        job, missing = resubmit(sweep=args.name, remote=args.git_remote)
        print(f"{job}  (tasks {', '.join(map(str, missing))})" if job else
              f"nothing to resubmit: every task of {args.name} is on the Git remote, pending or running")


if __name__ == "__main__":
    cli.run(main, parser())
