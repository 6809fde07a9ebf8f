"""Every command's front door: `--help` exits 0 and says what the command reads and writes; an unknown option
or a stray argument is one line and exit 2; neither touches a file of the workspace."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

COMMANDS = ("params", "download", "corrupt", "train", "evaluate", "plots", "predict", "report", "sweep", "precision")
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file and folder under root: its mode, its modification time (ns) and its bytes."""
    return {str(p.relative_to(root)): (p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def workspace(project: Path) -> Path:
    """The tiny project with an output of every stage in place, as after `dvc repro`."""
    for out in ("reports/params.ok", "models/model.pt", "reports/train/metrics.json", "reports/metrics.json",
                "reports/train/plots/metrics/val/accuracy.tsv", "reports/plots/misclassified.png"):
        (project / out).parent.mkdir(parents=True, exist_ok=True)
        (project / out).write_text(f"{out} as the last run left it\n")
    return project


# Each command run as `python -m` runs it (runpy, as __main__), one after another in one interpreter: one
# import of torch for all twenty rather than one each (twenty at once took 56 s of two cores in a full run).
FRONT_DOOR = """
import contextlib, io, json, runpy, sys, warnings
# An artefact of one interpreter, not of a command: a module another one imported is run again as __main__.
warnings.filterwarnings("ignore", "'stages[.].*' found in sys.modules after import", RuntimeWarning)
answers = []
for name, args in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), None
    sys.argv = [f"stages/{name}.py", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(f"stages.{name}", run_name="__main__", alter_sys=True)
        except SystemExit as exited:
            code = exited.code
    answers.append([name, args[-1], code, out.getvalue(), err.getvalue()])
print(json.dumps(answers))
"""


def test_help_and_unknown_options_answer_at_once_and_touch_nothing(workspace: Path) -> None:
    before = snapshot(workspace)
    # predict's images and sweep's command are required: give them, so that the unknown option is what they answer
    seven = [str(REPO / "tests" / "data" / "seven.png")]
    required = {("predict", "--help"): seven, ("predict", "--no-such-option"): seven,
                ("sweep", "--no-such-option"): ["status", "a-sweep"]}
    calls = [(name, [*required.get((name, flag), []), flag]) for name in COMMANDS
             for flag in ("--help", "--no-such-option")]
    ran = subprocess.run([sys.executable, "-c", FRONT_DOOR, json.dumps(calls)], cwd=workspace, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr
    done = {(name, flag): (code, out, err) for name, flag, code, out, err in json.loads(ran.stdout)}
    assert len(done) == 2 * len(COMMANDS)
    # None may wait on anything: the whole front door runs within the subprocess's timeout above.
    for name in COMMANDS:
        code, out, err = done[name, "--help"]
        assert code == 0 and err == "", (name, err)
        assert out.startswith(f"usage: python -m stages.{name}") and "\nreads:  " in out and "\nwrites: " in out
        assert "--debug" in out
        code, out, err = done[name, "--no-such-option"]
        assert code == 2 and out == "", (name, out)
        assert err == (f"python -m stages.{name}: error: unrecognized arguments: --no-such-option "
                       f"(see `python -m stages.{name} --help`)\n"), err
    assert snapshot(workspace) == before


@pytest.mark.parametrize("name", [n for n in COMMANDS if n not in ("predict", "report", "sweep", "precision")])
def test_a_stray_argument_is_one_line_and_exit_2(workspace: Path, capsys, name: str) -> None:
    """predict takes image names and report experiment names, so only the stages have no place for one."""
    from stages import cli

    module = importlib.import_module(f"stages.{name}")
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, module.parser(), ["models/model.pt"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "unrecognized arguments: models/model.pt" in err
    assert snapshot(workspace) == before


@pytest.mark.parametrize("name", list(STAGES))
def test_help_names_what_dvc_yaml_says_the_stage_reads_and_writes(name: str) -> None:
    module = importlib.import_module(STAGES[name]["cmd"].removeprefix("python -m "))
    epilog = module.parser().epilog
    reads, writes = (line.split(":", 1)[1] for line in epilog.splitlines())
    stage = STAGES[name]
    inputs = [d for d in stage["deps"] if not d.endswith(".py") and d != "reports/params.ok"]
    inputs += ["params.yaml"] if stage.get("params") else []
    outputs = [next(iter(o)) if isinstance(o, dict) else o
               for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]
    assert all(path in reads for path in inputs), (reads, inputs)
    # An output may be named by its folder ("reports/train/" holds the history, the summary and the table).
    assert all(any(out.startswith(w.strip().split(" ")[0].rstrip("/")) for w in writes.split(", "))
               for out in outputs), (writes, outputs)
