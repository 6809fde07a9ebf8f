import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps

from stages import cli, predict
from stages.errors import StageError
from stages.model import MEAN, STD, Net

SEVEN = Path(__file__).parent / "data" / "seven.png"


def pixels(x: torch.Tensor) -> torch.Tensor:
    return x[0] * STD + MEAN


def test_sample_is_prepared_like_mnist() -> None:
    x = predict.to_mnist(predict.read_gray(SEVEN))
    assert x.shape == (1, 28, 28)
    ink = pixels(x) > 0.3
    rows, cols = torch.nonzero(ink, as_tuple=True)
    assert int(rows.max() - rows.min() + 1) <= 20 and int(cols.max() - cols.min() + 1) <= 20
    assert max(int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)) >= 19  # fitted to 20
    weights = pixels(x).clamp(min=0)
    cy = (weights.sum(1) * torch.arange(28)).sum() / weights.sum()
    cx = (weights.sum(0) * torch.arange(28)).sum() / weights.sum()
    assert abs(float(cy) - 13.5) <= 0.6 and abs(float(cx) - 13.5) <= 0.6
    assert float(pixels(x)[0, 0]) == pytest.approx(0.0, abs=1e-6)  # black background


def test_inverted_and_resized_images_prepare_the_same(tmp_path: Path) -> None:
    with Image.open(SEVEN) as image:
        ImageOps.invert(image.convert("L")).save(tmp_path / "inverted.png")
        image.resize((image.width * 3, image.height * 3)).save(tmp_path / "big.jpg", quality=95)
    reference = predict.to_mnist(predict.read_gray(SEVEN))
    assert torch.allclose(predict.to_mnist(predict.read_gray(tmp_path / "inverted.png")), reference, atol=0.02)
    big = predict.to_mnist(predict.read_gray(tmp_path / "big.jpg"))
    # Resampling moves strokes by up to a pixel; each image's ink must lie within 1 px of the other's.
    ink_big, ink_ref = (pixels(big) > 0.5).float(), (pixels(reference) > 0.5).float()
    near = torch.nn.functional.max_pool2d
    assert torch.all(ink_big <= near(ink_ref[None], 3, 1, 1)[0])
    assert torch.all(ink_ref <= near(ink_big[None], 3, 1, 1)[0])


def test_cli_prints_digit_and_probability_as_text_and_json(tmp_path: Path, monkeypatch, capsys) -> None:
    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    torch.save({"state_dict": Net().state_dict(), "epoch": 1}, model)
    with Image.open(SEVEN) as image:
        ImageOps.invert(image.convert("L")).save(tmp_path / "inverted.png")
    files = [str(SEVEN), str(tmp_path / "inverted.png")]
    cli.run(predict.main, predict.parser(), [*files, "--model", str(model), "--json"])
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == files
    assert all(0 <= r["digit"] <= 9 and 0 < r["probability"] <= 1 for r in results)
    assert results[0]["digit"] == results[1]["digit"]  # dark-on-light and light-on-dark agree

    cli.run(predict.main, predict.parser(), [str(SEVEN), "--model", str(model)])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{SEVEN}: {results[0]['digit']} (") and line.endswith("%)")


@pytest.mark.parametrize("content, expected", [
    (b"not an image at all", "not a readable image"),
    (b"", "not a readable image"),
    ("blank", "no digit found"),
])
def test_bad_image_files_get_a_clear_error(tmp_path: Path, content, expected) -> None:
    path = tmp_path / "x.png"
    if content == "blank":
        Image.new("L", (40, 40), 255).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(StageError, match=expected):
        predict.to_mnist(predict.read_gray(path), str(path))


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    torch.save({"state_dict": Net().state_dict(), "epoch": 1}, path)
    return path


