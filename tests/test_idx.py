import struct
from pathlib import Path

import pytest
import torch

from stages import idx
from stages.errors import StageError
from tests.helpers import write_dataset


def test_encode_parse_round_trip() -> None:
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    assert torch.equal(idx.parse(idx.encode(images)), images)
    labels = torch.tensor([0, 9, 5], dtype=torch.uint8)
    assert torch.equal(idx.parse(idx.encode(labels)), labels)


def test_load_split_gives_shapes_and_dtypes(dataset: tuple[Path, dict]) -> None:
    directory, _ = dataset
    images, labels = idx.load_split(directory, "train")
    assert images.shape == (600, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (600,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))


def _labels(values: list[int]) -> bytes:
    return struct.pack(">HBBI", 0, 8, 1, len(values)) + bytes(values)


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00", "truncated"),
    (b"\x00\x00\x0d\x01" + b"\x00" * 8, "wrong magic number"),
    (struct.pack(">HBBIII", 0, 8, 3, 2, 28, 28) + b"\x00" * 100, "truncated: dimensions 2x28x28"),
    (_labels([1, 2]) + b"\x00", "too long"),
    (_labels([1, 12]), "labels outside 0-9"),
])
def test_damaged_files_are_named_with_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(StageError, match=message) as err:
        idx.parse(data, "some-file")
    assert str(err.value).startswith("some-file: ")


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    write_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_labels([1] * 599))
    with pytest.raises(StageError, match="600 images in train-images-idx3-ubyte but 599 labels"):
        idx.load_split(tmp_path, "train")


def test_missing_file_points_at_the_download_stage(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="missing .*dvc repro download"):
        idx.load_split(tmp_path, "test")
