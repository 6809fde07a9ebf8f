import pytest
import torch

from stages.model import Net, max_pool2x2
from stages.train import model_summary


def test_output_is_ten_scores_per_image() -> None:
    out = Net()(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)


def test_parameter_counts_match_the_corrected_seed_table() -> None:
    net = Net()
    convs = sum(p.numel() for name, p in net.named_parameters() if ".0." in name or name.startswith("conv6"))
    per_layer = [sum(p.numel() for p in getattr(net, f"conv{i}").parameters()) for i in range(1, 7)]
    # Seed table rows (conv weights + biases): 80, 1168, 2320, 2320, 2320, 1450 = 9,658, not the stated 9,720.
    assert convs == 9658
    # Plus BatchNorm's scale and shift after Conv1-Conv5: 2 * (8 + 16 + 16 + 16 + 16) = 144.
    assert per_layer == [80 + 16, 1168 + 32, 2320 + 32, 2320 + 32, 2320 + 32, 1450]
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 9802


def test_torchsummary_reports_the_same_total() -> None:
    text = model_summary()
    assert "Total params: 9,802" in text
    assert "Trainable params: 9,802" in text
    assert "[-1, 10, 3, 3]" in text  # Conv6's output before global average pooling


def test_dropout_rate_reaches_every_block_and_leaves_eval_deterministic() -> None:
    net = Net(dropout=0.3)
    rates = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.3] * 5
    net.eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_max_pool_matches_torch_in_values_and_gradients(dtype: torch.dtype) -> None:
    # After ReLU many windows tie at 0; bf16 also ties positive values. The gradient must go where torch sends it.
    x = torch.randn(8, 16, 28, 28).relu().round(decimals=1).to(dtype)
    grad = torch.randn(8, 16, 14, 14).to(dtype)
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = max_pool2x2(mine)
    expected = torch.nn.functional.max_pool2d(theirs, 2)
    out.backward(grad)
    expected.backward(grad)
    assert out.shape == (8, 16, 14, 14) and out.is_contiguous()
    assert torch.equal(out, expected)
    assert torch.equal(mine.grad, theirs.grad)
