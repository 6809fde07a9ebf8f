"""Stage `plots`: PNGs of the training curves, the confusion matrix, the misclassified test images and the suite.

Reads what train and evaluate wrote (DVCLive's per-epoch files, the
confusion rows), the test images and the robustness suite's corrupted copies
of them; renders with matplotlib's Agg backend.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from stages import atomic, cli, config, corruptions, idx, paths  # noqa: E402
from stages.errors import StageError  # noqa: E402

PNGS = ("training_curves.png", "confusion_matrix.png", "misclassified.png", "robustness_suite.png")  # in paths.PLOTS


def read_history(history_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{'train/accuracy': [(epoch, value), ...], ...} from DVCLive's per-metric TSV files."""
    history = {}
    for split in ("train", "val"):
        for metric in ("accuracy", "loss"):
            path = history_dir / split / f"{metric}.tsv"
            try:
                with path.open() as f:
                    history[f"{split}/{metric}"] = [(int(r["step"]), float(r[metric]))
                                                    for r in csv.DictReader(f, delimiter="\t")]
            except FileNotFoundError:
                raise StageError(f"{path}: missing (run `dvc repro train` first)") from None
            except (KeyError, ValueError) as exc:
                raise StageError(f"{path}: not DVCLive's step/{metric} table ({exc})") from None
    return history


def read_confusion(path: Path) -> list[dict[str, Any]]:
    """evaluate's rows: {index, actual, predicted, probability} per test image."""
    try:
        rows = json.loads(path.read_text())
        if not all({"index", "actual", "predicted", "probability"} <= set(r) for r in rows):
            raise ValueError("rows need index, actual, predicted and probability")
    except FileNotFoundError:
        raise StageError(f"{path}: missing (run `dvc repro evaluate` first)") from None
    except (ValueError, TypeError) as exc:
        raise StageError(f"{path}: not evaluate's confusion rows ({exc})") from None
    return rows


def _save(fig: plt.Figure, path: Path, dpi: int) -> None:
    with atomic.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def plot_curves(history: dict[str, list[tuple[int, float]]], path: Path, dpi: int) -> None:
    """Accuracy and loss per epoch, training vs validation: the seed's 'accuracy vs loss' graph.

    The training loss is what was minimized: cross-entropy against label-smoothed targets, which
    stays well above the validation's plain cross-entropy however good the model gets.
    """
    labels = {("train", "accuracy"): "training (augmented batches)", ("val", "accuracy"): "validation (hold-out)",
              ("train", "loss"): "training (label-smoothed cross-entropy)",
              ("val", "loss"): "validation (plain cross-entropy)"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for split in ("train", "val"):
            label = labels[split, metric]
            epochs, values = zip(*history[f"{split}/{metric}"], strict=True)
            ax.plot(epochs, [v * 100 for v in values] if metric == "accuracy" else values, marker="o",
                    markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if metric == "accuracy" else "cross-entropy loss")
        ax.set_title(f"{metric.capitalize()} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if metric == "accuracy" else "upper right")
    axes[0].set_ylim(top=100)
    axes[1].set_yscale("log")
    fig.tight_layout()
    _save(fig, path, dpi)


def confusion_counts(rows: list[dict[str, Any]]) -> torch.Tensor:
    """10x10 counts, [actual, predicted]."""
    counts = torch.zeros(10, 10, dtype=torch.long)
    for row in rows:
        counts[row["actual"], row["predicted"]] += 1
    return counts


def plot_confusion(rows: list[dict[str, Any]], path: Path, dpi: int) -> None:
    counts = confusion_counts(rows)
    errors = counts.clone()
    errors.fill_diagonal_(0)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    # Colour shows the errors only; the diagonal would otherwise drown them.
    image = ax.imshow(errors.numpy(), cmap="Reds")
    for a in range(10):
        for p in range(10):
            n = int(counts[a, p])
            if n:
                dark = a != p and errors[a, p] > errors.max() / 2  # white text on the darkest cells
                ax.text(p, a, str(n), ha="center", va="center", fontsize=7,
                        color="tab:blue" if a == p else "white" if dark else "black",
                        fontweight="bold" if a == p else None)
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    total = int(counts.sum())
    wrong = total - int(counts.trace())
    ax.set_title(f"Test confusion matrix: {wrong} errors in {total}")
    fig.colorbar(image, ax=ax, label="misclassified images")
    fig.tight_layout()
    _save(fig, path, dpi)


def plot_misclassified(rows: list[dict[str, Any]], images: torch.Tensor, path: Path, dpi: int,
                       limit: int) -> None:
    """A grid of up to `limit` misclassified test images, least confident mistakes last."""
    wrong = sorted((r for r in rows if r["actual"] != r["predicted"]), key=lambda r: -r["probability"])[:limit]
    cols = 10
    nrows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.1, nrows * 1.3 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, wrong, strict=False):  # the grid's last row may have empty cells
        ax.imshow(images[row["index"]].numpy(), cmap="gray_r")
        ax.set_title(f"{row['actual']}→{row['predicted']} {row['probability']:.0%}", fontsize=8, color="tab:red")
    fig.suptitle(f"Misclassified test images: true→predicted (probability); {len(wrong)} shown", fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi)


def plot_suite(suite: dict[str, torch.Tensor], images: torch.Tensor, path: Path, dpi: int, columns: int = 10) -> None:
    """The suite's first `columns` test images, clean and under each corruption, a row each, as evaluate scores them."""
    rows = {"clean": images[suite["indices"][:columns]]} | {
        name: pixels[:columns] for name, pixels in suite.items() if name not in ("indices", "labels")}
    fig, axes = plt.subplots(len(rows), 1, figsize=(columns * 0.6 + 1.6, len(rows) * 0.62 + 0.5), squeeze=False)
    for ax, (name, pixels) in zip(axes[:, 0], rows.items(), strict=True):
        ax.imshow(torch.cat(list(pixels), 1).numpy(), cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name.replace("_", " "), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("The robustness suite: test images as evaluate scores them (ink bright, as in MNIST)", fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi)


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.plots",
                      reads=["params.yaml (plots)", f"{paths.TRAIN_HISTORY}/", str(paths.CONFUSION),
                             f"{paths.RAW_DIR}/ (the test images)", f"{paths.SUITE} (the robustness suite)"],
                      writes=[str(paths.PLOTS / name) for name in PNGS])


def main(args: argparse.Namespace) -> None:
    p = config.load()
    history = read_history(paths.TRAIN_HISTORY)
    rows = read_confusion(paths.CONFUSION)
    test_images, _ = idx.load_split(paths.RAW_DIR, "test")
    suite = corruptions.load_suite(paths.SUITE)
    curves, confusion, misclassified, suite_grid = (paths.PLOTS / name for name in PNGS)
    plot_curves(history, curves, p.plots.dpi)
    plot_confusion(rows, confusion, p.plots.dpi)
    plot_misclassified(rows, test_images, misclassified, p.plots.dpi, p.plots.misclassified)
    plot_suite(suite, test_images, suite_grid, p.plots.dpi)
    print(f"plots: {', '.join(PNGS)} in {paths.PLOTS}/")


if __name__ == "__main__":
    cli.run(main, parser())
