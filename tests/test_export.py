"""The ONNX export: onnxruntime reads it and answers as PyTorch does, for any batch size; a wrong export is
refused before anything is written."""

from __future__ import annotations

import pytest
import torch

from stages import export
from stages.errors import StageError
from stages.infer import logits
from stages.model import Net


@pytest.fixture(scope="module")
def model_and_export() -> tuple[Net, bytes]:
    torch.manual_seed(0)
    model = Net().eval()
    return model, export.export(model)


@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_answers_as_pytorch_for_any_batch(model_and_export, batch: int) -> None:
    model, onnx_bytes = model_and_export
    images = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
    assert (export.onnx_logits(onnx_bytes, images) - logits(model, images)).abs().max() < export.TOLERANCE
    assert export.check(onnx_bytes, model, images) < export.TOLERANCE


def test_the_file_says_what_it_expects_and_is_the_same_bytes_each_time(model_and_export) -> None:
    import onnx

    model, onnx_bytes = model_and_export
    proto = onnx.load_from_string(onnx_bytes)
    assert {p.key: p.value for p in proto.metadata_props} == {"mean": "0.1307", "std": "0.3081",
                                                              "ink": "bright on black"}
    assert "(x - 0.1307) / 0.3081" in proto.doc_string
    assert export.export(model) == onnx_bytes  # DVC's hash of the output follows the weights alone
    # and not where the checkout lies: no node keeps the exporter's stack trace with its absolute paths
    assert not any(node.metadata_props for node in proto.graph.node) and b"stages/model.py" not in onnx_bytes


def test_an_export_that_answers_otherwise_is_refused(model_and_export) -> None:
    model, onnx_bytes = model_and_export
    other = Net().eval()
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
        other.conv6.bias += 0.01  # logits 0.01 apart
    with pytest.raises(StageError, match="differ from PyTorch's by up to 1.00e-02"):
        export.check(onnx_bytes, other, torch.randn(4, 1, 28, 28))
