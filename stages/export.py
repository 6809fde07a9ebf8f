"""Stage `export`: the trained model as ONNX, for code that runs it without PyTorch or this repository.

models/model.onnx (the artifact `mnist-cnn-onnx`) takes `image`, float32 (N, 1, 28, 28) with N free, and
returns `logits`, float32 (N, 10): softmax gives each digit's probability. The images must be prepared as
MNIST's are: a digit of at most 20x20 px centred by its mass in 28x28, ink bright (1.0) on black (0.0),
then normalized with the training set's mean and std, (x - 0.1307) / 0.3081; `python -m stages.predict`
prepares any picture so. One forward pass, as `test.one_pass` in reports/metrics.json measures it; the
one-pixel shifts of `evaluate` and `predict` are not in the file. Written by PyTorch's exporter
(torch.export, ONNX opset 20), then run by onnxruntime on training images before it is written: the stage
fails unless its logits match PyTorch's within 1e-4.
"""

from __future__ import annotations

import argparse

import torch

from stages import atomic, cli, data, idx, paths
from stages.errors import StageError
from stages.infer import load_checkpoint, logits
from stages.model import MEAN, STD, Net

TOLERANCE = 1e-4  # largest |logit| difference allowed between onnxruntime and PyTorch
CHECK_IMAGES = 2000  # training images the export is checked on (the test set is evaluate's alone)
OPSET = 20


def export(model: Net) -> bytes:
    """The model as an ONNX file's bytes: input `image` (N, 1, 28, 28) with a dynamic batch, output `logits`."""
    program = torch.onnx.export(model.eval(), (torch.zeros(1, 1, 28, 28),), input_names=["image"],
                                output_names=["logits"], dynamo=True, verbose=False, opset_version=OPSET,
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    proto = program.model_proto
    # The exporter annotates each node with the source's stack trace, absolute paths included: the same
    # weights exported from two checkouts gave two files. Dropped, so the bytes follow the weights alone.
    for node in proto.graph.node:
        del node.metadata_props[:]
    for value in proto.graph.value_info:
        del value.metadata_props[:]
    proto.doc_string = (f"MNIST digit classifier (9,802 parameters). image: float32 (N, 1, 28, 28), pixels in "
                        f"[0, 1] with ink bright on black, normalized as (x - {MEAN}) / {STD}. logits: float32 "
                        f"(N, 10), one per digit 0-9.")
    for key, value in (("mean", str(MEAN)), ("std", str(STD)), ("ink", "bright on black")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def onnx_logits(onnx_bytes: bytes, images: torch.Tensor) -> torch.Tensor:
    """The exported model's logits for normalized images (N, 1, 28, 28), computed by onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"image": images.numpy()})[0])


def check(onnx_bytes: bytes, model: Net, images: torch.Tensor) -> float:
    """The largest |logit| difference between onnxruntime and PyTorch on images; StageError past TOLERANCE."""
    difference = float((onnx_logits(onnx_bytes, images) - logits(model, images)).abs().max())
    if difference > TOLERANCE:
        raise StageError(f"the ONNX export's logits differ from PyTorch's by up to {difference:.2e} on "
                         f"{len(images)} training images (allowed: {TOLERANCE:.0e}); nothing written")
    return difference


def parser() -> argparse.ArgumentParser:
    return cli.parser(__doc__, command="stages.export",
                      reads=[str(paths.MODEL), f"{paths.RAW_DIR}/ (training images, for the check)"],
                      writes=[str(paths.ONNX)])


def main(args: argparse.Namespace) -> None:
    cpu = torch.device("cpu")
    model, checkpoint = load_checkpoint(paths.MODEL, cpu)
    images = data.normalize(idx.load_split(paths.RAW_DIR, "train")[0][:CHECK_IMAGES])  # floats for these only
    onnx_bytes = export(model)
    difference = check(onnx_bytes, model, images)
    atomic.write_bytes(paths.ONNX, onnx_bytes)
    print(f"export: {paths.ONNX} ({len(onnx_bytes):,} bytes, opset {OPSET}, model from epoch "
          f"{checkpoint.get('epoch')}); onnxruntime's logits within {difference:.1e} of PyTorch's on "
          f"{len(images)} training images")


if __name__ == "__main__":
    cli.run(main, parser())
