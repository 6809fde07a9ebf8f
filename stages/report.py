"""Summarize DVC experiments as a Markdown table: per-experiment test accuracy and robustness, then mean/std/min/max.

    python -m stages.report                 # every finished experiment of HEAD (none yet: the workspace's run)
    python -m stages.report exp-a exp-b     # just these ("workspace": the run `dvc repro` left in place)
    python -m stages.report --all-commits   # experiments of every commit, not only HEAD

Reads what `dvc exp show` reads (through dvc.api.exp_show), so experiments pulled from
other machines (`dvc exp pull origin`) count like local ones; writes nothing.
"""

from __future__ import annotations

import argparse
import errno
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from stages import cli
from stages.errors import StageError

# Columns per experiment: (header, exp_show key, decimals). exp_show gives every number as a float. These are
# the headline metrics (`dvc metrics show`); each run's other figures are in its reports/eval/details.json.
COLUMNS = [("seed", "train.seed", 0), ("test accuracy (%)", "test.accuracy", 2), ("one pass (%)", "test.one_pass", 2),
           ("suite mean (%)", "robustness.mean", 1), ("suite worst (%)", "robustness.worst", 1),
           ("epochs run", "epochs_run", 0), ("train seconds", "train_seconds", 0)]
BAR = 0.9941  # the seed's test accuracy, which every seed must reach
WORKSPACE = "workspace"  # exp_show's row of the workspace: what `dvc repro` left there
SWEEP_HINT = "dvc exp run --queue -S 'train.seed=0,1,2' && dvc queue start"


def metric(row: dict[str, Any], name: str) -> float | None:
    """A column's value; exp_show prefixes the file name (`path:name`) when two files share a name."""
    for key, value in row.items():
        if (key == name or key.endswith(":" + name)) and isinstance(value, (int, float)):
            return float(value)
    return None


def _cell(value: float, header: str, decimals: int) -> str:
    return f"{value * 100:.{decimals}f}" if header.endswith("(%)") else f"{value:.{decimals}f}"


