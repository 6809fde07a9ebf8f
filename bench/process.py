"""Whole processes: the train stage against an independent torchvision + DataLoader script, and the stage's fixed cost.

    python -m bench.process [--epochs 2] [--reps 3] [--precision fp32|bf16] [--data DIR]
                            [--reference-batch-size 128] [--json FILE]

Each rep runs, one after the other, in fresh processes:
  stage      `python -m stages.train` in a scratch project (params.yaml with
             --epochs and --precision, data/raw linked to --data), timed from
             process start to exit. It also reports when its first training
             step started and its last one ended, so the wall time splits into
             start-up (interpreter, imports, torchsummary, DVCLive, reading and
             splitting the data, the first call's set-up), the training loop,
             and the end (validation of the last epoch, writing the outputs,
             interpreter exit).
  reference  bench/reference_train.py: the usual script, torchvision's MNIST
             with per-sample ToTensor/Normalize through a DataLoader, the same
             Net, the same split sizes (data.holdout_size), a validation pass
             per epoch, float32 -- timed the same way.
Reported per rep and as medians, with the median of the per-rep ratios
reference / stage (how many times faster the stage is, start to exit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.bench import link_torchvision_root
from stages import paths
from stages.device import cpu_model

REPO = Path(__file__).resolve().parent.parent

# Run as `python -c` in the stage's process: marks the first and last training step.
STAGE_PROBE = """
import atexit, json, sys, time
marks = {}
import stages.train as train
make_step = train.make_step
def probed(**kwargs):
    step = make_step(**kwargs)
    def run(*batch):  # images, labels, and a pruned epoch's loss weights
        marks.setdefault("first_step", time.time())
        step(*batch)
        marks["last_step"] = time.time()
    return run
train.make_step = probed
marks_file = sys.argv[1]
atexit.register(lambda: open(marks_file, "w").write(json.dumps(marks)))
from stages.cli import run
run(train.main, train.parser(), [])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def run_stage(scratch: Path, raw_dir: Path, epochs: int, precision: str | None) -> dict[str, float]:
    """One train stage in a fresh process: wall, start-up, loop and end seconds, and its own train_seconds."""
    project = scratch / "stage"
    shutil.rmtree(project, ignore_errors=True)
    (project / "data").mkdir(parents=True)
    (project / "data" / "raw").symlink_to(raw_dir.resolve())
    raw = yaml.safe_load(paths.PARAMS.read_text())
    raw["train"]["epochs"] = epochs
    if precision:
        raw["train"]["precision"] = precision
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    marks_file = scratch / "marks.json"
    start = time.time()
    subprocess.run([sys.executable, "-c", STAGE_PROBE, str(marks_file)], cwd=project, env=_env(), check=True,
                   stdout=subprocess.DEVNULL)
    end = time.time()
    marks = json.loads(marks_file.read_text())
    summary = json.loads((project / paths.TRAIN_METRICS).read_text())
    run = json.loads((project / paths.TRAIN_RUN).read_text())
    return {"wall_s": end - start, "startup_s": marks["first_step"] - start,
            "loop_s": marks["last_step"] - marks["first_step"], "end_s": end - marks["last_step"],
            "train_seconds": summary["train_seconds"], "precision": run["precision"]}


def run_reference(scratch: Path, raw_dir: Path, epochs: int, batch_size: int, holdout: int) -> dict[str, float]:
    """bench/reference_train.py in a fresh process, start to exit."""
    root = scratch / "torchvision"
    if not root.exists():
        link_torchvision_root(root, raw_dir)
    start = time.time()
    subprocess.run([sys.executable, str(REPO / "bench" / "reference_train.py"), "--root", str(root),
                    "--epochs", str(epochs), "--batch-size", str(batch_size), "--holdout", str(holdout)],
                   env=_env(), check=True,
                   stdout=subprocess.DEVNULL)
    return {"wall_s": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=paths.RAW_DIR, help="directory with the four IDX files")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--precision", choices=["fp32", "bf16"],
                        help="the stage's train.precision (default: params.yaml's); the reference is fp32")
    parser.add_argument("--reference-batch-size", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        scratch = Path(tmp)
        for rep in range(args.reps):
            ours = run_stage(scratch, args.data, args.epochs, args.precision)
            ref = run_reference(scratch, args.data, args.epochs, args.reference_batch_size,
                                yaml.safe_load(paths.PARAMS.read_text())["data"]["holdout_size"])
            rows.append({"stage": ours, "reference": ref, "ratio": ref["wall_s"] / ours["wall_s"]})
            print(f"rep {rep + 1}/{args.reps}: stage {ours['wall_s']:.1f} s (start-up {ours['startup_s']:.1f}, "
                  f"loop {ours['loop_s']:.1f}, end {ours['end_s']:.1f}; {ours['precision']}), "
                  f"reference {ref['wall_s']:.1f} s, ratio {rows[-1]['ratio']:.2f}x", flush=True)

    def median(get) -> float:
        return statistics.median(get(r) for r in rows)

    result = {"machine": {"cpu": cpu_model(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "epochs": args.epochs, "reference_batch_size": args.reference_batch_size, "reps": rows,
              "median": {"stage_wall_s": median(lambda r: r["stage"]["wall_s"]),
                         "stage_startup_s": median(lambda r: r["stage"]["startup_s"]),
                         "stage_loop_s": median(lambda r: r["stage"]["loop_s"]),
                         "stage_end_s": median(lambda r: r["stage"]["end_s"]),
                         "reference_wall_s": median(lambda r: r["reference"]["wall_s"]),
                         "ratio": median(lambda r: r["ratio"])}}
    m = result["median"]
    print(f"\n| {args.epochs} epochs, whole processes ({result['machine']['cpu']}), median of {args.reps} | seconds |\n"
          f"|---|---|\n| train stage, start to exit | {m['stage_wall_s']:.1f} |\n"
          f"| of which start-up, to the first step | {m['stage_startup_s']:.1f} |\n"
          f"| of which training steps | {m['stage_loop_s']:.1f} |\n"
          f"| of which the end, last step to exit | {m['stage_end_s']:.1f} |\n"
          f"| reference script (batch {args.reference_batch_size}), start to exit | {m['reference_wall_s']:.1f} |\n"
          f"| speed-up, median of side-by-side ratios | {m['ratio']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
