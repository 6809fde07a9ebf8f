"""Two recipes' experiments, paired by seed: test accuracy and the robustness suite, side by side.

    python -m bench.paired train.augment.appearance=0 train.augment.appearance=0.6 [--all-commits]

Each argument picks the finished experiments whose param has that value (as `dvc exp show` lists them);
the first is the old recipe, the second the new. They are paired by `train.seed`. Printed: per seed the
test accuracy (with the shifts, and in one pass), the suite's mean and its worst corruption, old -> new; then, over the
paired seeds, each recipe's figures and the new recipe's errors as a fraction of the old's (the suite's
mean error, and the worst corruption's error). Seeds that only one recipe ran are named and left out of
the pairs. Reads what `python -m stages.report` reads; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import yaml

from stages import cli
from stages.errors import StageError
from stages.report import exp_show, is_finished, metric


def pick(rows: list[dict[str, Any]], selector: str) -> dict[int, dict[str, Any]]:
    """{seed: row} of the finished experiments whose param `key` equals `value` (selector 'key=value')."""
    key, sep, text = selector.partition("=")
    if not sep or not key:
        raise StageError(f"{selector!r}: a recipe is picked as key=value, e.g. train.augment.appearance=0.6")
    wanted = yaml.safe_load(text)
    picked: dict[int, dict[str, Any]] = {}
    for row in rows:
        if not row.get("Experiment") or not is_finished(row) or metric(row, "test.accuracy") is None:
            continue
        have = row.get(key)
        same = have == wanted or (isinstance(wanted, (int, float)) and isinstance(have, (int, float))
                                  and float(have) == float(wanted))
        if not same:
            continue
        seed = int(row["train.seed"])
        if seed in picked:
            raise StageError(f"{selector}: seed {seed} twice ({picked[seed]['Experiment']}, {row['Experiment']}); "
                             f"name the commit's experiments apart or remove one (`dvc exp remove`)")
        picked[seed] = row
    if not picked:
        raise StageError(f"{selector}: no finished experiment has it (see `dvc exp show`)")
    return picked


def compare(old: dict[int, dict[str, Any]], new: dict[int, dict[str, Any]]) -> str:
    """Markdown: per seed old -> new, then the paired summary."""
    seeds = sorted(old.keys() & new.keys())
    if not seeds:
        raise StageError(f"no seed in both recipes (old: {sorted(old)}, new: {sorted(new)})")

    def figures(row: dict[str, Any]) -> dict[str, float]:
        return {"test": 100 * metric(row, "test.accuracy"), "one_pass": 100 * metric(row, "test.one_pass"),
                "mean": 100 * metric(row, "robustness.mean"), "worst": 100 * metric(row, "robustness.worst")}

    lines = ["| seed | test % | one pass % | suite mean % | worst corruption % |", "|---|---|---|---|---|"]
    for seed in seeds:
        a, b = figures(old[seed]), figures(new[seed])
        lines.append(f"| {seed} | {a['test']:.2f} → {b['test']:.2f} | {a['one_pass']:.2f} → {b['one_pass']:.2f} "
                     f"| {a['mean']:.1f} → {b['mean']:.1f} | {a['worst']:.1f} → {b['worst']:.1f} |")
    lines += ["", "| over the pairs | test min % | test mean % | one pass min % | one pass mean % | suite mean % "
              "| worst, mean % |", "|---|---|---|---|---|---|---|"]
    means = {}
    for label, group in (("old", old), ("new", new)):
        f = [figures(group[s]) for s in seeds]
        means[label] = {k: statistics.fmean(x[k] for x in f) for k in ("test", "one_pass", "mean", "worst")}
        m = means[label]
        lines.append(f"| {label} | {min(x['test'] for x in f):.2f} | {m['test']:.3f} "
                     f"| {min(x['one_pass'] for x in f):.2f} | {m['one_pass']:.3f} | {m['mean']:.2f} "
                     f"| {m['worst']:.2f} |")
    error = {k: (100 - means["new"][k]) / (100 - means["old"][k]) for k in ("mean", "worst")}
    lines += ["", f"{len(seeds)} seeds paired. New against old: the suite's mean error {error['mean']:.2f}x, the "
                  f"worst corruption's error {error['worst']:.2f}x, test accuracy "
                  f"{means['new']['test'] - means['old']['test']:+.3f} points."]
    alone = sorted((old.keys() | new.keys()) - set(seeds))
    if alone:
        lines.append(f"Not paired (one recipe only): seeds {', '.join(map(str, alone))}.")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    made = cli.parser(__doc__, command="bench.paired", reads=["DVC's experiments (as `dvc exp show`)"], writes=[])
    made.add_argument("old", help="the old recipe, as key=value")
    made.add_argument("new", help="the new recipe, as key=value")
    made.add_argument("--all-commits", action="store_true", help="include experiments of earlier commits")
    return made


def main(args: argparse.Namespace) -> None:
    rows = exp_show(num=-1 if args.all_commits else 1)
    print(compare(pick(rows, args.old), pick(rows, args.new)))


if __name__ == "__main__":
    cli.run(main, parser())
