"""A lockstep study's per-seed figures: time per epoch of each pair, and the held-out group per seed.

    python -m bench.lockstep RUNS.json... --suite SUITE.json --variant default --variant n05 [--except stripe]

A lockstep study trains the baseline and a candidate on the same seed at the same time, one one-thread
process each (bench/results/zen3-2026-12-06/neighbours_confirm.md), so the two runs of a seed share the host
alike and their seconds per epoch can be compared pair by pair. RUNS are `bench.holdout --json` files, SUITE
a `bench.robustness --json` file of the same runs' `--save`d models. Printed, on the seeds both variants ran:
per seed, each run's scoring-half TTA accuracy, epochs and training seconds, and the ratio of their seconds
per epoch; the median seconds per epoch and their ratio; the summed training seconds; then per seed the
held-out group's mean and the candidate's paired difference on the held-out corruptions other than
`--except` (the one the candidate was made against), with their means ± SE over seeds.
Reads only those files.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.holdout import mean_se, runs_by_variant_seed
from bench.robustness import scores_by_run
from stages.corruptions import HELD_OUT


def lockstep_report(*, runs: list[dict[str, Any]], suite: list[dict[str, Any]], base: str, candidate: str,
                    excluded: str) -> str:
    """The per-seed lines described in the module's docstring."""
    by_run = runs_by_variant_seed(runs)
    scores = {(v, s): accuracy for (how, v, s), accuracy in scores_by_run(suite).items() if how == "none"}
    seeds = sorted(s for v, s in by_run if v == base and (candidate, s) in by_run
                   and (base, s) in scores and (candidate, s) in scores)
    if not seeds:
        raise SystemExit(f"bench.lockstep: no seed has runs and suite scores of both {base!r} and {candidate!r}")
    per_epoch = {v: [by_run[v, s]["train_s"] / by_run[v, s]["epochs_run"] for s in seeds] for v in (base, candidate)}
    lines = [f"seed: scoring-half TTA %, epochs run, train s (s per epoch), {base} | {candidate} | "
             f"{candidate}'s s/epoch ÷ {base}'s"]
    for s, a, b in zip(seeds, per_epoch[base], per_epoch[candidate], strict=True):
        d, n = by_run[base, s], by_run[candidate, s]
        lines.append(f"{s}: {d['tta_accuracy'] * 100:.2f}, {d['epochs_run']}, {d['train_s']:.0f} ({a:.1f}) | "
                     f"{n['tta_accuracy'] * 100:.2f}, {n['epochs_run']}, {n['train_s']:.0f} ({b:.1f}) | {b / a:.3f}")
    mb, mc = statistics.median(per_epoch[base]), statistics.median(per_epoch[candidate])
    lines.append(f"seconds per epoch, median: {base} {mb:.2f}, {candidate} {mc:.2f}, ratio {mc / mb:.3f}")
    tb, tc = (sum(by_run[v, s]["train_s"] for s in seeds) for v in (base, candidate))
    lines.append(f"train seconds summed: {base} {tb:.0f}, {candidate} {tc:.0f}, ratio {tc / tb:.3f}")

    others = [c for c in HELD_OUT if c != excluded]
    held, other = [], []
    lines.append(f"seed: held-out group %, {base} -> {candidate}; the {len(others)} other than {excluded}, "
                 f"{candidate} minus {base} (points)")
    for s in seeds:
        a, b = scores[base, s], scores[candidate, s]
        held_a, held_b = 100 * a["held_out"], 100 * b["held_out"]
        held.append(held_b - held_a)
        other.append(100 * (statistics.fmean(b[c] for c in others) - statistics.fmean(a[c] for c in others)))
        lines.append(f"{s}: {held_a:.2f} -> {held_b:.2f}; {len(others)} others {other[-1]:+.2f}")
    for name, diffs in (("held-out group", held), (f"{len(others)} other than {excluded}", other)):
        m, se = mean_se(diffs)
        lines.append(f"{name}: {m:+.2f} ± {se:.2f} points, {sum(x > 0 for x in diffs)} of {len(diffs)} seeds up")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="bench.holdout --json files of both variants")
    parser.add_argument("--suite", type=Path, required=True, help="bench.robustness --json file of their models")
    parser.add_argument("--variant", action="append", required=True, help="the baseline, then the candidate")
    parser.add_argument("--except", dest="excluded", default="stripe", choices=HELD_OUT,
                        help="the held-out corruption the candidate was made against, left out of the 'others'")
    args = parser.parse_args()
    if len(args.variant) != 2:
        parser.error("name two variants: --variant BASELINE --variant CANDIDATE")
    runs = [r for f in args.runs for r in json.loads(f.read_text())["runs"]]
    suite = json.loads(args.suite.read_text())["runs"]
    print(lockstep_report(runs=runs, suite=suite, base=args.variant[0], candidate=args.variant[1],
                          excluded=args.excluded))


if __name__ == "__main__":
    main()
