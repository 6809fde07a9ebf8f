
import math

import pytest
import torch
import torch.nn.functional as F

from stages import config, data
from stages import train as train_module
from stages.device import resolve_device
from stages.errors import StageError
from stages.infer import score, score_weights
from stages.model import Net
from stages.step import make_step
from stages.train import (
    HostSchedule,
    Result,
    make_scheduler,
    patience_from,
    peak_epoch,
    select_epoch,
    stop_reason,
    train,
)
from tests.helpers import default_train, fit


def test_stops_at_target_accuracy_and_keeps_that_epoch(tiny) -> None:
    result = fit(tiny, epochs=12, target_accuracy=0.9)
    assert result.stopped_because == "target_accuracy"
    assert result.epochs_run < 12
    assert result.history[-1]["val_accuracy"] >= 0.9
    assert result.saved_epoch == result.epochs_run


def stale_epochs(history: list[dict[str, float]], count_from: int) -> list[int]:
    """Per epoch, how many epochs in a row (from count_from on) brought neither a better accuracy nor a lower loss."""
    stale, run = [], 0
    for i, r in enumerate(history):
        earlier = history[:i]
        improved = not earlier or (r["val_accuracy"] > max(e["val_accuracy"] for e in earlier)
                                   or r["val_loss"] < min(e["val_loss"] for e in earlier))
        run = 0 if improved else run + (r["epoch"] >= count_from)
        stale.append(run)
    return stale


def test_patience_stops_after_epochs_with_neither_a_better_accuracy_nor_a_lower_loss(tiny) -> None:
    # A constant rate without smoothing: the hold-out loss turns up once the tiny set is overfit.
    result = fit(tiny, epochs=12, patience=2, schedule="constant", selection="best", label_smoothing=0.0)
    assert result.stopped_because == "patience"
    stale = stale_epochs(result.history, count_from=1)
    assert stale[-1] == 2 and max(stale[:-1]) < 2  # it stopped at the first epoch the rule allows, not later
    assert result.saved_epoch < result.epochs_run


