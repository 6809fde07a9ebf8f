import torch

from stages.model import Net, ToChannelsLast
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


def test_dropout_rate_reaches_every_block_in_training_only() -> None:
    net = Net(dropout=0.3)
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.3] * 5
    x = torch.randn(8, 1, 28, 28)
    assert not torch.equal(net(x), net(x))  # training: a new dropout mask each pass
    net.eval()
    assert torch.equal(net(x), net(x))  # evaluation: no dropout
    without = Net(dropout=0.0)
    assert torch.equal(without(x), without(x))  # and with rate 0 nothing is dropped in training either


def test_cpu_layout_computes_the_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    nchw = Net()
    nhwc = Net()
    nhwc.load_state_dict(nchw.state_dict())
    nhwc.to_cpu_layout()
    assert isinstance(nhwc.conv1[-1], ToChannelsLast)  # Conv1's block stays NCHW
    assert nhwc.conv2[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nhwc.conv2[0].weight.is_contiguous()
    assert list(nhwc.state_dict()) == list(Net().state_dict())
    x = torch.randn(8, 1, 28, 28)
    out_a, out_b = nchw(x), nhwc(x)
    assert torch.allclose(out_a, out_b, atol=1e-5)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    for (name, a), b in zip(nchw.named_parameters(), nhwc.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5), name


def test_layout_boundary_changes_no_bit_and_no_checkpoint_key() -> None:
    """The conversion after Conv1's block only moves memory: bit-identical weights, the same state_dict keys,
    and Conv1's block gets its gradient back in its own (NCHW) layout."""
    torch.manual_seed(0)
    without = Net()
    for block in (without.conv2, without.conv3, without.conv4, without.conv5, without.conv6):
        block.to(memory_format=torch.channels_last)
    with_boundary = Net()
    with_boundary.load_state_dict(without.state_dict())
    with_boundary.to_cpu_layout()
    assert list(with_boundary.state_dict()) == list(Net().state_dict())
    seen = []
    # The gradient the boundary hands back to Conv1's block (its ReLU's backward reads it with NCHW outputs).
    with_boundary.conv1[-1].register_full_backward_hook(lambda m, grad_in, grad_out: seen.append(grad_in[0]))
    x, y = torch.randn(3, 16, 1, 28, 28), torch.randint(0, 10, (3, 16))
    for net in (without, with_boundary):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for xb, yb in zip(x, y, strict=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            optimizer.step()
    for key, value in without.state_dict().items():
        assert torch.equal(value, with_boundary.state_dict()[key]), key
    assert seen and all(g.is_contiguous() for g in seen)
