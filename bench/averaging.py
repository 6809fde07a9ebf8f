"""Weight averaging (EMA, SWA) and shorter schedules against the default, on the split hold-out; no test set.

    python -m bench.averaging --seeds 40 41 --epochs 18 12 14 --set train.precision=fp32 --json runs.json
    python -m bench.averaging --summarize runs.json [more.json ...]

For each seed and each schedule length E (`train.epochs`; onecycle spans all E
epochs), one run with early stopping off, as in bench.stopping: a run that the
stopping rule ends after k epochs is exactly the full run's first k epochs.
Alongside it, after every optimizer step, an exponential moving average of the
weights and BatchNorm buffers at each of EMA_DECAYS (torch.optim.swa_utils'
AveragedModel). The candidates of a run, each a model per epoch:

- `raw`: the trained weights, today's model;
- `ema<decay>`: that EMA's weights at the end of the epoch;
- `swa`: the equal average of the raw weights at the ends of the last
  ceil(E / 4) epochs up to the epoch the raw run stops, BatchNorm statistics
  recomputed over the clean training images (swa_utils.update_bn).

Each candidate is judged as the train stage would judge it if it were the saved
model: its own accuracy and loss on the first half of the hold-out (stopping
half) decide the stop (half+3, the train stage's rule) and the kept epoch
(`train.selection`); the kept model's score is its accuracy with test-time
augmentation, as `evaluate` scores, on the second half (scoring half), which
nothing in training saw. `swa` stops where `raw` stops and keeps its average.
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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from bench.holdout import mean_se, score_tta, with_overrides
from bench.stopping import study_parser
from stages import config, data, paths
from stages.device import cpu_kernels, resolve_device
from stages.infer import score
from stages.model import Net
from stages.precision import autocast_dtype
from stages.train import patience_from, select_epoch, stop_reason, train

# Per step; an epoch is 859 steps of 64 images. Half-lives: 0.999 -> 693 steps (0.8 epoch),
# 0.9998 -> 3,466 steps (4 epochs).
EMA_DECAYS = (0.999, 0.9998)
UPDATE_BN_BATCH = 500  # images per forward pass when SWA's BatchNorm statistics are recomputed


def contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached NCHW copy of a state dict (the CPU training layout is channels-last)."""
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in state.items()}


def stop_and_keep(history: list[dict[str, float]], cfg: config.Train, n_stop: int) -> tuple[int, int]:
    """(epochs the train stage's rule would run, index of the epoch it keeps) for a stopping-half history."""
    for k in range(1, len(history) + 1):
        if stop_reason(history[:k], target_accuracy=None, patience=cfg.patience,
                       counting_from=patience_from(history[:k], cfg)):
            break
    return k, select_epoch(history[:k], cfg.selection, n_stop)


def swa_state(states: list[dict[str, torch.Tensor]], last: int, train_x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The equal average of the last `last` epoch-end states, BatchNorm statistics recomputed on train_x."""
    swa, scratch = AveragedModel(Net().to(train_x.device)), Net().to(train_x.device)
    for state in states[-last:]:
        scratch.load_state_dict(state)
        swa.update_parameters(scratch)
    update_bn([train_x[i:i + UPDATE_BN_BATCH] for i in range(0, len(train_x), UPDATE_BN_BATCH)], swa.module)
    return contiguous(swa.module.state_dict())


def one_run(*, cfg: config.Train, dropout: float, train_x: torch.Tensor, train_y: torch.Tensor,
            stop_x: torch.Tensor, stop_y: torch.Tensor, score_x: torch.Tensor, score_y: torch.Tensor
            ) -> dict[str, Any]:
    """Train once for all cfg.epochs; every candidate's stop, kept epoch and scoring-half TTA accuracy."""
    emas: dict[str, AveragedModel] = {}
    histories: dict[str, list[dict[str, float]]] = {f"ema{d}": [] for d in EMA_DECAYS}
    states: dict[str, list[dict[str, torch.Tensor]]] = {f"ema{d}": [] for d in EMA_DECAYS}

    def on_step(model: torch.nn.Module) -> None:
        if not emas:  # the first step's weights start each average
            emas.update({f"ema{d}": AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True)
                         for d in EMA_DECAYS})
        for ema in emas.values():
            ema.update_parameters(model)

    def on_epoch(record: dict[str, float]) -> None:
        for name, ema in emas.items():
            accuracy, loss = score(ema.module, stop_x, stop_y)
            histories[name].append({**record, "val_accuracy": accuracy, "val_loss": loss})
            states[name].append(contiguous(ema.module.state_dict()))

    full = cfg.model_copy(update={"patience": 0})
    t0 = time.perf_counter()
    result = train(train_x=train_x, train_y=train_y, val_x=stop_x, val_y=stop_y, cfg=full, dropout=dropout,
                   on_step=on_step, on_epoch=on_epoch)
    seconds = time.perf_counter() - t0
    histories["raw"], states["raw"] = result.history, result.states
    out: dict[str, Any] = {}
    for name in ("raw", *(f"ema{d}" for d in EMA_DECAYS)):
        run, kept = stop_and_keep(histories[name], cfg, len(stop_x))
        out[name] = {"epochs_run": run, "saved_epoch": kept + 1,
                     "tta_accuracy": score_tta(states[name][kept], score_x, score_y)[0],
                     "stop_accuracy": [h["val_accuracy"] for h in histories[name]]}
    run = out["raw"]["epochs_run"]
    swa = swa_state(result.states[:run], math.ceil(cfg.epochs / 4), train_x)
    out["swa"] = {"epochs_run": run, "saved_epoch": run, "tta_accuracy": score_tta(swa, score_x, score_y)[0]}
    return {"train_s": round(seconds, 2), "epoch_s": [round(h["epoch_seconds"], 2) for h in result.history],
            "candidates": out}


