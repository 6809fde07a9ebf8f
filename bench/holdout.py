"""Compare training recipes on the hold-out split only; the test set is never read.

    python -m bench.holdout --seeds 10 11 12 \\
        --variant default: \\
        --variant bs128:train.batch_size=128,train.lr=0.1 [--budget-s 600] [--json FILE]

Each variant is params.yaml with `key=value` overrides (validated like
`dvc exp run -S`). Every variant is trained once per seed, seeds in the outer
loop so a run cut short by --budget-s leaves the variants equally sampled.
Reported per variant: the validation accuracy and loss of the epoch that
`train.selection` keeps, as mean and standard error over seeds, and the mean
training time. This is how the default recipe is chosen: on held-out
training images, never on the test set.

    python -m bench.holdout --summarize runs.json [more.json ...] [--variant NAME ...]

With --summarize, only the table of saved runs: each variant against the first
(the baseline), paired by seed on the seeds where every variant ran; --variant
names keep those variants, the first named as the baseline.

With --split-holdout, training stops and selects its epoch on the first half
of the hold-out and every variant is scored on the second half, which nothing
in training saw, so an early-stopping rule is not flattered by being scored on
the images it stopped on. --tta also scores each saved model with test-time
augmentation: softmax averaged over the image and its four one-pixel shifts.

Variants may differ in data.holdout_size. Each then trains on, and selects its
epoch with, its own hold-out, as the train stage would; all are scored on the
smallest hold-out among them, which lies inside every variant's hold-out
(same data.split_seed: hold-outs are nested), so no variant trained on it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from stages import config, data, paths
from stages.device import resolve_device
from stages.evaluate import evaluate
from stages.infer import score_weights
from stages.model import Net
from stages.train import train


def with_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A deep copy of raw params with each `a.b.c=value` set (value parsed as YAML)."""
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bench.holdout: override {item!r}: expected key=value")
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return raw


def parse_variant(text: str) -> tuple[str, list[str]]:
    """`name:key=value,key=value` -> (name, overrides)."""
    name, _, rest = text.partition(":")
    return name, [item for item in rest.split(",") if item.strip()]


def score_tta(state: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy, loss) of the weights `state` as the evaluate stage scores them: with test-time augmentation."""
    model = Net().to(images.device)
    model.load_state_dict(state)
    test = evaluate(model=model.eval(), images=images, labels=labels)[0]["test"]
    return test["accuracy"], test["loss"]


def mean_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return statistics.fmean(values), se


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    acc, acc_se = mean_se([r["val_accuracy"] for r in rows])
    loss, loss_se = mean_se([r["val_loss"] for r in rows])
    out = {"runs": len(rows), "val_accuracy": acc, "val_accuracy_se": acc_se, "val_loss": loss,
           "val_loss_se": loss_se, "train_s": statistics.fmean(r["train_s"] for r in rows),
           "epochs_run": statistics.fmean(r["epochs_run"] for r in rows)}
    if all("tta_accuracy" in r for r in rows):
        out["tta_accuracy"], out["tta_accuracy_se"] = mean_se([r["tta_accuracy"] for r in rows])
    return out


def runs_by_variant_seed(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """{(variant, seed): run} of `--json` files' runs; a run twice (a file given twice) is an error, not a pair."""
    by_run: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if (r["variant"], r["seed"]) in by_run:
            raise SystemExit(f"bench.holdout: variant {r['variant']!r} ran seed {r['seed']} twice")
        by_run[r["variant"], r["seed"]] = r
    return by_run


