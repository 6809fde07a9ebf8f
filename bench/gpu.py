"""One call on a CUDA GPU: the GPU end-to-end test, the default pipeline on real MNIST, the same seed twice.

    python -m bench.gpu --mnist DIR [--out DIR]

1. `pytest tests/test_gpu_e2e.py`: `dvc repro` of tiny generated data with `train.device: auto`;
2. a clone of this repository's HEAD in a scratch folder, and `dvc repro` there with params.yaml as shipped
   (device auto) and the real MNIST files of DIR (MNIST_DIR; gzipped or not);
3. the train and evaluate stages forced again in that clone: the same seed must give the
   same model.pt bytes and the same metrics.

Prints one line a step and a summary, and writes the summary to OUT/gpu.json. About 2-4 minutes on one H100;
it needs dvc, dvclive and torchsummary besides torch (`pip install -r requirements.txt`, or their wheels).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from stages import paths

REPO = Path(__file__).resolve().parent.parent


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Seconds taken and the output of a command that must succeed."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"bench.gpu: {' '.join(args)} failed (rc {done.returncode}):\n{output[-4000:]}")
    return round(time.perf_counter() - start, 1), output


def outputs(repo: Path) -> dict[str, Any]:
    """What a run left: the train summary, the metrics, and the model's MD5."""
    return {"train": json.loads((repo / paths.TRAIN_METRICS).read_text()),
            "run": json.loads((repo / paths.TRAIN_RUN).read_text()),
            "metrics": json.loads((repo / paths.METRICS).read_text()),
            "model_md5": hashlib.md5((repo / paths.MODEL).read_bytes()).hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, required=True, help="folder with the four MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("."), help="where gpu.json goes (default: here)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA GPU here (torch.cuda.is_available() is False)")
    env = {**os.environ, "MNIST_DIR": str(args.mnist.resolve()), "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}
    summary: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                                        text=True).stdout.strip()}
    seconds, out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-rs",
                        "tests/test_gpu_e2e.py"], REPO, env)
    summary["gpu_e2e_test"] = out.strip().splitlines()[-1]
    print(f"1. tests/test_gpu_e2e.py: {summary['gpu_e2e_test']} ({seconds} s)", flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        run(["git", "clone", "-q", str(REPO), str(repo)], REPO, env)
        summary["repro_s"], _ = run(["dvc", "repro"], repo, env)
        first = outputs(repo)
        print(f"2. dvc repro: {summary['repro_s']} s; train {first['train']['train_seconds']} s on "
              f"{first['train']['device']} ({first['run']['device_name']}), {first['train']['epochs_run']} "
              f"epochs; test {first['metrics']['test']}", flush=True)
        summary["again_s"], _ = run(["dvc", "repro", "--force", "--single-item", "train"], repo, env)
        run(["dvc", "repro", "--force", "--single-item", "evaluate"], repo, env)
        second = outputs(repo)
        summary.update(first=first, second=second, same_model=first["model_md5"] == second["model_md5"],
                       same_metrics=first["metrics"] == second["metrics"])
        print(f"3. the same seed again: train {second['train']['train_seconds']} s; model.pt "
              f"{'identical' if summary['same_model'] else 'DIFFERENT'}, metrics "
              f"{'identical' if summary['same_metrics'] else 'DIFFERENT'}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("first", "second")}))


if __name__ == "__main__":
    main()