def refused(capsys, argv: list[str]) -> str:
    """predict's answer to argv: exit 2 and one line on stderr, no traceback and no warning; that line."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(predict.main, predict.parser(), argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == "" and err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize("width, height, expected", [
    (10_000, 9_500, "10000 x 9500 pixels is over the limit of 25,000,000"),  # past PIL's warning, below its error
    (20_000, 20_000, "over the limit of 25,000,000 pixels (and PIL's own, 179 million)"),  # PIL's error in open()
])
def test_huge_image_is_refused_from_its_header_in_one_line(tmp_path: Path, capsys, model_file: Path,
                                                           width: int, height: int, expected: str) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("1", (width, height), 1).save(bomb)  # a few tens of KB on disk
    assert bomb.stat().st_size < 200_000
    err = refused(capsys, [str(bomb), "--model", str(model_file)])
    assert err.startswith(f"error: {bomb}: ") and expected in err and err.endswith("not decoded")


def test_a_model_file_of_the_users_that_is_missing_is_no_such_file(tmp_path: Path, capsys) -> None:
    assert refused(capsys, [str(SEVEN), "--model", str(tmp_path / "nosuch.pt")]) == \
        f"error: {tmp_path / 'nosuch.pt'}: no such file"


def test_evaluate_and_predict_average_each_image_and_its_one_pixel_shifts() -> None:
    # The test-time augmentation the hold-out chose (stages/infer.py): five views, softmax averaged.
    from stages.infer import TTA_SHIFTS, probabilities

    torch.manual_seed(0)
    model, images = Net().eval(), torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        views = [model(torch.roll(images, shift, dims=(2, 3))).softmax(1) for shift in TTA_SHIFTS]
        plain = model(images).softmax(1)
    assert len(TTA_SHIFTS) == 5 and (0, 0) in TTA_SHIFTS
    assert torch.allclose(probabilities(model, images), sum(views) / 5, atol=1e-6)
    assert not torch.allclose(probabilities(model, images), plain, atol=1e-4)


@pytest.mark.parametrize("paper, ink", [
    (0.0, 1.0),    # MNIST's own polarity
    (0.52, 1.0),   # bright ink on grey paper: a fixed 0.5 threshold took the grey for light paper
    (0.45, 0.1),   # dark ink on an under-exposed white page: a fixed 0.5 threshold kept the ink dark
    (0.9, 0.2),    # dark ink on light paper
])
def test_polarity_makes_the_ink_bright_whatever_the_paper(paper: float, ink: float) -> None:
    stroke = torch.zeros(40, 30, dtype=torch.bool)
    stroke[8:32, 13:17] = True  # a bar: a "1"
    x = pixels(predict.to_mnist(torch.where(stroke, ink, paper)))
    assert float(x[0, 0]) == pytest.approx(0.0, abs=1e-6) and float(x.max()) == pytest.approx(1.0, abs=1e-3)
    rows, cols = torch.nonzero(x > 0.5, as_tuple=True)
    assert int(rows.max() - rows.min() + 1) >= 19 and int(cols.max() - cols.min() + 1) <= 6  # the bar, tall and thin


def test_uneven_light_is_subtracted_leaving_the_ink_on_black() -> None:
    stroke = torch.zeros(60, 45, dtype=torch.bool)
    stroke[12:48, 20:26] = True  # a "1", 6 px wide: a sixth of the width, narrower than the third the filter spans
    light = torch.linspace(0.35, 1.0, 45).expand(60, 45)  # a lamp at the right: the paper from 0.35 to 1.0
    x = pixels(predict.to_mnist(torch.where(stroke, 0.1 * light, light)))
    bar = x > 0.5
    rows, cols = torch.nonzero(bar, as_tuple=True)
    assert int(rows.max() - rows.min() + 1) >= 19 and int(cols.max() - cols.min() + 1) <= 4  # the bar, and only it
    near_bar = torch.nn.functional.max_pool2d(bar[None].float(), 3, stride=1, padding=1)[0] > 0
    assert float(x[~near_bar].max()) < 0.05  # the paper black on both sides, however lit


def test_a_photo_sized_picture_is_prepared_at_a_few_hundred_pixels() -> None:
    import time

    stroke = torch.zeros(4000, 3000, dtype=torch.bool)
    stroke[800:3200, 1300:1700] = True
    start = time.perf_counter()
    x = predict.to_mnist(torch.where(stroke, 0.1, 0.9))
    assert time.perf_counter() - start < 2.0  # at full size the filters alone took minutes
    rows, cols = torch.nonzero(pixels(x) > 0.5, as_tuple=True)
    assert int(rows.max() - rows.min() + 1) >= 19 and int(cols.max() - cols.min() + 1) <= 5


def test_the_ink_is_cropped_fitted_to_20_px_keeping_its_aspect_and_centred_by_its_mass() -> None:
    picture = torch.full((100, 120), 0.9)  # light paper; the digit small, off-centre, 4 times wider than tall
    picture[10:20, 70:110] = 0.5
    picture[10:14, 70:80] = 0.0  # heavier ink at the left end pulls the centre of mass left of the box's centre
    x = pixels(predict.to_mnist(picture))
    rows, cols = torch.nonzero(x > 0.3, as_tuple=True)
    assert int(cols.max() - cols.min() + 1) == 20 and int(rows.max() - rows.min() + 1) == 5  # 40 x 10 -> 20 x 5
    assert centre_of_mass(x) == pytest.approx((13.5, 13.5), abs=0.5)
    box_centre = (float(cols.max() + cols.min()) / 2, float(rows.max() + rows.min()) / 2)
    assert box_centre[0] >= 14.0  # placed by its mass, not its box: the box sits right of the centre


def centre_of_mass(x: torch.Tensor) -> tuple[float, float]:
    weights = x.clamp(min=0)
    grid = torch.arange(28.0)
    return (float((weights.sum(0) * grid).sum() / weights.sum()), float((weights.sum(1) * grid).sum() / weights.sum()))


def _upright_seven() -> Image.Image:
    with Image.open(SEVEN) as image:
        return image.convert("L")


def test_a_transparent_canvas_drawing_reads_as_the_same_digit_on_paper(tmp_path: Path) -> None:
    # An HTML canvas's export: black ink (0, 0, 0) whose alpha is the stroke, on fully transparent black pixels.
    gray = _upright_seven()
    ink = ImageOps.invert(gray)  # 255 where the sample's dark ink is
    canvas = Image.merge("RGBA", (*[Image.new("L", gray.size, 0)] * 3, ink))
    canvas.save(tmp_path / "canvas.png")
    reference = predict.to_mnist(predict.read_gray(SEVEN))
    assert torch.allclose(predict.to_mnist(predict.read_gray(tmp_path / "canvas.png")), reference, atol=0.02)
    # The same drawing in white ink (a dark-mode canvas) lands on black paper instead, and reads the same.
    Image.merge("RGBA", (*[Image.new("L", gray.size, 255)] * 3, ink)).save(tmp_path / "white.png")
    assert torch.allclose(predict.to_mnist(predict.read_gray(tmp_path / "white.png")), reference, atol=0.02)


def test_a_photo_stored_sideways_with_its_exif_orientation_reads_upright(tmp_path: Path) -> None:
    # A phone stores the sensor's pixels and the turn to upright in EXIF tag 0x0112; 6 means "turn 90° clockwise
    # to show", so the stored pixels are the upright picture turned 90° counter-clockwise.
    upright = _upright_seven().convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright.save(tmp_path / "upright.jpg", quality=95)
    read = predict.read_gray(tmp_path / "phone.jpg")
    assert read.shape == predict.read_gray(tmp_path / "upright.jpg").shape
    assert torch.allclose(predict.to_mnist(read), predict.to_mnist(predict.read_gray(tmp_path / "upright.jpg")),
                          atol=0.05)


def drawn(digit: str, pen: int) -> Image.Image:
    """A digit drawn in black with a round-ended pen `pen` px wide on a 200 x 260 white canvas."""
    from PIL import ImageDraw

    strokes = {"7": [[(50, 50), (150, 50), (90, 220)]],
               "4": [[(120, 40), (50, 160), (160, 160)], [(120, 40), (120, 220)]],
               "2": [[(55, 80), (80, 45), (120, 45), (145, 80), (50, 220), (150, 220)]],
               "9": [[(138, 80), (128, 220)]]}[digit]
    image = Image.new("L", (200, 260), 255)
    draw = ImageDraw.Draw(image)
    if digit == "9":
        draw.ellipse((60, 40, 140, 120), outline=0, width=pen)
    for line in strokes:
        draw.line(line, fill=0, width=pen, joint="curve")
    return image


def cropped(image: Image.Image, margin: int) -> Image.Image:
    """The image cropped to its dark ink's bounding box, plus `margin` px of paper on each side."""
    left, top, right, bottom = ImageOps.invert(image).getbbox()
    return image.crop((left - margin, top - margin, right + margin, bottom + margin))