def paired_table(rows: list[dict[str, Any]]) -> str:
    """Each variant against the first one's runs (the baseline) on the seeds where every variant ran, as Markdown:
    the score (with test-time augmentation where every run has it), its worst run, the paired difference
    in points, and the epochs run, as the time a recipe costs. With augmentation, the single pass's paired
    difference too: the shifts can hide a loss of the model itself, which its ONNX export answers with
    (13 epochs: -0.002 points with the shifts, -0.038 in one pass; bench/results/zen3-2026-12-07/verify_e13.md)."""
    key = "tta_accuracy" if all("tta_accuracy" in r for r in rows) else "val_accuracy"
    keys = [key, "val_accuracy"] if key == "tta_accuracy" else [key]
    by_run = runs_by_variant_seed(rows)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    base = variants[0]
    paired_heads = "".join(f"{k} paired vs {base} (points, mean ± SE) | " for k in keys)
    lines = [f"| variant | seeds | {key} (%): mean, worst | {paired_heads}epochs run: mean (min-max), ÷ {base}'s |",
             "|---|---|---|" + "---|" * len(keys) + "---|"]
    # A seed some variant did not finish (a budget ran out) would pair unlike samples: left out.
    seeds = sorted(s for s in {s for _, s in by_run} if all((v, s) in by_run for v in variants))
    for name in variants:
        runs, bases = [by_run[name, s] for s in seeds], [by_run[base, s] for s in seeds]
        accuracy = [100 * r[key] for r in runs]
        diffs = {k: mean_se([100 * (r[k] - b[k]) for r, b in zip(runs, bases, strict=True)]) for k in keys}
        paired = "".join(f"{diff:+.3f} ± {se:.3f} | " for diff, se in diffs.values())
        epochs = [r["epochs_run"] for r in runs]
        lines.append(f"| {name} | {' '.join(map(str, seeds))} | "
                     f"{statistics.fmean(accuracy):.3f}, {min(accuracy):.2f} | "
                     f"{paired}{statistics.fmean(epochs):.1f} ({min(epochs)}-{max(epochs)}), "
                     f"{sum(epochs) / sum(b['epochs_run'] for b in bases):.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=paths.RAW_DIR, help="directory with the four IDX files")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--variant", action="append", help="name:key=value,key=value (the first: the baseline)")
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no run after this many seconds")
    parser.add_argument("--no-cuda-graph", action="store_true", help="on CUDA, the training step eagerly")
    parser.add_argument("--split-holdout", action="store_true",
                        help="stop and select on the hold-out's first half, score on its second half")
    parser.add_argument("--tta", action="store_true", help="also score with test-time augmentation (shifts)")
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    parser.add_argument("--save", type=Path, help="also save each run's weights here, as <variant>-<seed>.pt "
                        "checkpoints that bench.robustness reads")
    parser.add_argument("--summarize", type=Path, nargs="+", help="only print the paired table of these runs' files "
                        "(of the variants --variant names, the first as the baseline, when given)")
    args = parser.parse_args()
    if args.summarize:
        rows = [r for f in args.summarize for r in json.loads(f.read_text())["runs"]]
        if args.variant:  # names only: these variants, the first as the baseline
            names = [parse_variant(v)[0] for v in args.variant]
            rows = sorted((r for r in rows if r["variant"] in names), key=lambda r: names.index(r["variant"]))
        print(paired_table(rows))
        return
    if not args.variant:
        parser.error("--variant is required (or --summarize)")

    raw = yaml.safe_load(paths.PARAMS.read_text())
    variants = [parse_variant(v) for v in args.variant]
    configs = {name: config.parse(with_overrides(raw, overrides)) for name, overrides in variants}
    first = next(iter(configs.values()))
    if any((p.data.split_seed, p.train.device) != (first.data.split_seed, first.train.device)
           for p in configs.values()):
        raise SystemExit("bench.holdout: variants must share data.split_seed and train.device")
    device = resolve_device(first.train.device)
    splits = {size: data.load_holdout(args.data, size, first.data.split_seed, device)
              for size in sorted({p.data.holdout_size for p in configs.values()})}
    # The smallest hold-out: inside every variant's hold-out, so none trained on it.
    _, _, eval_x, eval_y = next(iter(splits.values()))
    if args.split_holdout:
        if len(splits) > 1:
            raise SystemExit("bench.holdout: --split-holdout needs one data.holdout_size for all variants")
        half = len(eval_x) // 2
        train_x, train_y, val_x, val_y = splits[first.data.holdout_size]
        splits = {first.data.holdout_size: (train_x, train_y, val_x[:half], val_y[:half])}
        eval_x, eval_y = eval_x[half:], eval_y[half:]

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for seed in args.seeds:
        for name, p in configs.items():
            if time.perf_counter() - start > args.budget_s:
                break
            cfg = p.train.model_copy(update={"seed": seed})
            train_x, train_y, val_x, val_y = splits[p.data.holdout_size]
            t0 = time.perf_counter()
            result = train(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, cfg=cfg,
                           dropout=p.model.dropout, cuda_graph=not args.no_cuda_graph)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            accuracy, loss = score_weights(result.saved_state, eval_x, eval_y)
            row = {"variant": name, "seed": seed, "holdout_size": p.data.holdout_size,
                   "epochs_run": result.epochs_run, "saved_epoch": result.saved_epoch,
                   "stopped_because": result.stopped_because,
                   "val_accuracy": accuracy, "val_loss": loss, "train_s": round(seconds, 2),
                   # time to accuracy: the stopping hold-out's accuracy at the end of each epoch, and its seconds
                   "curve": [(round(h["epoch_seconds"], 2), h["val_accuracy"]) for h in result.history]}
            if args.tta:
                row["tta_accuracy"], row["tta_loss"] = score_tta(result.saved_state, eval_x, eval_y)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                torch.save({"state_dict": {k: v.cpu() for k, v in result.saved_state.items()},
                            "epoch": result.saved_epoch}, args.save / f"{name}-{seed}.pt")
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                args.json.write_text(json.dumps({"runs": rows}, indent=1) + "\n")

    summary = {name: summarize([r for r in rows if r["variant"] == name])
               for name, _ in variants if any(r["variant"] == name for r in rows)}
    print(f"\ndevice {device}, scored on {len(eval_x)} held-out images, seeds {args.seeds}\n"
          "| variant | runs | val accuracy (mean ± SE) | val loss (mean ± SE) | TTA accuracy | epochs run | train s |"
          "\n|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        tta = f"{s['tta_accuracy']:.4%} ± {s['tta_accuracy_se']:.4%}" if "tta_accuracy" in s else "-"
        print(f"| {name} | {s['runs']} | {s['val_accuracy']:.4%} ± {s['val_accuracy_se']:.4%} | "
              f"{s['val_loss']:.4f} ± {s['val_loss_se']:.4f} | {tta} | {s['epochs_run']:.1f} | {s['train_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
