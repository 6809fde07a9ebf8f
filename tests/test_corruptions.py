"""The robustness suite: each corruption does what its name says, the same way every run."""

from __future__ import annotations

import math

import pytest
import torch

from stages import corrupt, corruptions
from tests.helpers import make_images

MNIST_C = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
           "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")


def strokes(n: int = 8) -> torch.Tensor:
    """n 8-bit 'digits' (N, 1, 28, 28) in [0, 1]: a ring of radius 5-8 px and stroke 2.5 px, centred, on black."""
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    radius = torch.linspace(5, 8, n)[:, None, None]
    distance = ((rows - 13.5) ** 2 + (cols - 13.5) ** 2).sqrt()
    return ((1.25 - (distance - radius).abs()).clamp(0, 1)[:, None] * 255).round() / 255


def centre(x: torch.Tensor) -> torch.Tensor:
    """Centre of mass (N, 2) as (column, row) of each image's brightness."""
    weights = x[:, 0]
    total = weights.sum((1, 2))
    grid = torch.arange(28.0)
    return torch.stack([(weights.sum(1) * grid).sum(1) / total, (weights.sum(2) * grid).sum(1) / total], 1)


def extent(x: torch.Tensor) -> torch.Tensor:
    """Width of the ink (pixels > 0.5) of each image, in px."""
    cols = (x[:, 0] > 0.5).any(1)
    grid = torch.arange(28)
    return torch.tensor([float(grid[c].max() - grid[c].min() + 1) for c in cols])


def test_the_suite_holds_mnist_c_fifteen_and_the_users_six() -> None:
    names = list(corruptions.CORRUPTIONS)
    assert names[:15] == list(MNIST_C)
    assert names[15:] == ["thin", "thick", "low_resolution", "small_off_centre", "jpeg", "photo"]


@pytest.mark.parametrize("name", list(corruptions.CORRUPTIONS))
def test_each_corruption_changes_the_image_the_same_way_every_call(name: str) -> None:
    x = strokes()
    out = corruptions.corrupt(x, name)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out * 255, (out * 255).round())  # 8-bit levels, as an image file holds
    assert (out - x).abs().mean() > 0.005, "the corruption left the image as it was"
    assert torch.equal(corruptions.corrupt(x, name), out)
    other = corruptions.corrupt(x, name, seed=1)
    random = name not in ("scale", "brightness", "stripe", "canny_edges", "thin", "thick", "jpeg")
    assert torch.equal(other, out) != random  # the random ones draw from the seed, the others do not


def test_geometric_corruptions_move_and_resize_the_digit_by_their_amounts() -> None:
    x = strokes()
    moved = centre(corruptions.corrupt(x, "translate")) - centre(x)
    assert torch.allclose(moved.abs(), torch.full_like(moved, 3.0), atol=0.15)  # 3 px along each axis
    assert torch.allclose(extent(corruptions.corrupt(x, "scale")), 0.7 * extent(x), atol=1.5)
    small = corruptions.corrupt(x, "small_off_centre")
    assert torch.allclose(extent(small), 0.5 * extent(x), atol=1.5)
    assert (centre(small) - 13.5).abs().max() <= 6.2 and (centre(small) - 13.5).abs().max() > 1
    # A horizontal bar turns by 0.4 rad one way or the other; the sheared one leans by the same angle.
    bar = torch.zeros(4, 1, 28, 28)
    bar[:, :, 13:15, 4:24] = 1
    for name in ("rotate", "shear"):
        turned = corruptions.corrupt(bar if name == "rotate" else bar.transpose(2, 3), name)
        ink = torch.nonzero(turned[0, 0] > 0.5).float()
        rows, cols = ink[:, 0] - ink[:, 0].mean(), ink[:, 1] - ink[:, 1].mean()
        slope = (rows * cols).sum() / (cols ** 2 if name == "rotate" else rows ** 2).sum()
        assert math.atan(abs(float(slope))) == pytest.approx(0.4, abs=0.05), name


