"""The robustness suite: corrupted copies of MNIST images, the same ones every run.

Fifteen corruptions are MNIST-C's (Mu & Gilmer 2019; google-research/mnist-c, Apache-2.0), at the
severities of its published dataset, written here in torch from its definitions so that a batch is
corrupted at once. Six more are what users' own pictures bring after `predict` has prepared them: thin
and thick strokes, low resolution, a small off-centre digit, JPEG artefacts, a photographed page.

Every corruption takes pixels (N, 1, 28, 28) in [0, 1], MNIST's polarity (bright ink on black), and a
torch.Generator, and returns corrupted pixels in [0, 1], rounded to 8 bits as an image file would hold
them. `subset` draws a fixed subset of a split and `corrupt` corrupts it with one fixed generator per
corruption, so every run and every model sees the same images; `save_suite` and `load_suite` write and
read the `corrupt` stage's file of them.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from stages import atomic
from stages.errors import StageError

Corruption = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _sign(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=g).double() * 2 - 1


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur, sigma in pixels, truncated at 4 sigma as skimage's `gaussian` is."""
    from torchvision.transforms.v2 import functional as TF  # here: its import takes seconds, which evaluate skips

    return TF.gaussian_blur(x, [2 * math.ceil(4 * sigma) + 1] * 2, [sigma, sigma])