@pytest.mark.parametrize("digit", ["7", "4", "2", "9"])
@pytest.mark.parametrize("pen", [4, 16, 30])
def test_a_digit_cropped_tight_to_its_ink_prepares_as_it_does_with_a_margin(tmp_path: Path, digit: str,
                                                                            pen: int) -> None:
    # Before: the strokes that touch the edge, and a bold pen's strokes wider than a third of the picture's
    # shorter side, were taken for paper and subtracted (a tight bold 7 prepared as a 1).
    page = drawn(digit, pen)
    prepared = {}
    for name, image in (("page", page), ("margin", cropped(page, 20)), ("tight", cropped(page, 0))):
        image.save(tmp_path / f"{name}.png")
        prepared[name] = pixels(predict.to_mnist(predict.read_gray(tmp_path / f"{name}.png")))
    for name in ("margin", "tight"):
        assert (prepared[name] - prepared["page"]).abs().max() < 0.05, name


# Pictures that once ended in a traceback or are easy to get wrong; each gets an answer or one line.
ODD_IMAGES = {
    "one_pixel.png": lambda: Image.new("L", (1, 1), 0),
    "two_by_two.png": lambda: Image.new("L", (2, 2), 255),
    "one_colour.png": lambda: Image.new("RGB", (64, 64), (200, 30, 30)),
    "half_ink.png": lambda: Image.merge("L", [Image.frombytes("L", (30, 30), bytes(
        ([0] * 15 + [255] * 15) * 30))]),
    "noise.png": lambda: Image.frombytes("L", (48, 48), bytes(torch.randint(0, 256, (48 * 48,),
                                         generator=torch.Generator().manual_seed(0)).tolist())),
    "row.png": lambda: Image.frombytes("L", (40, 1), bytes([255] * 15 + [0] * 10 + [255] * 15)),
    "column.png": lambda: Image.frombytes("L", (1, 40), bytes([255] * 15 + [0] * 10 + [255] * 15)),
}


