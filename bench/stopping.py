"""Early-stopping rules compared on the hold-out, from full runs; the test set is never read.

    python -m bench.stopping --seeds 30 31 32 --set train.precision=bf16 --json runs.json [--budget-s 3300]
    python -m bench.stopping --summarize runs.json [more.json ...]

Under a schedule that spans all train.epochs (onecycle), an epoch's learning rate
and data order do not depend on when a run stops, so a run that a rule stops after
k epochs is exactly the first k epochs of the full run. Each seed is therefore
trained once, for all train.epochs with early stopping off, and every rule is
applied afterwards to that run's history:

- the rule sees only the first half of the hold-out (stopping half): per epoch,
  its accuracy and loss, as the train stage would;
- the epoch `train.selection` then keeps is chosen on that half too;
- every epoch's weights are scored with test-time augmentation, as `evaluate`
  scores, on the hold-out's second half (scoring half), which no rule saw.

A rule's result for a run is the scoring-half accuracy of the epoch it keeps.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from bench.holdout import mean_se, score_tta, with_overrides
from stages import config, data, paths
from stages.device import cpu_kernels, resolve_device
from stages.precision import autocast_dtype
from stages.train import patience_from, peak_epoch, select_epoch, stop_reason, train

SEED_TARGET = 0.9941  # the seed's rule: stop once the hold-out accuracy reaches it


def counting_from(rule: str, history: list[dict[str, float]], cfg: config.Train) -> int:
    """First epoch whose stale epochs count towards the patience, for a patience rule."""
    if rule == "peak+3":  # the train stage's rule until this study
        return peak_epoch(cfg) + 1
    return patience_from(history, cfg)  # half+3, the train stage's rule since this study


RULES = ("peak+3", "half+3", "target", "none")


def epochs_run(rule: str, history: list[dict[str, float]], cfg: config.Train) -> int:
    """How many epochs of the full run `history` the rule would have trained."""
    if rule == "none":
        return len(history)
    for k in range(1, len(history) + 1):
        if rule == "target":
            reason = stop_reason(history[:k], target_accuracy=SEED_TARGET, patience=0, counting_from=1)
        else:
            reason = stop_reason(history[:k], target_accuracy=None, patience=3,
                                 counting_from=counting_from(rule, history, cfg))
        if reason:
            return k
    return len(history)


def apply_rules(history: list[dict[str, float]], tta: list[float], cfg: config.Train, n_stop: int) -> dict[str, Any]:
    """Per rule: epochs run, the epoch kept (1-based) and its scoring-half TTA accuracy."""
    out = {}
    for rule in RULES:
        k = epochs_run(rule, history, cfg)
        kept = select_epoch(history[:k], cfg.selection, n_stop)
        out[rule] = {"epochs_run": k, "saved_epoch": kept + 1, "tta_accuracy": tta[kept]}
    return out


def run(args: argparse.Namespace) -> None:
    raw = with_overrides(yaml.safe_load(paths.PARAMS.read_text()), args.set + ["train.patience=0"])
    p = config.parse(raw)
    if p.train.schedule != "onecycle" or p.train.target_accuracy is not None:
        raise SystemExit("bench.stopping: needs train.schedule onecycle and no train.target_accuracy")
    device = resolve_device(p.train.device)
    train_x, train_y, val_x, val_y = data.load_holdout(args.data, p.data.holdout_size, p.data.split_seed, device)
    half = len(val_x) // 2
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()
    for seed in args.seeds:
        if time.perf_counter() - start > args.budget_s:
            break
        cfg = p.train.model_copy(update={"seed": seed})
        t0 = time.perf_counter()
        result = train(train_x=train_x, train_y=train_y, val_x=val_x[:half], val_y=val_y[:half], cfg=cfg,
                       dropout=p.model.dropout)
        seconds = time.perf_counter() - t0
        tta = [score_tta(state, val_x[half:], val_y[half:])[0] for state in result.states]
        arithmetic = "bf16" if autocast_dtype(cfg.precision, device) else "fp32"
        row = {"seed": seed, "precision": arithmetic, "kernels": cpu_kernels(device), "train_s": round(seconds, 2),
               "epochs": [{"epoch": h["epoch"], "lr": h["lr"], "stop_accuracy": h["val_accuracy"],
                           "stop_loss": h["val_loss"], "score_tta_accuracy": a, "seconds": round(h["epoch_seconds"], 2)}
                          for h, a in zip(result.history, tta, strict=True)],
               "rules": apply_rules(result.history, tta, cfg, half)}
        runs.append(row)
        print(json.dumps({k: row[k] for k in ("seed", "precision", "kernels", "train_s", "rules")}), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"params": raw["train"], "runs": runs}, indent=1) + "\n")


def summarize(files: list[Path]) -> None:
    """Per arithmetic and overall: each rule's paired difference from peak+3 (points) and its epochs run."""
    runs = [r for f in files for r in json.loads(f.read_text())["runs"]]
    groups = {**{p: [r for r in runs if r["precision"] == p] for p in sorted({r["precision"] for r in runs})},
              "all": runs}
    print("| runs | rule | scoring-half TTA accuracy (%), mean | paired vs peak+3 (points, mean ± SE) | "
          "epochs run, mean (min-max) |\n|---|---|---|---|---|")
    for name, group in groups.items():
        for rule in RULES:
            acc = [100 * r["rules"][rule]["tta_accuracy"] for r in group]
            diff = mean_se([100 * (r["rules"][rule]["tta_accuracy"] - r["rules"]["peak+3"]["tta_accuracy"])
                            for r in group])
            ep = [r["rules"][rule]["epochs_run"] for r in group]
            print(f"| {name} ({len(group)}) | {rule} | {statistics.fmean(acc):.3f} | {diff[0]:+.3f} ± {diff[1]:.3f} | "
                  f"{statistics.fmean(ep):.1f} ({min(ep)}-{max(ep)}) |")


def study_parser(doc: str, seeds: list[int], per_run: str) -> argparse.ArgumentParser:
    """The options of a study of full runs on the split hold-out (this one, bench.averaging)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, default=paths.RAW_DIR, help="directory with the four IDX files")
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--set", action="append", default=[],
                        help="key=value over params.yaml, e.g. train.precision=bf16")
    parser.add_argument("--budget-s", type=float, default=math.inf, help=f"start no {per_run} after this many seconds")
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--summarize", type=Path, nargs="+", help="only print the table of these runs' files")
    return parser


def main() -> None:
    args = study_parser(__doc__, [30, 31, 32], "run").parse_args()
    if args.summarize:
        summarize(args.summarize)
    else:
        run(args)


if __name__ == "__main__":
    main()
