"""The robustness suite on the hold-out, for choosing; the test set is never read.

    python -m bench.robustness MODEL [MODEL ...] [--prepare none predict] [--size N] [--json FILE]

The hold-out is params.yaml's (data.holdout_size, data.split_seed): training images that the pipeline's
models never trained on. The first --size of them (by a seeded draw; all by default) are corrupted by each
of stages/corruptions.py's corruptions, with the test suite's seeds, and each model scores every copy
alone, as `evaluate` scores the test suite. With `--prepare predict`, every image first goes through
`predict`'s preparation (stages.predict.to_mnist: polarity, crop to the ink, 20 px, centre of mass), as a
user's picture would: the model then answers what `predict` would. An image the preparation refuses (no
ink found) counts as wrong.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from stages import config, corruptions, data, idx, paths
from stages.errors import StageError
from stages.infer import load_checkpoint, logits
from stages.model import MEAN, STD
from stages.predict import to_mnist


def holdout_pixels(raw_dir: Path, holdout_size: int, split_seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels (N, 1, 28, 28) in [0, 1] and labels of `size` images of the hold-out."""
    images, labels = idx.load_split(raw_dir, "train")
    _, held = data.holdout_split(len(images), holdout_size, split_seed)
    held = held[corruptions.subset(len(held), size)]
    return images[held].float().div(255)[:, None], labels[held]


def prepare(pixels: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized images for the model, and which ones the preparation refused (N,) bool."""
    if how == "none":
        return (pixels - MEAN) / STD, torch.zeros(len(pixels), dtype=torch.bool)
    out, refused = [], []
    for picture in pixels[:, 0]:
        try:
            out.append(to_mnist(picture))
            refused.append(False)
        except StageError:  # "no digit found": nothing for the model to read
            out.append(torch.full((1, 28, 28), -MEAN / STD))
            refused.append(True)
    return torch.stack(out), torch.tensor(refused)


def suite_accuracies(*, models: dict[str, torch.nn.Module], pixels: torch.Tensor, labels: torch.Tensor,
                     how: str) -> dict[str, dict[str, float]]:
    """{model: {'clean', each corruption: accuracy}} on the given hold-out pixels, prepared `how`."""
    views = {"clean": pixels} | {name: corruptions.corrupt(pixels, name) for name in corruptions.CORRUPTIONS}
    scores: dict[str, dict[str, float]] = {name: {} for name in models}
    for view, images in views.items():
        inputs, refused = prepare(images, how)
        for name, model in models.items():
            right = (logits(model, inputs).argmax(1) == labels) & ~refused
            scores[name][view] = round(float(right.float().mean()), 4)
    return scores


def summary(accuracy: dict[str, float]) -> dict[str, float]:
    """The clean accuracy, and the suite's mean, held-out mean and worst, as evaluate reports them."""
    suite = [v for k, v in accuracy.items() if k != "clean"]
    held_out = [accuracy[k] for k in corruptions.HELD_OUT]
    return {"clean": accuracy["clean"], "mean": round(statistics.fmean(suite), 4),
            "held_out": round(statistics.fmean(held_out), 4), "worst": min(suite)}


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: each corruption's accuracy (%), mean over the models, per preparation; then each model's summary."""
    hows = list(dict.fromkeys(r["prepare"] for r in runs))
    views = list(runs[0]["accuracy"])
    lines = ["| hold-out images | " + " | ".join(f"prepare: {h}" for h in hows) + " |", "|---|" + "---|" * len(hows)]
    for view in [*views, "mean", "held_out", "worst"]:
        cells = []
        for how in hows:
            values = [(r["accuracy"] | summary(r["accuracy"]))[view] for r in runs if r["prepare"] == how]
            cells.append(f"{100 * statistics.fmean(values):.2f}")
        lines.append(f"| {view} | " + " | ".join(cells) + " |")
    lines += ["", "| model | prepare | clean | suite mean | held-out mean | worst |", "|---|---|---|---|---|---|"]
    for r in runs:
        s = summary(r["accuracy"])
        lines.append(f"| {r['model']} | {r['prepare']} | {100 * s['clean']:.2f} | {100 * s['mean']:.2f} "
                     f"| {100 * s['held_out']:.2f} | {100 * s['worst']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="checkpoints written by the train stage")
    parser.add_argument("--data", type=Path, default=paths.RAW_DIR, help="directory with the four IDX files")
    parser.add_argument("--prepare", nargs="+", choices=("none", "predict"), default=["none", "predict"])
    parser.add_argument("--size", type=int, help="hold-out images to corrupt (default: all of them)")
    parser.add_argument("--json", type=Path, help="write every score here")
    args = parser.parse_args()
    p = config.load()
    pixels, labels = holdout_pixels(args.data, p.data.holdout_size, p.data.split_seed,
                                    args.size or p.data.holdout_size)
    models = {str(path): load_checkpoint(path, torch.device("cpu"))[0].to_cpu_layout() for path in args.models}
    runs = [{"model": name, "prepare": how, "accuracy": accuracy}
            for how in args.prepare
            for name, accuracy in suite_accuracies(models=models, pixels=pixels, labels=labels, how=how).items()]
    if args.json:
        args.json.write_text(json.dumps({"holdout_images": len(labels), "runs": runs}, indent=1) + "\n")
    print(f"{len(labels)} hold-out images, {len(models)} models\n\n{table(runs)}")


if __name__ == "__main__":
    main()