def epoch_start_rates(cfg: config.Train, steps_per_epoch: int = 7) -> list[dict[str, float]]:
    """A history holding only each epoch's starting learning rate under cfg's schedule (torch's own scheduler)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        history.append({"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]})
        for _ in range(steps_per_epoch):
            optimizer.step()
            scheduler.step()
    return history


def test_patience_counts_from_the_first_epoch_at_half_the_peak_rate() -> None:
    onecycle = default_train().model_copy(update={"epochs": 18, "schedule": "onecycle"})
    assert peak_epoch(onecycle) == 6  # onecycle peaks 30 % into the steps
    # Epoch 13 of 18 starts 2/3 into the steps, at 0.46 of the peak rate; epoch 12 at 0.59 of it.
    assert patience_from(epoch_start_rates(onecycle), onecycle) == 13
    ten = onecycle.model_copy(update={"epochs": 10})
    assert patience_from(epoch_start_rates(ten), ten) == 8
    assert patience_from(epoch_start_rates(ten)[:7], ten) == 8  # not reached yet: no epoch counts so far
    cosine = onecycle.model_copy(update={"epochs": 9, "schedule": "cosine"})
    assert patience_from(epoch_start_rates(cosine), cosine) == 6  # starts 5/9 into the steps
    constant = onecycle.model_copy(update={"schedule": "constant"})
    assert patience_from(epoch_start_rates(constant), constant) == 1  # never anneals


def test_patience_does_not_stop_a_run_before_the_rate_is_down_to_half_its_peak() -> None:
    # With a patience of 1 any counted stale epoch stops training, but none counts before epoch 8 of 10.
    cfg = default_train().model_copy(update={"epochs": 10, "schedule": "onecycle", "patience": 1})
    accuracy = [0.90, 0.92, 0.94, 0.95, 0.94, 0.96, 0.97, 0.98, 0.97, 0.99]
    loss = [0.50, 0.40, 0.30, 0.25, 0.26, 0.20, 0.15, 0.10, 0.12, 0.05]  # epochs 5 and 9 are stale
    history = [{**r, "val_accuracy": a, "val_loss": v}
               for r, a, v in zip(epoch_start_rates(cfg), accuracy, loss, strict=True)]

    def stops_after(epochs: int) -> str | None:
        seen = history[:epochs]
        return stop_reason(seen, target_accuracy=None, patience=1, counting_from=patience_from(seen, cfg))

    # Epoch 5 comes after the peak (epoch 3): counting from the peak, as the train stage did until
    # bench/results/zen5-2026-12-02/stopping.md, would have stopped there, in the middle of the schedule.
    assert [stops_after(n) for n in range(1, 9)] == [None] * 8
    assert stops_after(9) == "patience"


def test_a_run_stopped_early_is_the_full_runs_first_epochs(tiny) -> None:
    # Stopping changes nothing before the stop (onecycle's rates span all epochs, the data order is the seed's),
    # so a stopping rule can be judged on one full run's history. Without pruning: this tiny run then stops at
    # patience 1 (whether one stops is chance); which epochs a pruned run prunes follows from train.epochs alone.
    recipe = {"epochs": 12, "schedule": "onecycle", "lr": 0.1, "label_smoothing": 0.0, "selection": "best",
              "prune": config.Prune(share=0.0)}
    stopped, full = fit(tiny, patience=1, **recipe), fit(tiny, patience=0, **recipe)
    k = stopped.epochs_run
    assert len(full.history) == 12 and k < 12
    def timeless(run: Result) -> list[dict[str, float]]:
        return [{key: v for key, v in r.items() if key != "epoch_seconds"} for r in run.history]
    assert timeless(stopped) == timeless(full)[:k]
    # The rule, applied to the full run's first epochs, stops where the run itself stopped.
    cfg = default_train().model_copy(update=recipe)
    stops = [i for i in range(1, 13) if stop_reason(full.history[:i], target_accuracy=None, patience=1,
                                                     counting_from=patience_from(full.history[:i], cfg))]
    assert stops[0] == k


def test_saved_weights_are_the_selected_epochs(tiny) -> None:
    result = fit(tiny, epochs=4, schedule="constant", lr=0.3, selection="best")
    model = Net()
    model.load_state_dict(result.saved_state)
    accuracy, loss = score(model, tiny["val_x"], tiny["val_y"])
    assert accuracy == pytest.approx(result.saved_accuracy)
    assert loss == pytest.approx(result.saved_loss, rel=1e-5)
    assert len(result.history) == 4
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds"} == set(
        result.history[0])


def test_selection_prefers_the_latest_epoch_within_one_standard_error() -> None:
    def history(*accuracies: float) -> list[dict[str, float]]:
        return [{"val_accuracy": a, "val_loss": 1.0 - a} for a in accuracies]
    # On 5,000 images one standard error at 99.40 % is 0.109 %: 99.34 % is within it, 99.20 % is not.
    noisy = history(0.9900, 0.9940, 0.9938, 0.9934)
    assert select_epoch(noisy, "best", 5000) == 1
    assert select_epoch(noisy, "last_within_se", 5000) == 3
    assert select_epoch(history(0.9900, 0.9940, 0.9920), "last_within_se", 5000) == 1
    # A bigger validation set means a smaller standard error (0.024 %): only the 99.38 % epoch stays within.
    assert select_epoch(noisy, "last_within_se", 100_000) == 2


def test_same_seed_same_history_other_seed_differs(tiny) -> None:
    def curve(seed: int) -> list[tuple[float, float]]:
        return [(r["train_loss"], r["val_loss"]) for r in fit(tiny, epochs=2, seed=seed).history]
    assert curve(3) == curve(3)
    assert curve(3) != curve(4)


def test_holdout_split_is_seeded_disjoint_and_complete() -> None:
    fit_idx, held = data.holdout_split(100, 20, seed=0)
    assert len(held) == 20 and len(fit_idx) == 80
    assert sorted(torch.cat([fit_idx, held]).tolist()) == list(range(100))
    assert torch.equal(held, data.holdout_split(100, 20, seed=0)[1])
    assert not torch.equal(held, data.holdout_split(100, 20, seed=1)[1])
    with pytest.raises(StageError, match="data.holdout_size"):
        data.holdout_split(100, 100, seed=0)


def test_smaller_holdouts_of_one_split_seed_are_nested() -> None:
    # bench.holdout compares hold-out sizes on the smallest one: no variant may have trained on it.
    small, large = data.holdout_split(100, 20, seed=0)[1], data.holdout_split(100, 50, seed=0)[1]
    assert set(small.tolist()) <= set(large.tolist())


def test_augmentation_moves_the_digit_and_fills_from_outside_with_background() -> None:
    # A blank frame with a bright 7x7 blob in the middle: after a strong transform the outer ring of
    # pixels was pulled in from outside the frame, and must be MNIST's background, not 0 or a blend.
    images = torch.zeros(16, 28, 28, dtype=torch.uint8)
    images[:, 11:18, 11:18] = 255
    x = data.normalize(images)
    background = x[0, 0, 0, 0]
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(data.augment(x, rotate=0, translate=0, scale=0, generator=g), x, atol=1e-5)
    moved = data.augment(x, rotate=15, translate=0.15, scale=0.1, generator=g)
    assert moved.shape == x.shape
    ring = torch.cat([moved[..., 0, :], moved[..., -1, :], moved[..., :, 0], moved[..., :, -1]], dim=-1)
    assert torch.allclose(ring, background.expand_as(ring), atol=1e-5)
    # Each image moved by its own draw: the blob's centre of mass differs between images and from the input.
    ink = moved - background
    rows = (ink.sum(-1) * torch.arange(28)).sum(-1) / ink.sum((-1, -2))
    assert rows.flatten().unique().numel() == 16 and not torch.allclose(rows, torch.tensor(14.0))


def test_the_mps_form_of_border_padding_computes_what_border_padding_computes() -> None:
    # data.border_by_clamping (what augment runs on MPS) against grid_sample's border padding (CPU and CUDA), on
    # the CPU, with a shift far enough that a third of each frame comes from outside.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 1, 28, 28, generator=g)
    n = len(x)
    angle, scale = ((torch.rand(n, generator=g) * 2 - 1) * h for h in (math.radians(20), 0.1))
    cos, sin = torch.cos(angle) / (1 + scale), torch.sin(angle) / (1 + scale)
    tx, ty = ((torch.rand(n, generator=g) * 2 - 1) * 0.6 for _ in range(2))
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    border = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert (grid.abs() > 1).any(), "the case must sample outside the frame"
    # Float rounding of the clamped coordinates only (values of N(0, 1)); zero padding alone would differ by ~1.
    assert torch.allclose(data.border_by_clamping(x, grid), border, atol=1e-4, rtol=0)


@pytest.mark.parametrize("side", range(7, 15))
def test_low_resolution_averages_as_adaptive_pooling_does(side: int) -> None:
    # The pooling MPS runs (two matrix products) against F.adaptive_avg_pool2d, for every side training draws.
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(side))
    pool = data.pooling_matrix(28, side, x.device)
    assert torch.allclose(pool @ x @ pool.T, F.adaptive_avg_pool2d(x, side), atol=1e-6, rtol=0)


def _blob(n: int) -> torch.Tensor:
    """n normalized frames, each a 3 px wide bright bar (a stroke) on MNIST's black background."""
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 6:22, 13:16] = 255
    return data.normalize(images)


