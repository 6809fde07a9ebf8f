"""Ghost batches: what a step computes, and that running them in threads changes no bit of it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from stages import train as train_stage
from stages.ghost import GhostBatches
from stages.model import Net
from tests.helpers import fit


def test_a_step_is_one_pass_per_ghost_batch_with_the_gradients_averaged() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    reference = Net()
    model = copy.deepcopy(reference)
    # By hand: one net, BatchNorm statistics of each half on its own, the batch's loss the mean of the halves'.
    loss = sum(F.cross_entropy(reference(xi), yi) for xi, yi in zip(x.chunk(2), y.chunk(2), strict=True)) / 2
    loss.backward()
    torch.optim.SGD(reference.parameters(), lr=0.5).step()

    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    with GhostBatches(model, 2, threads=2) as ghosts:
        step = train_stage.make_step(ghosts=ghosts, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                                     amp_dtype=None, label_smoothing=0.0, loss_sum=loss_sum, correct=correct)
        step(x, y)
        replica = ghosts.models[1]
        assert replica is not model
        # One set of weights: the step moved the replica's too.
        assert all(a.data_ptr() == b.data_ptr() for a, b in zip(model.parameters(), replica.parameters(), strict=True))
        own = replica.conv1[1].running_mean.clone()
        assert not torch.equal(own, model.conv1[1].running_mean)  # each replica saw its own half
        expected = (own + model.conv1[1].running_mean) / 2
        ghosts.average_batchnorm_statistics()
    for (name, a), b in zip(reference.named_parameters(), model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert loss_sum.item() == pytest.approx(loss.item(), rel=1e-6)
    assert torch.equal(model.conv1[1].running_mean, expected)
    assert torch.equal(replica.conv1[1].running_mean, expected)


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs two CPU threads")
def test_ghost_batches_in_threads_train_exactly_as_in_turn(tiny, monkeypatch) -> None:
    threaded = fit(tiny, epochs=2, ghost_batch=16)
    # In turn, each pass with the one intra-op thread each thread had: the same bits.
    monkeypatch.setattr(train_stage, "ghost_threads", lambda k, device, dropout: 1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        in_turn = fit(tiny, epochs=2, ghost_batch=16)
    finally:
        torch.set_num_threads(before)
    assert threaded.history and [r["val_loss"] for r in threaded.history] == [r["val_loss"] for r in in_turn.history]
    assert all(torch.equal(v, in_turn.saved_state[k]) for k, v in threaded.saved_state.items())
    # and ghost batches are a different function from whole-batch BatchNorm
    assert fit(tiny, epochs=2).history[-1]["val_loss"] != threaded.history[-1]["val_loss"]


def test_threads_only_where_they_cannot_change_the_result() -> None:
    cpu = torch.device("cpu")
    assert train_stage.ghost_threads(1, cpu, 0.0) == 1
    assert train_stage.ghost_threads(2, cpu, 0.0) == (2 if torch.get_num_threads() >= 2 else 1)
    assert train_stage.ghost_threads(2, cpu, 0.1) == 1  # dropout draws from one global random stream
    assert train_stage.ghost_threads(2, torch.device("cuda"), 0.0) == 1
