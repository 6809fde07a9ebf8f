"""Predict the digit in image files with the trained model.

    python -m stages.predict IMAGE [IMAGE ...] [--json] [--model models/model.pt]

Any size of PNG or JPEG (or anything else Pillow reads: palette, 16-bit, CMYK), dark ink on light
paper or the reverse, with a margin of paper or cropped tight to the ink, read as an image viewer
shows it: upright by the photo's EXIF orientation, and a transparent background (a canvas or
paint-app export) laid on paper that contrasts with the ink. Each image is then prepared as MNIST's
were: grayscale, ink made bright on black, uneven paper or light subtracted, the ink's bounding box
fitted into 20x20 keeping its aspect ratio, then placed in 28x28 so that its center of mass is at
the center.

Every file gets its answer: a line `FILE: DIGIT (PROBABILITY)` on stdout, or, for a file that cannot
be read or holds no digit, a line `error: FILE: WHY` on stderr (with --json: one entry per file, in
order, with `digit` and `probability`, or `error`). Exit status 0 when every file was answered, 1
when some failed, 2 when none could be read (or the model could not be loaded).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from stages import cli, paths
from stages.errors import StageError
from stages.infer import load_checkpoint, probabilities
from stages.model import MEAN, STD

if TYPE_CHECKING:
    from PIL import Image

# Pictures are prepared at most this many pixels on their shorter side: 13 times the 20 px a digit ends as.
WORK_SIDE = 256
# An edge pixel this much brighter than the border's median (after inversion, of the contrast range) is ink
# touching the edge, and the frame beyond it is paper; a dimmer one is paper, unevenly lit, and the frame
# beyond it continues it.
EDGE_INK = 0.5
INK_THRESHOLD = 0.3  # of the contrast range: brighter than this (after inversion) counts as ink
# Images larger than this are refused from their header, before any pixel is decoded: a 24-megapixel
# photo (6000 x 4000) fits; a 438 KB PNG can claim 20,000 x 20,000 pixels and take GBs to decode.
# PIL's own guard only warns from 89 million pixels and stops at 179 million.
MAX_PIXELS = 25_000_000


def on_paper(image: Image.Image) -> Image.Image:
    """An image with transparency laid on opaque paper: white under dark ink, black under light ink.

    A drawing exported from an HTML canvas or a paint app is ink on fully transparent pixels, whose colour is
    often black too: the alpha channel is what holds the digit, and convert("L") alone would drop it.
    """
    from PIL import Image, ImageStat

    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] == 255:  # nothing transparent after all
        return image
    # The ink's brightness: the grey of the pixels weighted by how opaque they are.
    ink = ImageStat.Stat(rgba.convert("L"), mask=alpha.point(lambda a: 255 if a >= 128 else 0)).mean
    paper = (0, 0, 0, 255) if ink and ink[0] > 127 else (255, 255, 255, 255)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, paper), rgba)


def read_gray(path: Path) -> torch.Tensor:
    """Pixels of an image file as float (H, W) in [0, 1], as a viewer shows it (see on_paper, exif_transpose)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        # open() reads the header only; PIL's warning past 89 million pixels is this check's to answer.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise StageError(f"{path}: {width} x {height} pixels is over the limit of {MAX_PIXELS:,} "
                                 f"(one digit needs far fewer: scale the image down); not decoded")
            # Phones store pixels as the sensor read them, with the turn to upright in an EXIF tag.
            upright = ImageOps.exif_transpose(image)
            if upright.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in upright.info:
                upright = on_paper(upright)
            if upright.mode.startswith("I"):
                # 16-bit (or 32-bit) grey: convert("L") would clip every value above 255 to white. Scaled by the
                # brightest value instead: the preparation stretches the contrast to its range anyway.
                high = max(upright.getextrema()[1], 255)
                upright = upright.convert("I").point(lambda v: v * 255 / high)
            gray = upright.convert("L")
            gray.load()
    except StageError:
        raise
    except FileNotFoundError:
        raise StageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise StageError(f"{path}: a directory, not an image file") from None
    except Image.DecompressionBombError:  # PIL's own guard, past 179 million pixels, in open()
        raise StageError(f"{path}: over the limit of {MAX_PIXELS:,} pixels (and PIL's own, 179 million); "
                         f"not decoded") from None
    except UnidentifiedImageError:
        raise StageError(f"{path}: not a readable image (not a format Pillow recognises)") from None
    except Exception as exc:  # a damaged file can fail anywhere in a decoder (OSError, SyntaxError, EOFError, ...)
        raise StageError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if gray.width == 0 or gray.height == 0:
        raise StageError(f"{path}: empty image")
    return torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8).reshape(gray.height, gray.width) / 255.0