def _warp(x: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Each image resampled (bilinear, black outside) at matrix @ p + shift, for p its pixel position.

    matrix (N, 2, 2) and shift (N, 2, in pixels) act on (column, row) offsets from the image centre,
    as skimage's `warp(inverse_map=...)` of MNIST-C does with the centre (13.5, 13.5) fixed.
    """
    n, side = x.shape[0], x.shape[-1]
    shift = torch.zeros(n, 2, dtype=matrix.dtype) if shift is None else shift
    # affine_grid's coordinates run over [-1, 1] across the image: one pixel is 2 / side of them.
    theta = torch.cat([matrix, (shift * 2 / side)[:, :, None]], 2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)


def _identity(n: int, scale: float = 1.0) -> torch.Tensor:
    return torch.eye(2, dtype=torch.float64).repeat(n, 1, 1) * scale


def _line(c0: torch.Tensor, r0: torch.Tensor, c1: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """MNIST-C's `line_from_points`: a soft line (N, 1, 28, 28) through (c0, r0)-(c1, r1), columns c0..c1."""
    cols = torch.arange(28, dtype=torch.float64)[None, None, :]
    rows = torch.arange(28, dtype=torch.float64)[None, :, None]
    c0, r0, c1, r1 = (v[:, None, None] for v in (c0, r0, c1, r1))
    slope = (r1 - r0) / torch.where(c1 == c0, 1.0, c1 - c0)
    # Brightness falls with the vertical distance d (px) from the line as log(1 - d / 2.3) + 1.
    dist = (rows - (slope * (cols - c0) + r0)).abs().clamp(0, 2.3 - 1e-10)
    line = (torch.log(1 - dist / 2.3) + 1).clamp(0, 1)
    inside = (cols >= c0.floor()) & (cols < c1.ceil()) & (c1 != c0)
    return (line * inside)[:, None].float()


def shot_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Poisson noise of 3 photons at full brightness (MNIST-C severity 5)."""
    return torch.poisson(x * 3, generator=g) / 3


def impulse_noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Salt and pepper on 17 % of the pixels, half each (MNIST-C severity 4)."""
    hit = torch.rand(x.shape, generator=g) < 0.17
    salt = torch.rand(x.shape, generator=g) < 0.5
    return torch.where(hit, salt.float(), x)


def glass_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur (sigma 0.7 px), two rounds of local pixel shuffling by up to 1 px, blur again (MNIST-C severity 1).

    MNIST-C swaps pixels one by one; here each pixel of rows and columns 2-27 takes, with probability 1/2,
    the value of its neighbour up or left by 0 or 1 px, all at once: the same frosted-glass smear.
    """
    x = (_blur(x, 0.7) * 255).floor() / 255  # MNIST-C stores the first blur as uint8
    n = x.shape[0]
    rows = torch.arange(28).view(1, 28, 1).expand(n, 28, 28)
    cols = torch.arange(28).view(1, 1, 28).expand(n, 28, 28)
    movable = (rows >= 2) & (cols >= 2)
    for _ in range(2):
        move = movable & (torch.rand(n, 28, 28, generator=g) < 0.5)
        dy, dx = (torch.randint(-1, 1, (n, 28, 28), generator=g) * move for _ in range(2))
        x = x[:, 0][torch.arange(n)[:, None, None], rows + dy, cols + dx][:, None]
    return _blur(x, 0.7)


def motion_blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """ImageMagick's motion blur of MNIST-C severity 1: radius 10, sigma 3 px, at an angle in [-45, 45] degrees.

    A one-sided trail: the pixel and the 20 behind it along the angle, Gaussian-weighted by distance.
    """
    n, taps = x.shape[0], torch.arange(21, dtype=torch.float64)
    weights = torch.exp(-taps ** 2 / (2 * 3.0 ** 2))
    angle = torch.deg2rad(_uniform(n, -45, 45, g))
    dx = (taps[None] * angle.cos()[:, None]).round().long()
    dy = (taps[None] * angle.sin()[:, None]).round().long()
    padded = F.pad(x[:, 0], (20, 20, 20, 20))
    pixels, out = torch.arange(28), torch.zeros_like(x[:, 0])
    for i, w in enumerate((weights / weights.sum()).tolist()):
        rows = 20 + pixels[None, :, None] + dy[:, i, None, None]
        cols = 20 + pixels[None, None, :] + dx[:, i, None, None]
        out += w * padded[torch.arange(n)[:, None, None], rows, cols]
    return out[:, None]


def shear(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal shear by an angle of 0.4 rad, either way (MNIST-C severity 2)."""
    angle = 0.4 * _sign(x.shape[0], g)
    matrix = _identity(x.shape[0])
    matrix[:, 0, 1], matrix[:, 1, 1] = -angle.sin(), angle.cos()
    return _warp(x, matrix)


def scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The digit shrunk to 70 % about the centre (MNIST-C severity 3)."""
    return _warp(x, _identity(x.shape[0], 1 / 0.7))


def rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotated by 0.4 rad (23 degrees), either way (MNIST-C severity 2)."""
    return _warp(x, _rotation(0.4 * _sign(x.shape[0], g)))


def brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Brightness (HSV value) raised by 0.5: the black background turns mid-grey (MNIST-C severity 5)."""
    return x + 0.5


def translate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Moved 3 px along each axis, each way at random (MNIST-C severity 3)."""
    n = x.shape[0]
    return _warp(x, _identity(n), 3 * torch.stack([_sign(n, g), _sign(n, g)], 1))


def stripe(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The 7 columns at each side inverted (MNIST-C)."""
    out = x.clone()
    out[..., :7], out[..., 21:] = 1 - x[..., :7], 1 - x[..., 21:]
    return out


def _plasma(n: int, g: torch.Generator, size: int = 256, decay: float = 1.4) -> torch.Tensor:
    """MNIST-C's `plasma_fractal` (diamond-square) of side `size`, n at once, each scaled to [0, 1]."""
    field = torch.zeros(n, size, size)  # float32: its 7 digits are ample, and twice as fast as MNIST-C's float64
    step, wibble = size, 100.0

    def wibbled(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * (torch.rand(total.shape, generator=g) * 2 - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = field[:, ::step, ::step]
        around = corners + corners.roll(-1, 1)
        field[:, half::step, half::step] = wibbled(around + around.roll(-1, 2))
        centres, corners = field[:, half::step, half::step], field[:, ::step, ::step]
        field[:, ::step, half::step] = wibbled(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        field[:, half::step, ::step] = wibbled(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step, wibble = half, wibble / decay
    field -= field.amin((1, 2), keepdim=True)
    return field / field.amax((1, 2), keepdim=True)


def fog(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A plasma fractal of strength 3 added, then the whole dimmed back (MNIST-C severity 5)."""
    top = x.amax((1, 2, 3), keepdim=True)
    # 100 maps of 256 x 256 at a time: the fractal's scale needs the full map; only its 28 x 28 corner is used.
    haze = torch.cat([_plasma(len(part), g)[:, :28, :28] for part in x.split(100)])[:, None]
    return (x + 3 * haze) * top / (top + 3)


def spatter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mud splashes: blobs of a blurred random field, painted dark grey (63/255) (MNIST-C severity 4)."""
    liquid = _blur(0.65 + 0.3 * torch.randn(x.shape, generator=g), 1.0)
    mud = _blur((liquid > 0.65).float(), 1.5)
    mud = mud * (mud >= 0.8)
    return x * (1 - mud) + 63 / 255 * mud


def dotted_line(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A bright line across the image, from row r0 at the left to r1 at the right, in dashes of 2 px (MNIST-C)."""
    n = x.shape[0]
    rows = torch.randint(0, 27, (2, n), generator=g).double()
    line = _line(torch.zeros(n, dtype=torch.float64), rows[0], torch.full((n,), 27.0, dtype=torch.float64), rows[1])
    dashes = (torch.arange(28) // 2) % 2 == 1
    return x + line * dashes


def zigzag(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A zigzag of 2 px teeth from column 2 to 25, starting at a random row, tilted by up to 5 rows (MNIST-C)."""
    n = x.shape[0]
    r0 = torch.randint(0, 27, (n,), generator=g).double()
    r1 = r0 + torch.randint(-5, 5, (n,), generator=g).double()
    theta = torch.atan((r1 - r0) / 23)
    length = 23 / theta.cos()
    # MNIST-C's corners at this length (23.0-23.6 px): (0, 0), then (2, 2), (6, -2), ... (22, -2), and the end
    # (length, -2 / (2 (length - 20))); rotated by theta about the start, which sits at (2, r0).
    along = torch.tensor([0.0, 2, 6, 10, 14, 18, 22], dtype=torch.float64).expand(n, 7)
    across = torch.tensor([0.0, 2, -2, 2, -2, 2, -2], dtype=torch.float64).expand(n, 7)
    along = torch.cat([along, length[:, None]], 1)
    across = torch.cat([across, (-2 / (2 * (length - 20)))[:, None]], 1)
    cos, sin = theta.cos()[:, None], theta.sin()[:, None]
    cs, rs = 2 + along * cos - across * sin, r0[:, None] + along * sin + across * cos
    for i in range(1, 8):
        x = (x + _line(cs[:, i - 1], rs[:, i - 1], cs[:, i], rs[:, i])).clamp(0, 1)
    return x


def canny_edges(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Only the digit's outline: Canny edges at skimage's defaults (sigma 1 px, thresholds 0.1 and 0.2) (MNIST-C)."""
    from kornia.filters import canny  # kornia's Canny: unnormalized Sobel, non-maximum suppression, hysteresis

    return canny(x, low_threshold=0.1, high_threshold=0.2, kernel_size=9, sigma=(1.0, 1.0))[1]


def thin(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Strokes thinned by a fine pen: grey erosion by a 3 px cross (about 1 px off each side of a stroke)."""
    pad = F.pad(x, (1, 1, 1, 1))
    return torch.stack([x, pad[..., :-2, 1:-1], pad[..., 2:, 1:-1], pad[..., 1:-1, :-2], pad[..., 1:-1, 2:]]).amin(0)


def thick(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Strokes thickened by a marker: grey dilation by a 3 x 3 square (1 px onto each side of a stroke)."""
    return F.max_pool2d(x, 3, stride=1, padding=1)


def low_resolution(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A digit photographed small: averaged down to 8, 9 or 10 px square at random, then bilinear back to 28."""
    side = torch.randint(8, 11, (x.shape[0],), generator=g)
    out = torch.empty_like(x)
    for s in (8, 9, 10):
        pick = side == s
        small = F.interpolate(x[pick], size=(s, s), mode="area")
        out[pick] = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False)
    return out


def small_off_centre(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A digit written small in a corner of its box: shrunk to half and moved up to 6 px along each axis."""
    n = x.shape[0]
    moved = torch.stack([_uniform(n, -6, 6, g), _uniform(n, -6, 6, g)], 1)
    return _warp(x, _identity(n, 2.0), -2 * moved)


def jpeg(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Saved as JPEG at quality 10 by Pillow (libjpeg): blocky, ringing strokes."""
    from PIL import Image  # torchvision's own JPEG codec is deprecated since 0.29

    def saved(pixels: torch.Tensor) -> torch.Tensor:
        buffer = io.BytesIO()
        Image.fromarray(pixels.numpy()).save(buffer, format="JPEG", quality=10)
        with Image.open(buffer) as image:
            return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(28, 28)

    eight_bit = (x[:, 0] * 255).round().to(torch.uint8)
    return torch.stack([saved(p) for p in eight_bit])[:, None].float() / 255


def photo(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A photographed page once inverted: grey paper lit unevenly, ink short of white, sensor noise.

    Paper 0.1-0.3 (0 is black) plus a light gradient of up to 0.2 across the image at a random angle;
    ink at 0.6-0.9; Gaussian noise of sd 0.03.
    """
    n = x.shape[0]
    paper, ink = _uniform(n, 0.1, 0.3, g), _uniform(n, 0.6, 0.9, g)
    angle, light = _uniform(n, 0, 2 * math.pi, g), _uniform(n, 0, 0.2, g)
    ramp = torch.linspace(-0.5, 0.5, 28, dtype=torch.float64)
    gradient = angle.cos()[:, None, None] * ramp[None, None, :] + angle.sin()[:, None, None] * ramp[None, :, None]
    background = (paper[:, None, None] + light[:, None, None] * gradient)[:, None].float()
    out = background + x * (ink[:, None, None, None].float() - background)
    return out + 0.03 * torch.randn(x.shape, generator=g)


# The suite, in the order of reports/robustness.json: MNIST-C's fifteen, then the six of users' pictures.
CORRUPTIONS: dict[str, Corruption] = {f.__name__: f for f in (
    shot_noise, impulse_noise, glass_blur, motion_blur, shear, scale, rotate, brightness, translate, stripe,
    fog, spatter, dotted_line, zigzag, canny_edges,
    thin, thick, low_resolution, small_off_centre, jpeg, photo)}

# The corruptions that no training augmentation makes (data.APPEARANCE, data.augment), chosen before the
# augmentation study (bench/results/zen4-2026-12-03/augment.md): a gain on them is robustness, not memory.
# The rest are trained-on: noise, blur, grey paper, pen width, low resolution, or the affine transform.
HELD_OUT = ("impulse_noise", "motion_blur", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges",
            "small_off_centre", "jpeg")

SUITE_SIZE = 1000  # images per corruption: a 1-point accuracy difference is then 10 images
SUITE_SEED = 2019  # the subset and every corruption's draws; a corruption's own seed adds its name's CRC-32


def corrupt(pixels: torch.Tensor, name: str, seed: int = SUITE_SEED) -> torch.Tensor:
    """Pixels (N, 1, 28, 28) in [0, 1] with corruption `name`, on the CPU, rounded to 8 bits; the same every call."""
    g = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
    out = CORRUPTIONS[name](pixels.cpu().float(), g)
    return (out.clamp(0, 1) * 255).round() / 255


def subset(n: int, size: int = SUITE_SIZE, seed: int = SUITE_SEED) -> torch.Tensor:
    """Indices of the `size` images (all when n is smaller) of a split of n that the suite corrupts, in order."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:size].sort().values


def save_suite(suite: dict[str, torch.Tensor], path: Path) -> None:
    """Write the `corrupt` stage's {'indices', 'labels', and a uint8 (N, 28, 28) per corruption} atomically."""
    buffer = io.BytesIO()  # serialized first: torch.save on a full disk fails deep in its zip writer, unnamed
    torch.save(suite, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load_suite(path: Path) -> dict[str, torch.Tensor]:
    """The `corrupt` stage's file: {'indices', 'labels', and a uint8 (N, 28, 28) per corruption}."""
    try:
        suite = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise StageError(f"{path}: missing (run `dvc repro corrupt` first)") from None
    except Exception as exc:  # a damaged file can fail anywhere in the unpickler
        raise StageError(f"{path}: not the `corrupt` stage's suite ({type(exc).__name__}); "
                         f"make it again with `dvc repro -f corrupt`") from None
    images = [t for k, t in suite.items() if k not in ("indices", "labels")] if isinstance(suite, dict) else []
    labels = suite.get("labels") if images else None
    if not (isinstance(labels, torch.Tensor)
            and all(isinstance(t, torch.Tensor) and t.shape == (len(labels), 28, 28) for t in images)):
        raise StageError(f"{path}: not the `corrupt` stage's suite; make it again with `dvc repro -f corrupt`")
    return suite
