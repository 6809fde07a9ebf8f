"""Training speed of our loop against the usual DataLoader loop, and time-to-target of the train stage.

    python -m bench.bench [--reps 5] [--images 12800] [--batch-size N] [--reference-batch-size N]
                          [--precision fp32|bf16] [--stage] [--train] [--json FILE]

(a) Throughput: the same Net trained on the same images, measured side by side
    in one process, alternating, `--reps` times:
      ours      stages.train.train(): tensors on the device, randperm batches,
                batch-wise affine augmentation, params.yaml's optimizer/precision;
      reference the seed's way: torchvision.datasets.MNIST + DataLoader with
                per-sample ToTensor/Normalize, Net with dropout 0.1, SGD lr 0.01
                momentum 0.9 (the seed's), batch 128 unless --reference-batch-size.
    Reported as median images/s of each and the median of the per-rep ratios.
(b) --stage: runs `python -m stages.train` then `python -m stages.evaluate`
    with params.yaml as it is, and reports wall time, epochs, the test
    accuracy reached and the train stage's peak resident memory.
    --train: the same training in this process (no DVCLive or torchsummary
    needed, as on a bare GPU machine): training seconds, epochs, and the test
    accuracy of the kept weights.
    --no-cuda-graph: on CUDA, run our training step eagerly instead of as a
    CUDA graph, to measure what the graph gains.

Reads data/raw (run `dvc repro download` first) or --data DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.reference_train import mnist, train_epoch
from stages import config, data, paths
from stages.cli import keep_freed_memory
from stages.device import cpu_model, resolve_device
from stages.infer import score_weights
from stages.model import Net
from stages.step import autocast_dtype
from stages.train import train


def ours(images: torch.Tensor, labels: torch.Tensor, cfg: config.Train, cuda_graph: bool) -> float:
    """Images per second of one epoch of our loop over `images` (validation on 1,000 of them included)."""
    start = time.perf_counter()
    train(train_x=images, train_y=labels, val_x=images[:1000], val_y=labels[:1000],
          cfg=cfg.model_copy(update={"epochs": 1, "target_accuracy": None, "patience": 0}), dropout=0.0,
          cuda_graph=cuda_graph)
    return len(images) / (time.perf_counter() - start)


def reference(root: Path, count: int, device: torch.device, batch_size: int) -> float:
    """Images per second of one epoch of the usual torchvision Dataset + DataLoader loop over `count` images."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(mnist(root), range(count)), batch_size=batch_size, shuffle=True)
    model = Net(dropout=0.1).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    train_epoch(model, optimizer, loader, device)
    return count / (time.perf_counter() - start)


def link_torchvision_root(root: Path, raw_dir: Path) -> None:
    """Lay out root as torchvision's MNIST expects (MNIST/raw/<files>), linking to raw_dir."""
    (root / "MNIST" / "raw").mkdir(parents=True)
    for name in os.listdir(raw_dir):
        (root / "MNIST" / "raw" / name).symlink_to((raw_dir / name).resolve())


def throughput(raw_dir: Path, reps: int, count: int, cfg: config.Train, device: torch.device,
               cuda_graph: bool, reference_batch_size: int) -> dict:
    images, labels = data.load(raw_dir, "train", device)
    count = min(count, len(images))
    images, labels = images[:count], labels[:count]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-mnist-") as tmp:
        root = Path(tmp)
        link_torchvision_root(root, raw_dir)
        warm = min(1280, count)  # warm-up: first-call allocations and kernel choices
        ours(images[:warm], labels[:warm], cfg, cuda_graph)
        reference(root, warm, device, reference_batch_size)
        for rep in range(reps):
            a = ours(images, labels, cfg, cuda_graph)
            b = reference(root, count, device, reference_batch_size)
            rows.append({"ours": a, "reference": b, "ratio": a / b})
            print(f"rep {rep + 1}/{reps}: ours {a:,.0f} img/s, reference {b:,.0f} img/s, ratio {a / b:.2f}x",
                  flush=True)
    return {"images_per_rep": count, "reps": rows,
            "median_ours_img_s": statistics.median(r["ours"] for r in rows),
            "median_reference_img_s": statistics.median(r["reference"] for r in rows),
            "median_ratio": statistics.median(r["ratio"] for r in rows)}