def test_appearance_changes_the_given_share_of_images_and_leaves_the_rest() -> None:
    x = _blob(400)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(data.appearance(x, share=0.0, generator=g), x)
    out = data.appearance(x, share=0.3, generator=g)
    changed = (out - x).abs().flatten(1).amax(1) > 1e-4
    assert out.shape == x.shape and 0.2 < changed.float().mean() < 0.4
    # Drawn from the generator alone: the same seed changes the same images the same way.
    again = data.appearance(x, share=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, data.appearance(x, share=0.3, generator=torch.Generator().manual_seed(0)))
    # Every change stays a picture MNIST's normalization can express: pixels in [0, 1].
    pixels = data.appearance(x, share=1.0, generator=g) * data.STD + data.MEAN
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


@pytest.mark.parametrize("change, check", [
    # pen width: the bar's ink area grows (dilation) or shrinks (erosion), never stays
    (data._stroke, lambda p, q: ((q > 0.5).sum((1, 2, 3)) != (p > 0.5).sum((1, 2, 3))).all()),
    # blur keeps the ink's total (inside the frame) and lowers its peak
    (data._blur, lambda p, q: torch.allclose(q.sum((1, 2, 3)), p.sum((1, 2, 3)), rtol=1e-4) and (q.amax() < 1)),
    # low resolution loses the bar's sharp edge: some pixel is neither ink nor paper
    (data._low_resolution, lambda p, q: ((q > 0.05) & (q < 0.95)).any((1, 2, 3)).all()),
    # noise: the background is no longer uniform
    (data._noise, lambda p, q: (q[:, :, :4].std((1, 2, 3)) > 0.01).all()),
    # grey paper: the background is raised to 0.1-0.6 and the ink stays at least 0.3 above it
    (data._level, lambda p, q: ((q[:, 0, 0, 0] >= 0.1) & (q[:, 0, 0, 0] <= 0.6)
                                & (q[:, 0, 14, 14] - q[:, 0, 0, 0] >= 0.3 - 1e-6)).all()),
])
def test_each_change_of_look_does_what_its_name_says(change, check) -> None:
    pixels = _blob(32) * data.STD + data.MEAN
    out = change(pixels, torch.Generator().manual_seed(1))
    assert out.shape == pixels.shape and bool(check(pixels, out))