def test_photometric_corruptions_change_the_background_or_the_strokes() -> None:
    x = strokes()
    black = x == 0
    assert torch.all(corruptions.corrupt(x, "brightness")[black] == 128 / 255)  # +0.5, to 8 bits
    striped = corruptions.corrupt(x, "stripe")
    assert torch.allclose(striped[..., :7], 1 - x[..., :7], atol=1e-6) and torch.equal(striped[..., 7:21], x[..., 7:21])
    assert corruptions.corrupt(x, "thin").sum() < 0.7 * x.sum() < x.sum() < 0.7 * corruptions.corrupt(x, "thick").sum()
    photo, fog = corruptions.corrupt(x, "photo"), corruptions.corrupt(x, "fog")
    assert 0.05 < photo[black].mean() < 0.35 and photo[x == 1].mean() < 0.95  # grey paper, ink short of white
    assert fog[black].mean() > 0.1 and fog.amax((1, 2, 3)).max() <= 1
    edges = corruptions.corrupt(x, "canny_edges")
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    # Two outlines (inside and outside the ring), on the stroke's soft flanks, never on its bright core.
    rings = 2 * math.pi * torch.linspace(5, 8, len(x))
    assert torch.all((1.6 * rings < edges.sum((1, 2, 3))) & (edges.sum((1, 2, 3)) < 2.8 * rings))
    flanks = torch.nn.functional.max_pool2d(((x > 0) & (x < 1)).float(), 3, stride=1, padding=1)
    assert edges[x > 0.99].sum() == 0 and torch.all(edges <= flanks)


def test_noise_and_blur_keep_the_digit_where_it_was() -> None:
    x = strokes()
    for name in ("shot_noise", "glass_blur", "motion_blur", "low_resolution", "jpeg"):
        out = corruptions.corrupt(x, name)
        assert (centre(out) - centre(x)).abs().max() < 2.5, name
    low = corruptions.corrupt(x, "low_resolution")
    assert (low - x).abs().mean() > 0.05  # the 2.5 px strokes are below 8-10 px's resolution
    grey = torch.full((8, 1, 28, 28), 128 / 255)
    salted = corruptions.corrupt(grey, "impulse_noise")
    salt, pepper = float((salted == 1).float().mean()), float((salted == 0).float().mean())
    assert 0.16 < salt + pepper < 0.18 and abs(salt - pepper) < 0.015  # 17 % of the pixels, half each


def test_the_subset_is_fixed_sorted_and_of_the_suite_size() -> None:
    chosen = corruptions.subset(10_000)
    assert len(chosen) == corruptions.SUITE_SIZE and torch.equal(chosen, chosen.sort().values)
    assert torch.equal(chosen, corruptions.subset(10_000))
    assert not torch.equal(chosen, corruptions.subset(10_000, seed=1))
    assert torch.equal(corruptions.subset(100), torch.arange(100))  # a small split: all of it


def test_corrupt_stage_keeps_labels_and_indices_with_each_corruption(tmp_path) -> None:
    images, labels = make_images(300, seed=3)
    images, labels = images[:250], labels[:250]  # fewer than the suite's size: all of them, in order
    suite = corrupt.make_suite(images=images, labels=labels.long())
    chosen = torch.arange(250)
    assert list(suite) == ["indices", "labels", *corruptions.CORRUPTIONS]
    assert torch.equal(suite["indices"], chosen) and torch.equal(suite["labels"], labels.long()[chosen])
    assert all(suite[name].dtype == torch.uint8 and suite[name].shape == (250, 28, 28)
               for name in corruptions.CORRUPTIONS)
    assert torch.equal(suite["stripe"][:, :, 7:21], images[chosen][:, :, 7:21])
    corruptions.save_suite(suite, tmp_path / "suite.pt")
    again = corruptions.load_suite(tmp_path / "suite.pt")
    assert list(again) == list(suite) and all(torch.equal(again[k], suite[k]) for k in suite)
