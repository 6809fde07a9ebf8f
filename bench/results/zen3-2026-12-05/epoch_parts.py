"""Where a training epoch's time goes on this CPU: the affine augmentation, `appearance`, the steps, validation.

    RAW=/path/to/unpacked/mnist PYTHONPATH=. python bench/results/zen3-2026-12-05/epoch_parts.py

The default params' training loop (stages/train.py) over N training images (20,480 unless N is set), each part
timed apart, scaled to a 55,000-image epoch; validation is one pass over the 5,000-image hold-out.
"""

import os
import time
from pathlib import Path

import torch
import yaml

from stages import config, data
from stages.infer import score
from stages.model import Net
from stages.step import make_optimizer, make_step, seed_everything

CHUNK = 4096  # images augmented at once, as stages.train.AUGMENT_CHUNK
BATCH = 64

cfg = config.Train.model_validate(yaml.safe_load(Path("params.yaml").read_text())["train"])
a = cfg.augment
train_x, train_y, val_x, val_y = data.load_holdout(Path(os.environ["RAW"]), 5000, 0, torch.device("cpu"))
generator = torch.Generator().manual_seed(0)
seed_everything(0)
model = Net()
model.to_cpu_layout()
step = make_step(model=model, optimizer=make_optimizer(model, cfg, torch.device("cpu")), amp_dtype=None,
                 label_smoothing=cfg.label_smoothing, loss_sum=torch.zeros(()),
                 correct=torch.zeros((), dtype=torch.long))
seconds = dict.fromkeys(("aug", "app", "step"), 0.0)
n = int(os.environ.get("N", 20480))
perm = torch.randperm(len(train_x), generator=generator)[:n]
model.train()
for first in range(0, n, CHUNK):
    rows = perm[first:first + CHUNK]
    xs, ys = train_x[rows], train_y[rows]
    t0 = time.perf_counter()
    xs = data.augment(xs, rotate=a.rotate, translate=a.translate, scale=a.scale, generator=generator)
    t1 = time.perf_counter()
    xs = data.appearance(xs, share=a.appearance, generator=generator)
    t2 = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        step(xs[i:i + BATCH], ys[i:i + BATCH])
    t3 = time.perf_counter()
    seconds["aug"] += t1 - t0
    seconds["app"] += t2 - t1
    seconds["step"] += t3 - t2
epoch = {k: round(v * 55000 / n, 2) for k, v in seconds.items()}
t0 = time.perf_counter()
score(model, val_x, val_y)
epoch["val"] = round(time.perf_counter() - t0, 2)
print(epoch, "s per 55k-image epoch;", torch.get_num_threads(), "threads")