def test_explicit_accelerator_that_is_missing_is_an_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(StageError, match="'cuda' is not available on this machine"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_trains_exactly_like_eager_steps(tiny) -> None:
    on_gpu = {k: v.cuda() for k, v in tiny.items()}
    cfg = default_train().model_copy(update={"batch_size": 32, "lr": 0.05, "epochs": 2, "precision": "fp32"})
    graphed = train(**on_gpu, cfg=cfg, dropout=0.0, cuda_graph=True)
    eager = train(**on_gpu, cfg=cfg, dropout=0.0, cuda_graph=False)
    assert [r["val_accuracy"] for r in graphed.history] == [r["val_accuracy"] for r in eager.history]
    assert all(torch.equal(graphed.saved_state[k], eager.saved_state[k]) for k in eager.saved_state)


def test_train_stage_writes_contiguous_weights_that_score_like_the_trained_model(project) -> None:
    from stages import train as train_stage

    train_stage.main(train_stage.parser().parse_args([]))
    checkpoint = torch.load(project / "models" / "model.pt", weights_only=True)
    # CPU training keeps Conv2-Conv6 in channels-last; the file must not depend on that.
    assert all(t.is_contiguous() for t in checkpoint["state_dict"].values())
    p = config.load(project / "params.yaml").data
    _, _, val_x, val_y = data.load_holdout(project / "data" / "raw", p.holdout_size, p.split_seed, torch.device("cpu"))
    assert score_weights(checkpoint["state_dict"], val_x, val_y)[0] == pytest.approx(checkpoint["val_accuracy"])


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_a_tensor_learning_rate_follows_the_schedule_and_the_history_gets_its_floats(schedule: str) -> None:
    # CUDA's optimizer holds lr as a tensor (make_optimizer); here a CPU tensor stands in for it.
    cfg = default_train().model_copy(update={"schedule": schedule, "lr": 0.05})
    floats = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    reference = make_scheduler(floats, cfg, total_steps=50)
    tensor_lr = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=torch.tensor(cfg.lr))
    followed = HostSchedule(tensor_lr, cfg, total_steps=50)
    for _ in range(50):
        expected = floats.param_groups[0]["lr"]
        assert type(followed.lr) is float and followed.lr == expected  # 0.05, not 0.05000000074505806
        assert tensor_lr.param_groups[0]["lr"].item() == pytest.approx(expected, rel=1e-6)
        reference.step()
        followed.step()


