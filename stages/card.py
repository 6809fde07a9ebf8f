"""The model card (reports/model_card.md): what the model is, what it was trained on, how it scored and where it
fails, written by `evaluate` from the run's own checkpoint and figures, so it cannot fall behind the model.

After "Model Cards for Model Reporting" (Mitchell et al., 2019) and Hugging Face's model cards.
"""

from __future__ import annotations

from typing import Any

from stages import paths
from stages.corruptions import HELD_OUT
from stages.model import MEAN, STD, Net

WEAK = 0.90  # a corruption under which the model reads fewer than this share is named among its limits


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def recipe(params: dict[str, Any]) -> str:
    """The training params that decide the weights, as one line a person can read and `dvc exp run -S` can set."""
    t, aug = params["train"], params["train"]["augment"]
    return (f"{t['optimizer']} (lr {t['lr']}, {t['schedule']}), batch {t['batch_size']}, at most {t['epochs']} "
            f"epochs with early stopping (patience {t['patience']}), label smoothing {t['label_smoothing']}, "
            f"{t['precision']}, seed {t['seed']}; augmentation: rotation ±{aug['rotate']}°, shift ±{aug['translate']} "
            f"of the side, scale ±{aug['scale']}, a change of look on {aug['appearance']:.0%} of the images "
            f"(pen width, blur, low resolution, noise, grey paper)"
            + (f"; pruning: {t['prune']['share']:.0%} of the images already learned left out of each epoch but the "
               f"first and the last {t['prune']['full_epochs']}" if t["prune"]["share"] else ""))


def model_card(*, checkpoint: dict[str, Any], test: dict[str, Any], robustness: dict[str, float],
               per_class: list[dict[str, Any]], n_test: int, suite_size: int) -> str:
    """The card as Markdown. checkpoint: models/model.pt less its weights (epoch, val_accuracy, params); test and
    robustness: evaluate()'s and robustness()'s figures; per_class: evaluate()'s {digit, accuracy} rows."""
    params = checkpoint["params"]
    n_params = sum(p.numel() for p in Net().parameters() if p.requires_grad)
    corruptions = {k: v for k, v in robustness.items() if k not in ("mean", "held_out", "worst")}
    worst_name = min(corruptions, key=corruptions.__getitem__)
    weak = sorted((v, k) for k, v in corruptions.items() if v < WEAK)
    weakest_digit = min(per_class, key=lambda r: r["accuracy"])
    digits = " | ".join(r["digit"] for r in per_class)
    held_out = ", ".join(k for k in corruptions if k in HELD_OUT)
    lines = [
        "# Model card: mnist-cnn",
        "",
        "Written by `python -m stages.evaluate` from this run's checkpoint and figures; every `dvc repro` that",
        "changes the model writes it again.",
        "",
        "## What it is",
        "",
        "- The CNN of \"MNIST Classification with PyTorch\" (docs/seed-readme.md in the repository): six 3x3",
        f"  convolutions with BatchNorm and ReLU, two max-pools and global average pooling; {n_params:,} trainable",
        "  parameters.",
        f"- Input: one digit as a float32 image (1, 28, 28), ink bright on black, normalized (x - {MEAN}) / {STD}.",
        "  Output: 10 logits, one per digit 0-9.",
        f"- Files: `{paths.MODEL}` (PyTorch; DVC artifact `mnist-cnn`) and `{paths.ONNX}` (ONNX; `mnist-cnn-onnx`).",
        "",
        "## Intended use",
        "",
        "Reading one handwritten digit per picture: scans, photos, drawings, once prepared as MNIST's digits are",
        "(`python -m stages.predict` does that). Not for several digits in one picture, letters or other",
        "symbols: it always answers one of 0-9 and has no \"none of these\".",
        "",
        "## Training data and recipe",
        "",
        f"- MNIST's 60,000 training images less a hold-out of {params['data']['holdout_size']:,} (split seed "
        f"{params['data']['split_seed']}). The kept weights are those of epoch {checkpoint['epoch']}, chosen on the",
        f"  hold-out ({params['train']['selection']}), where they read {pct(checkpoint['val_accuracy'])}. The test set",
        "  played no part in training or in the choice.",
        f"- Recipe: {recipe(params)}.",
        "",
        f"## Evaluation: MNIST's {n_test:,} test images",
        "",
        "| how it is read | accuracy | errors |",
        "|---|---|---|",
        f"| with the four one-pixel shifts (softmax averaged; as `predict` and `evaluate` answer) | "
        f"{pct(test['accuracy'])} | {test['errors']} |",
        f"| one pass (the model alone, as PyTorch or ONNX code answers) | {pct(test['one_pass'])} | "
        f"{test['one_pass_errors']} |",
        "",
        "Per digit, with the shifts:",
        "",
        f"| digit | {digits} |",
        "|---|" + "---|" * len(per_class),
        f"| accuracy | {' | '.join(pct(r['accuracy']) for r in per_class)} |",
        "",
        f"## Robustness: {len(corruptions)} corruptions of {suite_size:,} test images, one pass",
        "",
        f"Mean {pct(robustness['mean'])}; worst {pct(robustness['worst'])} ({worst_name})"
        + (f"; the held-out group (corruptions no training augmentation makes: {held_out}) "
           f"{pct(robustness['held_out'])}." if "held_out" in robustness else "."),
        "",
        "| corruption | " + " | ".join(corruptions) + " |",
        "|---|" + "---|" * len(corruptions),
        "| accuracy | " + " | ".join(pct(v) for v in corruptions.values()) + " |",
        "",
        "## How to use it",
        "",
        "```python",
        "# PyTorch, in this repository",
        "import torch",
        "from stages.model import Net",
        f"model = Net(); model.load_state_dict(torch.load(\"{paths.MODEL}\", weights_only=True)[\"state_dict\"])",
        "logits = model.eval()(images)  # images: (N, 1, 28, 28), normalized as above",
        "",
        "# ONNX, anywhere onnxruntime runs (Python, C++, C#, Java, JavaScript)",
        "import onnxruntime",
        f"session = onnxruntime.InferenceSession(\"{paths.ONNX}\")",
        "logits = session.run([\"logits\"], {\"image\": images})[0]  # images: float32 numpy array",
        "```",
        "",
        "A picture file: `python -m stages.predict photo.jpg [--json]` prepares it and answers with the shifts.",
        "",
        "## Limits, from the figures above",
        "",
        f"- The weakest digit is {weakest_digit['digit']}, at {pct(weakest_digit['accuracy'])} on the test set.",
        f"- In one pass, as your own code reads it, it makes {test['one_pass_errors']} errors on the test set where",
        f"  the shifts make {test['errors']}.",
        ("- Under these corruptions it reads fewer than " + pct(WEAK) + ": "
         + ", ".join(f"{name} {pct(v)}" for v, name in weak) + "."
         if weak else f"- It reads at least {pct(WEAK)} under every corruption of the suite."),
        "- MNIST's digits were written by American Census Bureau employees and high-school students, scanned,",
        "  size-normalized and centred. Other hands, pens and scripts (a 1 with a flag, a crossed 7) were not in",
        "  its training data and are not in these figures.",
        "",
    ]
    return "\n".join(lines)