def run(args: argparse.Namespace) -> None:
    raw = with_overrides(yaml.safe_load(paths.PARAMS.read_text()), args.set)
    p = config.parse(raw)
    if p.train.schedule != "onecycle" or p.train.target_accuracy is not None or not p.train.patience:
        raise SystemExit("bench.averaging: needs train.schedule onecycle, train.patience > 0, no target_accuracy")
    device = resolve_device(p.train.device)
    train_x, train_y, val_x, val_y = data.load_holdout(args.data, p.data.holdout_size, p.data.split_seed, device)
    half = len(val_x) // 2
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()
    for seed in args.seeds:  # every schedule length of a seed before the next seed: a budget cuts whole seeds
        if time.perf_counter() - start > args.budget_s:
            break
        for epochs in args.epochs:
            cfg = p.train.model_copy(update={"seed": seed, "epochs": epochs})
            row = {"seed": seed, "epochs": epochs, "precision": "bf16" if autocast_dtype(cfg.precision, device)
                   else "fp32", "kernels": cpu_kernels(device),
                   **one_run(cfg=cfg, dropout=p.model.dropout, train_x=train_x, train_y=train_y,
                             stop_x=val_x[:half], stop_y=val_y[:half], score_x=val_x[half:], score_y=val_y[half:])}
            runs.append(row)
            print(json.dumps({k: row[k] for k in ("seed", "epochs", "precision", "kernels", "train_s")}
                             | {n: (c["epochs_run"], c["saved_epoch"], round(100 * c["tta_accuracy"], 2))
                                for n, c in row["candidates"].items()}), flush=True)
            if args.json:
                args.json.write_text(json.dumps({"params": raw["train"], "runs": runs}, indent=1) + "\n")


def summarize(files: list[Path]) -> None:
    """Per arithmetic and overall: each candidate@E's scoring-half accuracy, its spread, and its paired
    difference (points) from raw at the longest schedule (raw@18, today's default) over the seeds that ran both."""
    runs = [r for f in files for r in json.loads(f.read_text())["runs"]]
    baseline = f"raw@{max(r['epochs'] for r in runs)}"
    by_run = {(r["precision"], r["seed"], f"{name}@{r['epochs']}"): c
              for r in runs for name, c in r["candidates"].items()}
    names = sorted({key[2] for key in by_run}, key=lambda n: (-int(n.split("@")[1]), n))
    print(f"| runs | candidate | scoring-half TTA accuracy (%): mean, sd, min | paired vs {baseline} (points, "
          "mean ± SE) | epochs run, mean (min-max) |\n|---|---|---|---|---|")
    for group in (*sorted({r["precision"] for r in runs}), "all"):
        for name in names:
            keys = [k for k in by_run if k[2] == name and group in ("all", k[0]) and (k[0], k[1], baseline) in by_run]
            if not keys:
                continue
            acc = [100 * by_run[k]["tta_accuracy"] for k in keys]
            diff = mean_se([100 * (by_run[k]["tta_accuracy"] - by_run[(k[0], k[1], baseline)]["tta_accuracy"])
                            for k in keys])
            ep = [by_run[k]["epochs_run"] for k in keys]
            sd = statistics.stdev(acc) if len(acc) > 1 else math.nan
            print(f"| {group} ({len(keys)}) | {name} | {statistics.fmean(acc):.3f}, {sd:.3f}, {min(acc):.2f} | "
                  f"{diff[0]:+.3f} ± {diff[1]:.3f} | {statistics.fmean(ep):.1f} ({min(ep)}-{max(ep)}) |")


def main() -> None:
    parser = study_parser(__doc__, [40, 41, 42], "seed")
    parser.add_argument("--epochs", type=int, nargs="+", default=[18, 12, 14], help="schedule lengths")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
    else:
        run(args)


if __name__ == "__main__":
    main()