def test_pruning_leaves_out_only_learned_images_and_keeps_each_ones_expected_weight() -> None:
    last_loss = torch.tensor([0.1, 0.2, 0.3, 5.0, 6.0, math.inf] * 2000)  # the mean of the finite ones: 2.32
    share = 0.6
    keep, weight = train_module.prune(last_loss, share=share, generator=torch.Generator().manual_seed(0))
    well = last_loss < 2.32
    assert keep[~well].all()  # hard images, and those with no loss yet, always train, unscaled
    assert torch.equal(weight[~well], torch.ones(int((~well).sum())))
    dropped = 1 - keep[well].float().mean()
    assert abs(float(dropped) - share) < 0.02  # about `share` of the learned ones are left out ...
    assert torch.allclose(weight[well], torch.tensor(1 / (1 - share)))  # ... and the kept ones weigh 1 / (1 - share)
    # so every image's expected weight is (1 - share) x 1 / (1 - share) = 1: the full epoch's expected gradient.


def test_a_weighted_step_follows_the_weighted_loss_and_reports_each_images_own_loss() -> None:
    # The step under pruning: its gradient is that of the weighted mean loss (so a kept image weighing
    # 1 / (1 - share) stands in for the dropped ones), while `losses` and the history get the unweighted losses.
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    weight = torch.tensor([1.0, 2.5, 2.5, 1.0, 1.0, 2.5, 1.0, 2.5])
    model = Net(dropout=0.0).eval()  # eval: BatchNorm uses its running statistics, the same in both passes
    start = {k: v.clone() for k, v in model.state_dict().items()}
    each = F.cross_entropy(model(x), y, label_smoothing=0.1, reduction="none")
    expected = torch.autograd.grad((each * weight).mean(), list(model.parameters()))
    loss_sum, correct, losses = torch.zeros(()), torch.zeros((), dtype=torch.long), torch.zeros(8)
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)  # plain SGD, lr 1: each parameter moves by -its gradient
    step = make_step(model=model, optimizer=sgd, amp_dtype=None, label_smoothing=0.1, loss_sum=loss_sum,
                     correct=correct, losses=losses)
    step(x, y, weight)
    for (name, _), grad in zip(model.named_parameters(), expected, strict=True):
        assert torch.allclose(start[name] - model.state_dict()[name], grad, atol=1e-6)
    assert torch.allclose(losses, each.detach())
    assert loss_sum.item() == pytest.approx(each.mean().item(), rel=1e-6)  # not the weighted mean


def test_a_pruned_run_trains_fewer_images_but_every_one_at_first_and_last_and_follows_the_schedule(tiny) -> None:
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        if done == 0:
            seen.append(total)

    recipe = {"epochs": 6, "patience": 0}
    full = fit(tiny, **recipe)
    pruned_cfg = default_train().model_copy(update={
        "batch_size": 32, "lr": 0.05, "precision": "fp32", **recipe,
        "prune": config.Prune(share=0.5, full_epochs=2)})
    pruned = train(**tiny, cfg=pruned_cfg, dropout=0.0, on_progress=progress)
    everything = len(tiny["train_x"]) // 32 * 32
    assert seen[0] == everything and seen[-2:] == [everything, everything]  # the first and the last two epochs
    assert all(n < everything for n in seen[1:4])  # epochs 2-4 leave some learned images out
    # Each epoch starts at the rate the full schedule gives it, however many steps the pruned epochs took.
    assert [r["lr"] for r in pruned.history] == pytest.approx([r["lr"] for r in full.history], rel=1e-9)
    assert pruned.history[-1]["val_accuracy"] > 0.5
    # The train loss is the images' own: not inflated by the weights that keep the gradient unbiased.
    kept = [r["train_loss"] for r in pruned.history]
    assert kept[1] < kept[0] and max(kept[1:4]) < 1.1 * max(r["train_loss"] for r in full.history[1:4])
