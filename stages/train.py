"""Stage `train`: fit Net on MNIST with early stopping; keep the best weights.

Validation is a seeded hold-out of the training set, so the test set is
never seen here. Per-epoch history goes to DVCLive; the weights of the epoch
chosen by `train.selection` on the hold-out go to models/model.pt.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from stages import atomic, cli, config, data, paths
from stages.device import cpu_kernels, device_info, resolve_device
from stages.errors import StageError
from stages.infer import score
from stages.model import Net
from stages.step import autocast_dtype, make_optimizer, make_step, seed_everything


@dataclass
class Result:
    saved_state: dict[str, torch.Tensor]
    saved_epoch: int
    saved_accuracy: float
    saved_loss: float
    epochs_run: int
    stopped_because: str  # "target_accuracy", "patience" or "epochs"
    history: list[dict[str, float]] = field(default_factory=list)


# Images augmented per call of data.augment: one affine grid for many batches
# (fewer kernel launches on a GPU) while the temporaries stay near 50 MB.
AUGMENT_CHUNK = 4096
# Eager training steps before the step is captured as a CUDA graph: the first
# step creates the momentum buffers, later ones settle cuDNN's workspaces.
GRAPH_WARMUP_STEPS = 3
# Share of the steps over which onecycle warms up to its peak learning rate (PyTorch's default).
ONECYCLE_WARMUP = 0.3


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: config.Train,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule over all `epochs`; early stopping may end it sooner."""
    if cfg.schedule == "onecycle":
        # cycle_momentum off: train.momentum means what it says.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total_steps,
                                                   pct_start=ONECYCLE_WARMUP, cycle_momentum=False)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


class HostSchedule:
    """`make_scheduler`'s schedule computed on Python floats, copied into an optimizer whose lr is a tensor.

    On CUDA the optimizer's learning rate is a device tensor (make_optimizer: a captured CUDA graph reads it);
    a scheduler stepping it directly would hold float32 values (0.05 read back as 0.05000000074505806). So the
    schedule runs on a parameterless twin with the same float lr, and each step fills the tensor from it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: config.Train, total_steps: int) -> None:
        self.optimizer = optimizer
        self.tensor_lr = isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)
        # SGD over one unused CPU tensor: the scheduler reads and writes only its param_groups' floats.
        self.host = torch.optim.SGD([torch.zeros(1)], lr=cfg.lr) if self.tensor_lr else optimizer
        self.scheduler = make_scheduler(self.host, cfg, total_steps)
        self._copy()

    @property
    def lr(self) -> float:
        """The learning rate the next step takes, as the schedule computed it."""
        return float(self.host.param_groups[0]["lr"])

    def step(self) -> None:
        self.scheduler.step()
        self._copy()

    def _copy(self) -> None:
        if self.tensor_lr:
            for group in self.optimizer.param_groups:
                group["lr"].fill_(self.lr)


def peak_epoch(cfg: config.Train) -> int:
    """The epoch in which the learning rate peaks (onecycle warms up to it; the other schedules start there)."""
    return math.ceil(ONECYCLE_WARMUP * cfg.epochs) if cfg.schedule == "onecycle" else 0


def patience_from(history: list[dict[str, float]], cfg: config.Train) -> int:
    """The first epoch whose stale epochs count towards `cfg.patience`; len(history) + 1 while there is none.

    Annealing schedules: the first epoch after the peak that starts at half the peak rate or less
    (epoch 13 of 18 under onecycle). Before it the rate is high, the hold-out accuracy stalls for an epoch
    or two by chance, and a stop there keeps weights from the middle of the schedule: counting from the
    peak instead kept 0.055 points less hold-out accuracy over 19 runs, 0.4 points less in its worst ones
    (bench/results/zen5-2026-12-02/stopping.md). A constant rate never anneals: every epoch counts.
    """
    if cfg.schedule == "constant":
        return 1
    return next((r["epoch"] for r in history if r["epoch"] > peak_epoch(cfg) and r["lr"] <= cfg.lr / 2),
                len(history) + 1)


def cuda_graphed(step: Callable[..., None]) -> Callable[..., None]:
    """`step` replayed as one CUDA graph instead of ~100 kernel launches from Python.

    The first GRAPH_WARMUP_STEPS calls run eagerly on a side stream (as CUDA
    graph capture requires); the next call is captured and replayed, and every
    later call copies its batch (its tensors: images, labels, loss weights) into
    the captured inputs and replays. Every call is a real training step, the same
    kernels on the same data as eager mode.
    """
    static: list[torch.Tensor] = []
    graph = torch.cuda.CUDAGraph()
    calls = 0

    def run(*batch: torch.Tensor) -> None:
        nonlocal calls
        calls += 1
        if not static:
            static.extend(t.clone() for t in batch)
        else:
            for held, t in zip(static, batch, strict=True):
                held.copy_(t)
        if calls > GRAPH_WARMUP_STEPS + 1:
            graph.replay()
        elif calls <= GRAPH_WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                step(*static)
            torch.cuda.current_stream().wait_stream(side)
        else:
            with torch.cuda.graph(graph):
                step(*static)
            graph.replay()
    return run


def prune(last_loss: torch.Tensor, *, share: float,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoBatch's soft pruning for one epoch: (which images train, bool (N,); each one's loss weight, (N,)).

    The images whose last loss is below the mean of the last losses are "well learned"; each of them is left
    out at random with probability `share`, and those kept weigh 1 / (1 - share): every image's expected
    weight is 1, so the epoch's expected gradient is the full epoch's. Images with no loss yet (inf) train.
    """
    seen = torch.isfinite(last_loss)
    well = seen & (last_loss < last_loss[seen].mean())
    dropped = well & (torch.rand(len(last_loss), generator=generator, device=last_loss.device) < share)
    return ~dropped, torch.where(well, 1.0 / (1.0 - share), 1.0)


