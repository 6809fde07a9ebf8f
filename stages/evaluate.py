"""Stage `evaluate`: the saved model on the 10,000-image test set.

The only stage that scores the test set (`plots` draws the images it got
wrong). Writes reports/metrics.json (accuracy, loss, errors:
what `dvc metrics show` lists), and two plot files: the accuracy of each digit
for a bar chart in reports/eval/per_class.json, and one row per test image for
DVC's `confusion` template in reports/eval/confusion.json.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from stages import atomic, cli, config, data, paths
from stages.device import resolve_device
from stages.infer import load_checkpoint, probabilities


def evaluate(*, model: torch.nn.Module, images: torch.Tensor,
             labels: torch.Tensor) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Test metrics, a {digit, accuracy} row per class, and an {index, actual, predicted, probability} row per image.

    Predictions average the softmax over each image and its one-pixel shifts (infer.TTA_SHIFTS); the loss is the
    mean negative log-likelihood of those averaged probabilities.
    """
    probs = probabilities(model, images)
    predicted = probs.argmax(1)
    right = predicted == labels
    hits, counts = torch.bincount(labels[right], minlength=10), torch.bincount(labels, minlength=10)
    per_class = [{"digit": str(c), "accuracy": round(h / max(n, 1), 6)}
                 for c, (h, n) in enumerate(zip(hits.tolist(), counts.tolist(), strict=True))]
    metrics = {"test": {"accuracy": int(right.sum()) / len(labels),
                        "loss": -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean().item(),
                        "errors": int((~right).sum().item())}}
    rows = [{"index": i, "actual": a, "predicted": p, "probability": round(q, 4)}
            for i, (a, p, q) in enumerate(zip(labels.tolist(), predicted.tolist(),
                                              probs.max(1).values.tolist(), strict=True))]
    return metrics, per_class, rows


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.evaluate",
                      reads=["params.yaml (train.device)", str(paths.MODEL), f"{paths.RAW_DIR}/ (the test images)"],
                      writes=[str(paths.METRICS), str(paths.CONFUSION), str(paths.PER_CLASS)])


def main(args: argparse.Namespace) -> None:
    p = config.load()
    device = resolve_device(p.train.device)
    model, checkpoint = load_checkpoint(paths.MODEL, device)
    images, labels = data.load(paths.RAW_DIR, "test", device)
    metrics, per_class, rows = evaluate(model=model, images=images, labels=labels)
    atomic.write_json(paths.CONFUSION, rows)
    atomic.write_json(paths.PER_CLASS, per_class)
    atomic.write_json(paths.METRICS, metrics)
    test = metrics["test"]
    print(f"test accuracy {test['accuracy']:.2%} ({test['errors']} errors in {len(labels)}), "
          f"loss {test['loss']:.4f}; model from epoch {checkpoint.get('epoch')}")


if __name__ == "__main__":
    cli.run(main, parser())
