"""The robustness suite on the hold-out, for choosing; the test set is never read.

    python -m bench.robustness MODEL [MODEL ...] [--prepare none predict] [--size N] [--json FILE]
    python -m bench.robustness --summarize FILE [FILE ...] [--variant NAME ...]

The hold-out is params.yaml's (data.holdout_size, data.split_seed): training images that the pipeline's
models never trained on. The first --size of them (by a seeded draw; all by default) are corrupted by each
of stages/corruptions.py's corruptions, with the test suite's seeds, and each model scores every copy
alone, as `evaluate` scores the test suite. With `--prepare predict`, every image first goes through
`predict`'s preparation (stages.predict.to_mnist: polarity, crop to the ink, 20 px, centre of mass), as a
user's picture would: the model then answers what `predict` would. An image the preparation refuses (no
ink found) counts as wrong.

With --summarize, only the table of saved scores (--json files) of models that `bench.holdout --save` named
`<variant>-<seed>.pt`: each variant against the first (the baseline), paired by seed on the seeds where every
variant was scored; --variant names keep those variants, the first named as the baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from bench.holdout import mean_se
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


def variant_seed(model: str) -> tuple[str, int]:
    """The variant and seed of a checkpoint that `bench.holdout --save` named `<variant>-<seed>.pt`."""
    variant, _, seed = Path(model).stem.rpartition("-")
    if not (variant and seed.isdigit()):
        raise SystemExit(f"bench.robustness: {model}: not named <variant>-<seed>.pt")
    return variant, int(seed)


def scores_by_run(runs: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, float]]:
    """{(prepare, variant, seed): each corruption's accuracy and the summary} of a `--json` file's runs, whose
    models are named `<variant>-<seed>.pt`; a model scored twice the same way is an error, not a pair."""
    by_run: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in runs:
        variant, seed = variant_seed(r["model"])
        if (r["prepare"], variant, seed) in by_run:
            raise SystemExit(f"bench.robustness: {variant}-{seed} scored twice (prepare: {r['prepare']})")
        by_run[r["prepare"], variant, seed] = r["accuracy"] | summary(r["accuracy"])
    return by_run


def paired_table(runs: list[dict[str, Any]], variants: list[str] | None = None) -> str:
    """Markdown, per preparation: the baseline's mean over seeds, then each variant's mean with its paired
    difference (points, mean ± SE) and on how many seeds it is higher, for the summary and every corruption;
    and which corruption is each run's worst. Models are named `<variant>-<seed>.pt`; the first variant
    (of `variants` when given, else of the runs) is the baseline."""
    by_run = scores_by_run(runs)
    variants = variants or list(dict.fromkeys(v for _, v, _ in by_run))
    base, lines = variants[0], []
    for how in dict.fromkeys(h for h, _, _ in by_run):
        seeds = sorted({s for h, _, s in by_run if h == how and all((how, v, s) in by_run for v in variants)})
        if not seeds:
            raise SystemExit(f"bench.robustness: no seed has every variant of {variants} (prepare: {how})")
        scores = {v: [by_run[how, v, s] for s in seeds] for v in variants}
        lines += [f"prepare: {how}, seeds {' '.join(map(str, seeds))}; % (paired vs {base}: points, "
                  f"mean ± SE, seeds higher)", "",
                  "| | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
        for view in ["clean", "mean", "held_out", "worst", *corruptions.CORRUPTIONS]:
            cells = [f"{100 * statistics.fmean(r[view] for r in scores[base]):.2f}"]
            for v in variants[1:]:
                diffs = [100 * (r[view] - b[view]) for r, b in zip(scores[v], scores[base], strict=True)]
                diff, se = mean_se(diffs)
                cells.append(f"{100 * statistics.fmean(r[view] for r in scores[v]):.2f} ({diff:+.2f} ± {se:.2f}, "
                             f"{sum(d > 0 for d in diffs)} of {len(diffs)})")
            lines.append(f"| {view} | " + " | ".join(cells) + " |")
        worst = [Counter(min(corruptions.CORRUPTIONS, key=r.__getitem__) for r in scores[v]) for v in variants]
        lines += ["| each run's worst | " + " | ".join(", ".join(f"{name} {count}" for name, count in w.most_common())
                                                      for w in worst) + " |", ""]
    return "\n".join(lines).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="*", help="checkpoints written by the train stage")
    parser.add_argument("--data", type=Path, default=paths.RAW_DIR, help="directory with the four IDX files")
    parser.add_argument("--prepare", nargs="+", choices=("none", "predict"), default=["none", "predict"])
    parser.add_argument("--size", type=int, help="hold-out images to corrupt (default: all of them)")
    parser.add_argument("--json", type=Path, help="write every score here")
    parser.add_argument("--summarize", type=Path, nargs="+", help="only print the paired table of these --json "
                        "files (models named <variant>-<seed>.pt)")
    parser.add_argument("--variant", action="append", help="with --summarize: keep this variant (the first named: "
                        "the baseline)")
    args = parser.parse_args()
    if args.summarize:
        runs = [r for f in args.summarize for r in json.loads(f.read_text())["runs"]]
        print(paired_table(runs, args.variant))
        return
    if not args.models:
        parser.error("give the models to score, or --summarize")
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