def summarize(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per experiment, then mean, standard deviation, minimum and maximum of each column,
    and how many experiments reach the seed's 99.41 %, with the shifts and in one pass."""
    if not rows:
        raise StageError(f"no finished experiments and no results in the workspace to summarize (run the "
                         f"pipeline with `dvc repro`, experiments with `{SWEEP_HINT}`, or fetch a team's with "
                         f"`dvc exp pull origin`)")
    header = ["experiment"] + [c[0] for c in COLUMNS] + ["device"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    values: dict[str, list[float]] = {c[0]: [] for c in COLUMNS}
    for row in rows:
        cells = [str(row.get("Experiment") or row.get("rev"))]
        for name, key, decimals in COLUMNS:
            value = metric(row, key)
            cells.append("-" if value is None else _cell(value, name, decimals))
            if value is not None:
                values[name].append(float(value))
        lines.append("| " + " | ".join(cells + [str(row.get("device") or "-")]) + " |")
    for label, stat in (("mean", statistics.fmean), ("std", statistics.stdev), ("min", min), ("max", max)):
        cells = [f"**{label}**"]
        for name, _, decimals in COLUMNS:
            column = values[name]
            enough = len(column) >= (2 if label == "std" else 1)
            # Means and spreads of integer columns need a decimal more than the values.
            shown = decimals + (1 if label in ("mean", "std") else 0)
            cells.append(_cell(stat(column), name, shown) if enough and name != "seed" else "")
        lines.append("| " + " | ".join(cells + [""]) + " |")
    shifted, one_pass = values["test accuracy (%)"], values["one pass (%)"]
    lines.append(f"\n{sum(a >= BAR for a in shifted)} of {len(shifted)} reach >= {BAR:.2%} test accuracy"
                 f" (in one pass: {sum(a >= BAR for a in one_pass)} of {len(one_pass)}).")
    return "\n".join(lines)


def is_finished(row: dict[str, Any]) -> bool:
    # exp_show's State: None or "Success" once done; "Queued", "Running" or "Failed" before or instead.
    return row.get("State") in (None, "Success")


def exp_show(num: int) -> list[dict[str, Any]]:
    """dvc.api.exp_show of the repository here, also when its file system is read-only.

    DVC writes scratch files under .dvc/tmp even to read (its lock, the queue's folders, a cache of
    results), so on a read-only workspace it fails. It then reads the repository through a mirror:
    a temporary folder whose entries link to the workspace's (the same Git repository, DVC cache and
    files), but whose .dvc/tmp is its own.
    """
    import dvc.api

    try:
        return dvc.api.exp_show(repo=".", num=num)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
    with tempfile.TemporaryDirectory(prefix="report-") as scratch:
        mirror = Path(scratch)
        for here, there in ((Path("."), mirror), (Path(".dvc"), mirror / ".dvc")):
            there.mkdir(exist_ok=True)
            for entry in here.iterdir():
                if entry == Path(".dvc") or entry == Path(".dvc/tmp"):  # the mirror's own
                    continue
                if entry.is_dir():  # folders are linked: Git's objects, DVC's cache, the outputs
                    (there / entry.name).symlink_to(entry.resolve())
                else:  # files are copied: DVC refuses a file whose link leads out of the repository
                    shutil.copy2(entry, there / entry.name)
        return dvc.api.exp_show(repo=str(mirror), num=num)


def experiment_rows(names: list[str], all_commits: bool) -> list[dict[str, Any]]:
    """exp_show rows of the named experiments, or of every finished experiment when none are named."""
    from dvc.exceptions import DvcException

    # Named experiments may come from any commit; unnamed means those of HEAD (or all commits).
    try:
        rows = exp_show(num=-1 if all_commits or names else 1)
    except DvcException as exc:  # not a DVC repository, no commits, a broken dvc.yaml: DVC's own one line
        raise StageError(f"dvc exp show: {exc}") from None
    experiments = [r for r in rows if r.get("Experiment")]
    # The workspace counts once it has test results (after `dvc repro`).
    workspace = next((r for r in rows if r.get("rev") == WORKSPACE and metric(r, "test.accuracy") is not None),
                     None)
    if not names:
        unfinished = [f"{r['Experiment']} ({r['State'].lower()})" for r in experiments if not is_finished(r)]
        if unfinished:
            print(f"left out, not finished: {', '.join(unfinished)}", file=sys.stderr)
        finished = [r for r in experiments if is_finished(r)]
        if not finished and workspace:
            print(f"no experiments of HEAD yet: this is the workspace's run (for more: `{SWEEP_HINT}`)",
                  file=sys.stderr)
            return [workspace]
        return finished
    by_name = {r["Experiment"]: r for r in experiments}
    if workspace is not None:
        by_name[WORKSPACE] = workspace
    missing = [n for n in names if n not in by_name]
    if missing:
        raise StageError(f"no such experiment: {', '.join(missing)} (see `dvc exp show`, or `dvc exp pull origin` "
                         f"for a team's)")
    unfinished = [n for n in names if not is_finished(by_name[n])]
    if unfinished:
        states = ", ".join(f"{n} is {by_name[n]['State'].lower()}" for n in unfinished)
        raise StageError(f"{states}: no results yet (see `dvc queue status`, `dvc queue logs NAME`)")
    return [by_name[n] for n in names]


def parser() -> argparse.ArgumentParser:
    made = cli.parser(__doc__, command="stages.report", reads=["DVC's experiments (as `dvc exp show`)"], writes=[])
    made.add_argument("experiments", nargs="*", help="experiment names (default: all of HEAD)")
    made.add_argument("--all-commits", action="store_true", help="include experiments of earlier commits")
    return made


def main(args: argparse.Namespace) -> None:
    print(summarize(experiment_rows(args.experiments, args.all_commits)))


if __name__ == "__main__":
    cli.run(main, parser())