def check_batch_size(cfg: config.Train, n_train: int) -> None:
    """StageError unless a batch fits in the n_train training images (config checks it against full MNIST)."""
    if cfg.batch_size > n_train:
        raise StageError(f"params.yaml: train.batch_size: must be at most the {n_train} training images")


def train(*, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
          cfg: config.Train, dropout: float, cuda_graph: bool = True,
          on_epoch: Callable[[dict[str, float]], None] = lambda record: None,
          on_progress: Callable[[int, int], None] = lambda done, total: None) -> Result:
    """Train a fresh Net; return the weights of the epoch `cfg.selection` picks and the per-epoch history.

    Stops at `cfg.target_accuracy` (when set), after `cfg.patience` epochs
    (when > 0) with neither a new best validation accuracy nor a new lowest
    validation loss, counted once the rate has annealed to half its peak
    (patience_from), or after `cfg.epochs`. With `cfg.prune.share` > 0, the
    epochs between the first and the last `cfg.prune.full_epochs` leave out
    some of the images already learned (prune). On CUDA the
    training step runs as a CUDA graph unless `cuda_graph` is False.
    on_progress(images done, images in the epoch) is called every few
    thousand images, on_epoch(record) at the end of each epoch.
    """
    check_batch_size(cfg, len(train_x))
    device = train_x.device
    amp_dtype = autocast_dtype(cfg.precision, device)
    seed_everything(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    model = Net(dropout=dropout).to(device)
    if device.type == "cpu":
        model.to_cpu_layout()
    optimizer = make_optimizer(model, cfg, device)
    # Whole batches only: a last batch of one image would break BatchNorm.
    steps_per_epoch = len(train_x) // cfg.batch_size
    schedule = HostSchedule(optimizer, cfg, cfg.epochs * steps_per_epoch)
    aug = cfg.augment
    augmenting = aug.rotate > 0 or aug.translate > 0 or aug.scale > 0
    # Sums stay on the device: one host sync per epoch, not per step.
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    # Pruning: each image's loss when it was last trained on (inf before), and a buffer for a step's losses.
    pruning = cfg.prune.share > 0
    last_loss = torch.full((len(train_x),), math.inf, device=device) if pruning else None
    losses = torch.zeros(cfg.batch_size, device=device) if pruning else None
    ones = torch.ones(len(train_x), device=device) if pruning else None  # the full epochs' loss weights
    step = make_step(model=model, optimizer=optimizer, amp_dtype=amp_dtype,
                     label_smoothing=cfg.label_smoothing, loss_sum=loss_sum, correct=correct, losses=losses)
    if cuda_graph and device.type == "cuda":
        step = cuda_graphed(step)
    chunk = max(1, AUGMENT_CHUNK // cfg.batch_size) * cfg.batch_size

    history: list[dict[str, float]] = []
    states: list[dict[str, torch.Tensor]] = []  # every epoch's weights (40 kB each) until one is selected
    stopped_because = "epochs"
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        model.train()
        lr = schedule.lr
        loss_sum.zero_()
        correct.zero_()
        if pruning and 1 < epoch <= cfg.epochs - cfg.prune.full_epochs:
            keep, weight = prune(last_loss, share=cfg.prune.share, generator=generator)
            pool = keep.nonzero().squeeze(1)
            if len(pool) < cfg.batch_size:  # tiny data: too few left for a batch
                pool = torch.arange(len(train_x), device=device)
            perm = pool[torch.randperm(len(pool), generator=generator, device=device)]
        else:
            weight = ones
            perm = torch.randperm(len(train_x), generator=generator, device=device)
        steps = len(perm) // cfg.batch_size
        seen = steps * cfg.batch_size
        perm = perm[:seen]
        on_progress(0, seen)
        for first in range(0, seen, chunk):
            batches = perm[first:first + chunk]
            xs, ys = train_x[batches], train_y[batches]
            if augmenting:
                xs = data.augment(xs, rotate=aug.rotate, translate=aug.translate, scale=aug.scale,
                                  generator=generator)
            if aug.appearance > 0:
                xs = data.appearance(xs, share=aug.appearance, generator=generator)
            for i in range(0, len(batches), cfg.batch_size):
                if pruning:
                    batch = batches[i:i + cfg.batch_size]
                    step(xs[i:i + cfg.batch_size], ys[i:i + cfg.batch_size], weight[batch])
                    last_loss[batch] = losses
                else:
                    step(xs[i:i + cfg.batch_size], ys[i:i + cfg.batch_size])
                # The schedule follows the epoch's progress: a pruned epoch's fewer steps each advance it by
                # more, so that every epoch ends at the rate the full schedule gives it.
                done = (first + i) // cfg.batch_size + 1
                for _ in range(done * steps_per_epoch // steps - (done - 1) * steps_per_epoch // steps):
                    schedule.step()
            on_progress(first + len(batches), seen)
        val_accuracy, val_loss = score(model, val_x, val_y)
        record = {"epoch": epoch, "train_loss": loss_sum.item() / steps,
                  "train_accuracy": correct.item() / seen, "val_loss": val_loss, "val_accuracy": val_accuracy,
                  "lr": lr, "epoch_seconds": time.perf_counter() - start}
        history.append(record)
        # Contiguous (NCHW) copies: callers and the checkpoint never see the CPU training layout.
        states.append({k: v.detach().clone(memory_format=torch.contiguous_format)
                       for k, v in model.state_dict().items()})
        on_epoch(record)
        reason = stop_reason(history, target_accuracy=cfg.target_accuracy, patience=cfg.patience,
                             counting_from=patience_from(history, cfg))
        if reason:
            stopped_because = reason
            break
    chosen = select_epoch(history, cfg.selection, len(val_x))
    return Result(saved_state=states[chosen], saved_epoch=chosen + 1, saved_accuracy=history[chosen]["val_accuracy"],
                  saved_loss=history[chosen]["val_loss"], epochs_run=len(history), stopped_because=stopped_because,
                  history=history)


def stop_reason(history: list[dict[str, float]], *, target_accuracy: float | None, patience: int,
                counting_from: int) -> str | None:
    """Why training stops after the last epoch of `history`, or None to go on.

    "target_accuracy": that epoch's validation accuracy reached target_accuracy (None: off).
    "patience": the last `patience` epochs (0: off), counting only epochs numbered counting_from
    or later, brought neither a new best validation accuracy nor a new lowest validation loss.
    """
    best_accuracy, best_loss, since_best = -1.0, math.inf, 0
    for record in history:
        # The loss keeps falling while the rate anneals even when the accuracy stalls on a few hard images.
        if record["val_accuracy"] > best_accuracy or record["val_loss"] < best_loss:
            since_best = 0
        elif record["epoch"] >= counting_from:
            since_best += 1
        best_accuracy, best_loss = max(best_accuracy, record["val_accuracy"]), min(best_loss, record["val_loss"])
    if target_accuracy is not None and history[-1]["val_accuracy"] >= target_accuracy:
        return "target_accuracy"
    if patience and since_best >= patience:
        return "patience"
    return None


def select_epoch(history: list[dict[str, float]], rule: str, n_val: int) -> int:
    """Index of the epoch whose weights are kept.

    best: highest validation accuracy (ties: lower loss). last_within_se: the
    latest epoch within one standard error of that accuracy -- on n_val
    images a difference of one or two images is noise (one standard error is
    0.11 % at 99.4 % on 5,000 images), and a later epoch of an annealed
    schedule is the better bet.
    """
    best = max(range(len(history)), key=lambda i: (history[i]["val_accuracy"], -history[i]["val_loss"]))
    if rule == "best":
        return best
    top = history[best]["val_accuracy"]
    standard_error = math.sqrt(top * (1.0 - top) / n_val)
    return max(i for i, r in enumerate(history) if r["val_accuracy"] >= top - standard_error)


def model_summary() -> str:
    """torchsummary's layer table of Net, as printed text."""
    from torchsummary import summary

    buffer = io.StringIO()
    # A throwaway Net on the CPU: summary() runs a forward pass in train mode.
    with contextlib.redirect_stdout(buffer):
        summary(Net(), (1, 28, 28), device="cpu")
    return buffer.getvalue()


def epoch_line(record: dict[str, float], epochs: int) -> str:
    """The one line an epoch prints (logs and `dvc queue logs` get only these)."""
    r = record
    return (f"epoch {r['epoch']:>2}/{epochs}  train loss {r['train_loss']:.4f} acc {r['train_accuracy']:.2%}"
            f"  val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.2%}  lr {r['lr']:.4g}"
            f"  {r['epoch_seconds']:.1f} s")


class ProgressBar:
    """Within an epoch, on a terminal: a bar of images done, images/s and the time left (tqdm, on stderr)."""

    def __init__(self, epochs: int) -> None:
        from tqdm import tqdm

        self.tqdm, self.epochs, self.bar, self.epoch = tqdm, epochs, None, 0

    def update(self, done: int, total: int) -> None:
        if done == 0:
            self.close()
            self.epoch += 1
            self.bar = self.tqdm(total=total, unit="img", unit_scale=True, leave=False, dynamic_ncols=True,
                                 desc=f"epoch {self.epoch}/{self.epochs}", file=sys.stderr)
        elif self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def log_epoch(live: Any, record: dict[str, float]) -> None:
    """One epoch into DVCLive: a row in each history TSV, and the summary file rewritten as that epoch.

    `dvc exp show` reads a running queued experiment's workspace, so it shows this epoch while training goes on.
    """
    live.step = int(record["epoch"])
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds"):
        live.log_metric(key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key, record[key])
    live.next_step()


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.train",
                      reads=["params.yaml (data.holdout_size, data.split_seed, model, train)",
                             f"{paths.RAW_DIR}/ (the training images)"],
                      writes=[f"{paths.MODEL} (at the end)", f"{paths.TRAIN_REPORT}/ (the history, as each epoch "
                              "ends; then the summary metrics.json, run.json and model_summary.txt)"])


def main(args: argparse.Namespace) -> None:
    from dvclive import Live

    p = config.load()
    device = resolve_device(p.train.device)
    summary_text = model_summary()
    print(summary_text)

    train_x, train_y, val_x, val_y = data.load_holdout(paths.RAW_DIR, p.data.holdout_size, p.data.split_seed, device)
    print(f"validation: {len(val_x)} images held out of the training set (seed {p.data.split_seed}); "
          f"training on {len(train_x)}")
    amp = autocast_dtype(p.train.precision, device)
    where = device_info(device)
    kernels = cpu_kernels(device)
    print(f"device: {where['device']} ({where['device_name']}), {'bfloat16 autocast' if amp else 'float32'}"
          f"{f', {kernels} kernels' if device.type == 'cpu' else ''}; {p.train.optimizer} lr {p.train.lr} "
          f"({p.train.schedule}), batch {p.train.batch_size}, up to {p.train.epochs} epochs", flush=True)

    # The history grows in reports/train as each epoch ends (an interrupted run may leave part of it: DVC
    # records no failed stage, and the next run starts it afresh); the model is written once, at the end.
    live = Live(dir=str(paths.TRAIN_REPORT), save_dvc_exp=False, dvcyaml=None, report=None)
    # A bar only on a terminal: logs (and `dvc queue logs`) keep one line an epoch.
    bar = ProgressBar(p.train.epochs) if sys.stderr.isatty() else None

    def on_epoch(record: dict[str, float]) -> None:
        log_epoch(live, record)  # first: once the epoch's line is printed, its files hold it
        if bar is not None:
            bar.close()
        print(epoch_line(record, p.train.epochs), flush=True)

    start = time.perf_counter()
    try:
        result = train(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, cfg=p.train,
                       dropout=p.model.dropout, on_epoch=on_epoch,
                       on_progress=bar.update if bar is not None else lambda done, total: None)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    # What a person compares across runs, in `dvc metrics show` beside evaluate's headline (140 columns in all);
    # the per-epoch values stay in the history.
    summary = {"epochs_run": result.epochs_run, "train_seconds": round(seconds, 2), "device": where["device"]}
    # The rest of the run: the epoch kept, why it stopped, and what it computed with (torch's version beside the
    # arithmetic and the kernels: `dvc diff` shows when any of them changed).
    run = {"stopped_because": result.stopped_because, "saved_epoch": result.saved_epoch,
           "saved_val_accuracy": result.saved_accuracy, "device_name": where["device_name"],
           "precision": "bf16" if amp else "fp32", "kernels": kernels, "torch": torch.__version__}
    print(f"stopped: {result.stopped_because} after {result.epochs_run} epochs, {seconds:.1f} s; saved epoch "
          f"{result.saved_epoch} ({p.train.selection}), validation accuracy {result.saved_accuracy:.2%}")
    write_outputs(result=result, summary=summary, run=run, summary_text=summary_text, all_params=p.model_dump())


def write_outputs(*, result: Result, summary: dict[str, Any], run: dict[str, Any], summary_text: str,
                  all_params: dict[str, Any]) -> None:
    """models/model.pt, then the final summary, the run's details and the model table in reports/train, each
    atomically."""
    checkpoint = {"state_dict": {k: v.cpu() for k, v in result.saved_state.items()},
                  "epoch": result.saved_epoch, "val_accuracy": result.saved_accuracy,
                  "val_loss": result.saved_loss, "params": all_params}
    # Saved through memory: a file's archive takes its (random) temp name inside,
    # so identical weights would give a different model.pt hash on each run.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic.write_bytes(paths.MODEL, buffer.getvalue())
    # Replaces the last epoch's DVCLive summary: `dvc metrics show` lists these, the history has the rest.
    atomic.write_json(paths.TRAIN_RUN, run)
    atomic.write_json(paths.TRAIN_METRICS, summary)
    atomic.write_text(paths.TRAIN_REPORT / "model_summary.txt", summary_text)


if __name__ == "__main__":
    cli.run(main, parser())