def train_run(raw_dir: Path, p: config.Params, device: torch.device, cuda_graph: bool) -> dict:
    """params.yaml's training in this process, as the train stage does it; then the kept weights on the test set."""
    train_x, train_y, val_x, val_y = data.load_holdout(raw_dir, p.data.holdout_size, p.data.split_seed, device)
    start = time.perf_counter()
    result = train(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, cfg=p.train,
                   dropout=p.model.dropout, cuda_graph=cuda_graph)
    seconds = time.perf_counter() - start
    accuracy, _ = score_weights(result.saved_state, *data.load(raw_dir, "test", device))
    return {"train_s": round(seconds, 2), "epochs_run": result.epochs_run, "saved_epoch": result.saved_epoch,
            "epoch_s": [round(r["epoch_seconds"], 2) for r in result.history],
            "val_accuracy": [r["val_accuracy"] for r in result.history],
            "test_accuracy": accuracy, "reached_99_41": accuracy >= 0.9941}


def stage_run() -> dict:
    """Run the train and evaluate stages as DVC would; time them and read their outputs."""
    start = time.perf_counter()
    for module in ("stages.train", "stages.evaluate"):
        subprocess.run([sys.executable, "-m", module], check=True, stdout=subprocess.DEVNULL)
        if module == "stages.train":
            train_wall = time.perf_counter() - start
            # ru_maxrss of finished children: kilobytes on Linux
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = json.loads(paths.TRAIN_METRICS.read_text())
    run = json.loads(paths.TRAIN_RUN.read_text())
    test = json.loads(paths.METRICS.read_text())["test"]
    return {"train_stage_wall_s": round(train_wall, 1), "train_loop_s": summary["train_seconds"],
            "epochs_run": summary["epochs_run"], "saved_epoch": run["saved_epoch"],
            "test_accuracy": test["accuracy"], "reached_99_41": test["accuracy"] >= 0.9941,
            "train_peak_rss_mb": round(peak_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=paths.RAW_DIR, help="directory with the four IDX files")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--images", type=int, default=12800, help="training images per measured epoch")
    parser.add_argument("--batch-size", type=int, help="our loop's batch (default: params.yaml's train.batch_size; "
                        "default for the reference: 128)")
    parser.add_argument("--reference-batch-size", type=int, default=128, help="the reference loop's batch")
    parser.add_argument("--precision", choices=["fp32", "bf16"],
                        help="our training arithmetic (default: params.yaml's train.precision); the reference is fp32")
    parser.add_argument("--stage", action="store_true", help="also time the default train stage to its target")
    parser.add_argument("--train", action="store_true", help="also time params.yaml's training in this process")
    parser.add_argument("--no-cuda-graph", action="store_true", help="on CUDA, our step eagerly, not as a CUDA graph")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    # As the stages run (stages.cli.run); the reference loop in this process gets it too.
    keep_freed_memory()
    p = config.load()
    cfg = p.train.model_copy(update={"batch_size": args.batch_size or p.train.batch_size,
                                     "precision": args.precision or p.train.precision})
    device = resolve_device(p.train.device)
    result = {"machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                          "device": str(device), "torch": torch.__version__,
                          "precision": str(autocast_dtype(cfg.precision, device) or torch.float32)},
              "our_batch_size": cfg.batch_size, "reference_batch_size": args.reference_batch_size,
              "cuda_graph": device.type == "cuda" and not args.no_cuda_graph,
              "throughput": throughput(args.data, args.reps, args.images, cfg, device, not args.no_cuda_graph,
                                       args.reference_batch_size)}
    if device.type == "cuda":
        result["machine"]["gpu"] = torch.cuda.get_device_name(device)
    if args.train:
        result["train"] = train_run(args.data, p, device, not args.no_cuda_graph)
    if args.stage:
        result["stage"] = stage_run()
    t = result["throughput"]
    print(f"\n| measure | value |\n|---|---|\n"
          f"| ours (batch {cfg.batch_size}), median | {t['median_ours_img_s']:,.0f} img/s |\n"
          f"| reference (batch {args.reference_batch_size}), median | {t['median_reference_img_s']:,.0f} img/s |\n"
          f"| speed-up, median of {args.reps} side-by-side ratios | {t['median_ratio']:.2f}x |")
    if "train" in result:
        r = result["train"]
        print(f"| training in-process ({result['machine'].get('gpu', device)}) | {r['train_s']} s "
              f"({r['epochs_run']} epochs) |\n| its test accuracy | {r['test_accuracy']:.2%} |")
    if "stage" in result:
        s = result["stage"]
        print(f"| train stage wall time | {s['train_stage_wall_s']} s ({s['epochs_run']} epochs) |\n"
              f"| test accuracy reached | {s['test_accuracy']:.2%} |\n"
              f"| train stage peak RSS | {s['train_peak_rss_mb']} MB |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
