"""Stage `evaluate`: the saved model on the 10,000-image test set and on the robustness suite.

The only stage that scores the test set (`plots` draws the images it got
wrong). Writes reports/metrics.json (accuracy, loss, errors, and the suite's
accuracy under each corruption, their mean, the mean of the held-out ones and
the worst: what `dvc metrics show` lists), and three plot files: the accuracy of each digit and under each
corruption for bar charts in reports/eval/per_class.json and robustness.json,
and one row per test image for DVC's `confusion` template in
reports/eval/confusion.json.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from stages import atomic, cli, config, corruptions, data, paths
from stages.device import resolve_device
from stages.infer import load_checkpoint, logits, probabilities


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


def robustness(*, model: torch.nn.Module, suite: dict[str, torch.Tensor]) -> tuple[dict[str, float],
                                                                                    list[dict[str, Any]]]:
    """{mean, held_out, worst, and each corruption's accuracy}, and a {corruption, accuracy} row per corruption.

    held_out is the mean over those of corruptions.HELD_OUT in the suite: no training augmentation makes them.

    Each image is scored alone, without the test's shifted copies: a roll would wrap the grey borders of
    brightness, fog, stripe and photo into the image, and five passes over the suite would double the stage's time.
    """
    device = next(model.parameters()).device
    labels = suite["labels"].to(device)
    accuracy = {}
    for name, images in suite.items():
        if name not in ("indices", "labels"):
            predicted = logits(model, data.normalize(images).to(device)).argmax(1)
            accuracy[name] = round(int((predicted == labels).sum()) / len(labels), 4)
    held_out = [accuracy[name] for name in corruptions.HELD_OUT if name in accuracy]
    summary = {"mean": round(sum(accuracy.values()) / len(accuracy), 4),
               **({"held_out": round(sum(held_out) / len(held_out), 4)} if held_out else {}),
               "worst": min(accuracy.values()), **accuracy}
    return summary, [{"corruption": name, "accuracy": value} for name, value in accuracy.items()]


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.evaluate",
                      reads=["params.yaml (train.device)", str(paths.MODEL), f"{paths.RAW_DIR}/ (the test images)",
                             f"{paths.SUITE} (the robustness suite)"],
                      writes=[str(paths.METRICS), str(paths.CONFUSION), str(paths.PER_CLASS),
                              str(paths.PER_CORRUPTION)])


def main(args: argparse.Namespace) -> None:
    p = config.load()
    device = resolve_device(p.train.device)
    model, checkpoint = load_checkpoint(paths.MODEL, device)
    # Training's CPU layout pays for the suite's 21,000 images: the stage with the suite takes the time the stage
    # without it took in NCHW (7.7 against 7.8 s, median of 5 pairs, 2-core AMD EPYC Zen 4); in NCHW it took 1.25x.
    if device.type == "cpu":
        model.to_cpu_layout()
    images, labels = data.load(paths.RAW_DIR, "test", device)
    suite = corruptions.load_suite(paths.SUITE)
    metrics, per_class, rows = evaluate(model=model, images=images, labels=labels)
    metrics["robustness"], per_corruption = robustness(model=model, suite=suite)
    atomic.write_json(paths.CONFUSION, rows)
    atomic.write_json(paths.PER_CLASS, per_class)
    atomic.write_json(paths.PER_CORRUPTION, per_corruption)
    atomic.write_json(paths.METRICS, metrics)
    test, robust = metrics["test"], metrics["robustness"]
    worst = min(per_corruption, key=lambda r: r["accuracy"])["corruption"]
    print(f"test accuracy {test['accuracy']:.2%} ({test['errors']} errors in {len(labels)}), "
          f"loss {test['loss']:.4f}; model from epoch {checkpoint.get('epoch')}\n"
          f"robustness: {robust['mean']:.2%} on average over {len(per_corruption)} corruptions of "
          f"{len(suite['labels'])} test images, worst {robust['worst']:.2%} ({worst})")


if __name__ == "__main__":
    cli.run(main, parser())
