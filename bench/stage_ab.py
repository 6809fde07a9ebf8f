"""Two recipes' train stages as whole processes, side by side: A B A B, with the ratio B / A per pair.

    python -m bench.stage_ab --data DIR --b train.epochs=13,train.batch_size=128 \\
        [--a KEY=VALUE,...] [--pairs 2] [--json FILE]

Each side is params.yaml with its `key=value` overrides (validated as `dvc exp run -S` is), in a scratch
project of its own whose data/raw links to --data; each run is `python -m stages.train` there, timed from
process start to exit, beside the stage's own train_seconds and epochs run. A B A B in turn, so a drift in
the machine's speed falls on both sides; quote the median ratio. To time the AVX2 path on a newer CPU:
`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m bench.stage_ab …`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.holdout import with_overrides
from stages import config, paths
from stages.device import cpu_model

REPO = Path(__file__).resolve().parent.parent


def make_project(root: Path, raw_dir: Path, overrides: list[str]) -> Path:
    """A scratch project: params.yaml with the overrides (checked), data/raw linked to raw_dir."""
    params = with_overrides(yaml.safe_load(paths.PARAMS.read_text()), overrides)
    config.parse(params)
    (root / "data").mkdir(parents=True)
    (root / "data" / "raw").symlink_to(raw_dir.resolve())
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_stage(project: Path) -> dict[str, Any]:
    """`python -m stages.train` in project, start to exit; with its own train_seconds and epochs_run."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.train"], cwd=project, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    summary = json.loads((project / paths.TRAIN_METRICS).read_text())
    return {"wall_s": round(wall, 2), "train_seconds": summary["train_seconds"], "epochs_run": summary["epochs_run"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=paths.RAW_DIR, help="directory with the four IDX files")
    parser.add_argument("--a", default="", help="side A's overrides, key=value,key=value (default: none)")
    parser.add_argument("--b", required=True, help="side B's overrides")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every run and the medians here")
    args = parser.parse_args()
    sides = {name: [item for item in text.split(",") if item.strip()] for name, text in (("a", args.a), ("b", args.b))}
    pairs = []
    with tempfile.TemporaryDirectory(prefix="stage-ab-") as tmp:
        projects = {name: make_project(Path(tmp) / name, args.data, items) for name, items in sides.items()}
        for i in range(args.pairs):
            pair = {name: run_stage(project) for name, project in projects.items()}
            pair["ratio"] = round(pair["b"]["wall_s"] / pair["a"]["wall_s"], 3)
            pairs.append(pair)
            print(f"pair {i + 1}/{args.pairs}: A {pair['a']['wall_s']:.1f} s ({pair['a']['epochs_run']} epochs), "
                  f"B {pair['b']['wall_s']:.1f} s ({pair['b']['epochs_run']} epochs), B/A {pair['ratio']:.3f}",
                  flush=True)
    medians = {"a_wall_s": statistics.median(p["a"]["wall_s"] for p in pairs),
               "b_wall_s": statistics.median(p["b"]["wall_s"] for p in pairs),
               "ratio": statistics.median(p["ratio"] for p in pairs)}
    print(f"median: A {medians['a_wall_s']:.1f} s, B {medians['b_wall_s']:.1f} s, B/A {medians['ratio']:.3f} "
          f"({cpu_model()}, {torch.backends.cpu.get_cpu_capability()} kernels, {torch.get_num_threads()} threads)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "kernels": torch.backends.cpu.get_cpu_capability(),
                                         "threads": torch.get_num_threads(), "a": sides["a"], "b": sides["b"],
                                         "pairs": pairs, "median": medians}, indent=1) + "\n")


if __name__ == "__main__":
    main()