def _square_max(x: torch.Tensor, window: int) -> torch.Tensor:
    """The maximum of (H, W) over a square window (odd side) about each pixel, as a column then a row pass."""
    x = F.max_pool2d(x[None, None], (window, 1), 1, (window // 2, 0))
    return F.max_pool2d(x, (1, window), 1, (0, window // 2))[0, 0]


def _border_median(gray: torch.Tensor) -> torch.Tensor:
    """The median of the picture's outermost rows and columns: the paper's value, unless ink fills the edge."""
    return torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).median()


def to_mnist(gray: torch.Tensor, where: str = "image") -> torch.Tensor:
    """A (H, W) grayscale picture of one digit -> normalized (1, 28, 28) like an MNIST image."""
    if min(gray.shape) > WORK_SIDE:  # averaged down first: the filters below cost the window's side per pixel
        gray = F.interpolate(gray[None, None], scale_factor=WORK_SIDE / min(gray.shape), mode="area")[0, 0]
    paper, low, high = _border_median(gray), gray.min(), gray.max()
    # Light paper (its median nearer the brightest pixel than the darkest): make the ink the bright part, as in
    # MNIST. A fixed 0.5 inverted bright ink on grey paper, and kept dark ink on an under-exposed white page.
    if paper - low > high - paper:
        gray, low, high = 1.0 - gray, 1.0 - high, 1.0 - low
    if high - low < 0.1:
        raise StageError(f"{where}: no digit found (the image is blank or nearly uniform)")
    gray = ((gray - low) / (high - low)).clamp(0, 1)
    # Uneven paper, light or haze: the grey opening (a minimum, then a maximum filter) over a window a third of
    # the picture's side keeps what is wider than the window and drops the strokes; subtracted, it leaves the ink
    # on black (chosen on the hold-out suite: fog 13 -> 97 %, photo 29 -> 90 %; bench/results/zen4-2026-12-03).
    # A digit cropped to its ink broke it twice: its strokes touch the edge, where the filters saw only ink, and
    # a bold pen's strokes are wider than a third of a narrow picture's shorter side; both were taken for paper
    # and subtracted away (a tight crop of a bold 7 read as a 1). So the filters see past the edge into a frame
    # that continues the paper (each edge pixel repeated outwards, or the border's median beyond ink that
    # touches the edge), and the window is a third of the longer side (the same on a square).
    window = math.ceil(max(gray.shape) / 3) // 2 * 2 + 1
    paper = _border_median(gray)  # again: inverted and stretched since
    framed = F.pad(gray[None, None], (window,) * 4, mode="replicate")[0, 0]
    outside = torch.ones_like(framed, dtype=torch.bool)
    outside[window:-window, window:-window] = False
    framed = torch.where(outside & (framed > paper + EDGE_INK), paper, framed)
    background = _square_max(-_square_max(-framed, window), window)[window:-window, window:-window]
    gray = (gray - background).clamp(min=0)
    if gray.max() < 0.1:  # of the contrast range, as the blank-image check above
        raise StageError(f"{where}: no digit found (nothing narrower than a third of the picture stands out from "
                         "the paper)")
    gray = gray / gray.max()
    rows, cols = torch.nonzero(gray > INK_THRESHOLD, as_tuple=True)
    ink = gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = ink.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    digit = F.interpolate(ink[None, None], size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    # Center of mass of the fitted digit goes to the image center (MNIST's convention).
    total = digit.sum()
    cy = (digit.sum(1) * torch.arange(size[0])).sum() / total
    cx = (digit.sum(0) * torch.arange(size[1])).sum() / total
    top = int(round(13.5 - float(cy)))
    left = int(round(13.5 - float(cx)))
    top, left = min(max(top, 0), 28 - size[0]), min(max(left, 0), 28 - size[1])
    canvas = torch.zeros(28, 28)
    canvas[top:top + size[0], left:left + size[1]] = digit
    return ((canvas - MEAN) / STD)[None]


def predict(*, model: torch.nn.Module, images: list[Path]) -> list[dict[str, object]]:
    """For each image file, in order: {file, digit, probability}, or {file, error} for one that could not be read
    or holds no digit. The readable ones go through the model as one batch."""
    results: list[dict[str, object]] = []
    prepared: list[torch.Tensor] = []
    for path in images:
        try:
            prepared.append(to_mnist(read_gray(path), str(path)))
            results.append({"file": str(path)})
        except StageError as exc:
            results.append({"file": str(path), "error": str(exc)})
    if prepared:
        probs = probabilities(model, torch.stack(prepared).to(next(model.parameters()).device)).cpu()
        best = probs.max(1)
        answered = (r for r in results if "error" not in r)
        for r, digit, probability in zip(answered, best.indices, best.values, strict=True):
            r.update(digit=int(digit), probability=round(float(probability), 4))
    return results


def parser() -> argparse.ArgumentParser:
    made = cli.parser(__doc__, command="stages.predict", reads=["the image files", f"{paths.MODEL} (or --model)"],
                      writes=[])
    made.add_argument("images", nargs="+", type=Path, help="PNG or JPEG files, one digit each")
    made.add_argument("--json", action="store_true", help="print a JSON list instead of lines")
    made.add_argument("--model", type=Path, default=paths.MODEL, help="checkpoint (default: %(default)s)")
    return made


def main(args: argparse.Namespace) -> None:
    model, _ = load_checkpoint(args.model, torch.device("cpu"))
    results = predict(model=model, images=args.images)
    for r in results:
        if "error" in r:
            print(f"error: {r['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" not in r:
                print(f"{r['file']}: {r['digit']} ({r['probability']:.1%})")
    failed = sum("error" in r for r in results)
    if failed:
        sys.exit(2 if failed == len(results) else 1)


if __name__ == "__main__":
    cli.run(main, parser())
