"""What the default's models read the two worst corruptions as: accuracy per true digit, and the answers' shares.

    RAW=/path/to/unpacked/mnist MODELS=/tmp/schedule_models PYTHONPATH=. \
        python bench/results/zen3-2026-12-05/worst_reads.py

The hold-out suite's 2,000 images (bench.robustness --size 2000, unprepared), stripe and a small off-centre
digit, summed over the default's models of `schedule.md` (default-50.pt ... default-57.pt); hold-out only.
"""

import os
from pathlib import Path

import torch

from bench.robustness import holdout_pixels
from stages import config, corruptions
from stages.infer import load_checkpoint, logits
from stages.model import MEAN, STD

p = config.load()
pixels, labels = holdout_pixels(Path(os.environ["RAW"]), p.data.holdout_size, p.data.split_seed, 2000)
paths = sorted(Path(os.environ["MODELS"]).glob("default-*.pt"))
models = [load_checkpoint(path, torch.device("cpu"))[0] for path in paths]
print(f"{len(labels)} hold-out images, {len(models)} models; % per digit 0-9")
for name in ("stripe", "small_off_centre"):
    inputs = (corruptions.corrupt(pixels, name) - MEAN) / STD
    confusion = torch.zeros(10, 10, dtype=torch.long)  # [true, answer]
    for model in models:
        answers = logits(model, inputs).argmax(1)
        confusion += torch.bincount(labels * 10 + answers, minlength=100).view(10, 10)
    right, answered = confusion.diag() / confusion.sum(1), confusion.sum(0) / confusion.sum()
    print(f"{name}: right per true digit  " + " ".join(f"{100 * v:3.0f}" for v in right.tolist()))
    print(f"{name}: share of answers      " + " ".join(f"{100 * v:3.0f}" for v in answered.tolist()))