def test_no_picture_ends_in_a_traceback(tmp_path: Path) -> None:
    for name, make in ODD_IMAGES.items():
        make().save(tmp_path / name)
        try:
            x = predict.to_mnist(predict.read_gray(tmp_path / name), name)
        except StageError as exc:
            assert str(exc).startswith(f"{name}: ") and "\n" not in str(exc)
        else:
            assert x.shape == (1, 28, 28) and torch.isfinite(x).all(), name


def test_palette_16_bit_and_cmyk_files_prepare_like_the_8_bit_grey_original(tmp_path: Path) -> None:
    with Image.open(SEVEN) as image:
        grey = image.convert("L")
    grey.convert("P").save(tmp_path / "palette.png")
    grey.convert("I").point(lambda v: v * 257).convert("I;16").save(tmp_path / "sixteen.png")
    grey.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    with Image.open(tmp_path / "sixteen.png") as sixteen:
        assert sixteen.mode.startswith("I")  # the file really is 16-bit
    reference = predict.to_mnist(predict.read_gray(SEVEN))
    for name, tolerance in (("palette.png", 1e-5), ("sixteen.png", 0.02), ("cmyk.jpg", 0.1)):
        assert (predict.to_mnist(predict.read_gray(tmp_path / name)) - reference).abs().max() < tolerance / STD, name


def test_a_batch_answers_every_file_it_can_and_one_line_for_each_it_cannot(tmp_path: Path, capsys,
                                                                           model_file: Path) -> None:
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    (tmp_path / "truncated.png").write_bytes(SEVEN.read_bytes()[: SEVEN.stat().st_size // 2])
    files = [str(SEVEN), str(tmp_path / "blank.png"), str(tmp_path / "truncated.png"), str(SEVEN)]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(predict.main, predict.parser(), [*files, "--model", str(model_file)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1  # some failed
    assert [line.split(": ")[0] for line in out.splitlines()] == [str(SEVEN), str(SEVEN)]
    assert err.splitlines()[0] == (f"error: {tmp_path / 'blank.png'}: no digit found (the image is blank or "
                                   "nearly uniform)")
    assert err.splitlines()[1].startswith(f"error: {tmp_path / 'truncated.png'}: not a readable image (")
    assert len(err.splitlines()) == 2

    with pytest.raises(SystemExit):
        cli.run(predict.main, predict.parser(), [*files, "--model", str(model_file), "--json"])
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == files
    assert ["error" in r for r in results] == [False, True, True, False]
    assert results[0]["digit"] == results[3]["digit"] and "no digit found" in results[1]["error"]
    # Nothing readable at all: exit 2, as a single bad file always did.
    assert refused(capsys, [str(tmp_path / "blank.png"), "--model", str(model_file)]).startswith("error: ")
