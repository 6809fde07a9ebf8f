"""MNIST's IDX files: a strict parser, the encoder the tests use, and MD5.

The parser checks everything a damaged or wrong file can get wrong (magic
number, dimensions against the file size, labels in 0-9) and names the file
in one line, so a bad download stops here instead of deep inside torch.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import torch

from stages.errors import StageError
from stages.paths import SPLITS

_UBYTE = 0x08


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def parse(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Parse one IDX file of unsigned bytes into a uint8 tensor of its shape."""
    if len(data) < 4:
        raise StageError(f"{name}: truncated: {len(data)} bytes, not even an IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _UBYTE or ndim not in (1, 3):
        raise StageError(f"{name}: wrong magic number 0x{data[:4].hex()}: expected 0x00000801 "
                         f"(labels) or 0x00000803 (images)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise StageError(f"{name}: truncated: the header needs {header} bytes, the file has {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + _prod(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise StageError(f"{name}: {what}: dimensions {'x'.join(map(str, dims))} need {expected} bytes, "
                         f"the file has {len(data)}")
    tensor = torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)
    if ndim == 1 and tensor.numel() and int(tensor.max()) > 9:
        raise StageError(f"{name}: labels outside 0-9 (found {int(tensor.max())})")
    return tensor


def _prod(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def encode(tensor: torch.Tensor) -> bytes:
    """The IDX bytes of a uint8 tensor (1-d labels or 3-d images)."""
    tensor = tensor.to(torch.uint8).contiguous()
    header = struct.pack(">HBB", 0, _UBYTE, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    return header + tensor.numpy().tobytes()


def load_split(raw_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of `split` ('train' or 'test')."""
    images_name, labels_name = SPLITS[split]
    images = parse(_read(raw_dir / images_name), str(raw_dir / images_name))
    labels = parse(_read(raw_dir / labels_name), str(raw_dir / labels_name))
    if images.dim() != 3 or images.shape[1:] != (28, 28):
        raise StageError(f"{raw_dir / images_name}: expected images of 28x28, got shape {tuple(images.shape)}")
    if labels.dim() != 1:
        raise StageError(f"{raw_dir / labels_name}: expected a 1-d label file, got shape {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise StageError(f"{raw_dir}: {len(images)} images in {images_name} but {len(labels)} labels "
                         f"in {labels_name}")
    return images, labels.long()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StageError(f"{path}: missing (run `dvc repro download` first)") from None
