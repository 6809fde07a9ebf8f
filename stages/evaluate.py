"""Stage `evaluate`: the saved model on the 10,000-image test set and on the robustness suite.

The only stage that scores the test set (`plots` draws the images it got
wrong). Writes reports/metrics.json, the headline figures that `dvc metrics
show` lists: test accuracy with the four one-pixel shifts (test.accuracy, as
`predict` answers) and in one forward pass (test.one_pass, as the bare model
answers in your code), and the suite's mean and worst accuracy. The rest goes
to reports/eval: details.json (errors, loss, the held-out group's mean, the
worst corruption's name), the accuracy of each digit and under each corruption
for bar charts (per_class.json, robustness.json; `dvc plots diff` compares
them), and one row per test image for DVC's `confusion` template
(confusion.json). And reports/model_card.md: what the model is, what it was
trained on, these figures and its limits, on one page (stages/card.py).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from stages import atomic, card, cli, config, corruptions, data, paths
from stages.device import resolve_device
from stages.infer import load_checkpoint, logits, probabilities


def evaluate(*, model: torch.nn.Module, images: torch.Tensor,
             labels: torch.Tensor) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Test metrics, a {digit, accuracy} row per class, and an {index, actual, predicted, probability} row per image.

    Predictions average the softmax over each image and its one-pixel shifts (infer.TTA_SHIFTS); the loss is the
    mean negative log-likelihood of those averaged probabilities. one_pass and one_pass_errors: the image alone,
    one forward pass, as the saved model answers when loaded into other code.
    """
    probs = probabilities(model, images)
    predicted = probs.argmax(1)
    right = predicted == labels
    one_pass_right = logits(model, images).argmax(1) == labels
    hits, counts = torch.bincount(labels[right], minlength=10), torch.bincount(labels, minlength=10)
    per_class = [{"digit": str(c), "accuracy": round(h / max(n, 1), 6)}
                 for c, (h, n) in enumerate(zip(hits.tolist(), counts.tolist(), strict=True))]
    metrics = {"test": {"accuracy": int(right.sum()) / len(labels),
                        "one_pass": int(one_pass_right.sum()) / len(labels),
                        "loss": -probs[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean().item(),
                        "errors": int((~right).sum().item()), "one_pass_errors": int((~one_pass_right).sum().item())}}
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


def headline(figures: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """evaluate()'s test figures and robustness()'s summary, {"test": ..., "robustness": ...}, split into the
    headline (reports/metrics.json) and the details (reports/eval/details.json).

    The headline is what `dvc metrics show` prints beside the train stage's summary, within 140 columns;
    the suite's per-corruption accuracies are in the plot file, for `dvc plots diff`.
    """
    test, robust = figures["test"], figures["robustness"]
    corruptions_only = {k: v for k, v in robust.items() if k not in ("mean", "held_out", "worst")}
    metrics = {"test": {"accuracy": test["accuracy"], "one_pass": test["one_pass"]},
               "robustness": {"mean": robust["mean"], "worst": robust["worst"]}}
    details = {"test": {k: test[k] for k in ("errors", "one_pass_errors", "loss")},
               "robustness": {**({"held_out": robust["held_out"]} if "held_out" in robust else {}),
                              "worst_corruption": min(corruptions_only, key=corruptions_only.__getitem__)}}
    return metrics, details


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.evaluate",
                      reads=["params.yaml (train.device)", str(paths.MODEL), f"{paths.RAW_DIR}/ (the test images)",
                             f"{paths.SUITE} (the robustness suite)"],
                      writes=[str(paths.METRICS), str(paths.EVAL_DETAILS), str(paths.CONFUSION),
                              str(paths.PER_CLASS), str(paths.PER_CORRUPTION), str(paths.MODEL_CARD)])


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
    figures, per_class, rows = evaluate(model=model, images=images, labels=labels)
    figures["robustness"], per_corruption = robustness(model=model, suite=suite)
    metrics, details = headline(figures)
    atomic.write_json(paths.CONFUSION, rows)
    atomic.write_json(paths.PER_CLASS, per_class)
    atomic.write_json(paths.PER_CORRUPTION, per_corruption)
    atomic.write_json(paths.EVAL_DETAILS, details)
    test, robust = figures["test"], figures["robustness"]
    atomic.write_text(paths.MODEL_CARD, card.model_card(checkpoint=checkpoint, test=test, robustness=robust,
                                                        per_class=per_class, n_test=len(labels),
                                                        suite_size=len(suite["labels"])))
    atomic.write_json(paths.METRICS, metrics)
    print(f"test accuracy {test['accuracy']:.2%} with the one-pixel shifts ({test['errors']} errors in "
          f"{len(labels)}), {test['one_pass']:.2%} in one pass ({test['one_pass_errors']} errors); loss "
          f"{test['loss']:.4f}; model from epoch {checkpoint.get('epoch')}\n"
          f"robustness: {robust['mean']:.2%} on average over {len(per_corruption)} corruptions of "
          f"{len(suite['labels'])} test images, worst {robust['worst']:.2%} "
          f"({details['robustness']['worst_corruption']})")


if __name__ == "__main__":
    cli.run(main, parser())
