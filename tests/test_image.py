"""Image files: every mode a camera or the web produces comes in as float RGB; outputs are atomic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmdstyle.style.images import fit_within, load_image, resize, resize_cover, save_image
from mmdstyle.style.samples import SAMPLES, load_sample, resolve_image, sample_path


@pytest.fixture
def gradient():
    return np.linspace(0, 1, 5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)


def test_png_round_trip_is_exact_to_8_bits(tmp_path, gradient):
    save_image(tmp_path / "a.png", gradient)
    loaded = load_image(tmp_path / "a.png")
    assert loaded.dtype == np.float32
    assert loaded.shape == (5, 7, 3)
    np.testing.assert_allclose(loaded, np.round(gradient * 255) / 255, atol=1e-7)


def test_grey_images_become_three_equal_channels(tmp_path):
    Image.fromarray(np.array([[0, 128], [255, 64]], np.uint8), mode="L").save(tmp_path / "grey.png")
    loaded = load_image(tmp_path / "grey.png")
    assert loaded.shape == (2, 2, 3)
    np.testing.assert_array_equal(loaded[..., 0], loaded[..., 2])
    assert loaded[1, 0, 0] == 1.0


def test_sixteen_bit_images_keep_their_range(tmp_path):
    values = np.array([[0, 65535], [32768, 1000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    loaded = load_image(tmp_path / "deep.png")
    np.testing.assert_allclose(loaded[..., 1], values / 65535.0, rtol=1e-6)


def test_transparent_pixels_are_laid_over_white(tmp_path):
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    loaded = load_image(tmp_path / "alpha.png")
    np.testing.assert_allclose(loaded[0, 0], [1, 0, 0])
    np.testing.assert_allclose(loaded[0, 1], [1, 1, 1])


def test_exif_rotated_photos_are_turned_upright(tmp_path):
    pixels = np.zeros((2, 4, 3), np.uint8)  # stored 4 wide, 2 high
    pixels[0, 0] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "rotated.jpg").shape == (4, 2, 3)


def test_palette_images_are_converted(tmp_path, gradient):
    Image.fromarray(np.round(gradient * 255).astype(np.uint8)).convert("P").save(tmp_path / "palette.gif")
    assert load_image(tmp_path / "palette.gif").shape == (5, 7, 3)


def test_size_sets_the_longer_side_and_keeps_the_aspect(tmp_path, gradient):
    save_image(tmp_path / "a.png", gradient)
    assert load_image(tmp_path / "a.png", size=14).shape == (10, 14, 3)
    assert fit_within((300, 451), 128) == (85, 128)
    assert resize(gradient, (10, 14)).min() >= 0.0


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda path: None, FileNotFoundError, "no image file"),
        (lambda path: path.write_text("not an image"), ValueError, "not an image mmdstyle can read"),
        (lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20), ValueError, "not an image"),
    ],
)
def test_unreadable_files_are_explained(tmp_path, make, error, message):
    path = tmp_path / "input.png"
    make(path)
    with pytest.raises(error, match=message):
        load_image(path)


def test_a_truncated_jpeg_is_called_damaged_not_an_unknown_format(tmp_path, rng):
    save_image(
        tmp_path / "whole.jpg", rng.uniform(size=(64, 64, 3))
    )  # noise: the data, not the header, dominate
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.jpg: a damaged JPEG file \(.*\); export it again") as error:
        load_image(tmp_path / "cut.jpg")
    assert "Use PNG, JPEG" not in str(error.value)


def test_saving_refuses_unknown_formats_and_bad_arrays_before_writing(tmp_path, gradient):
    with pytest.raises(ValueError, match="cannot tell the image format"):
        save_image(tmp_path / "out.xyz", gradient)
    with pytest.raises(ValueError, match=r"shape \(height, width, 3\)"):
        save_image(tmp_path / "out.png", gradient[..., :2])
    bad = gradient.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_image(tmp_path / "out.png", bad)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_save_leaves_the_old_file_and_no_temporary(tmp_path, gradient, monkeypatch):
    target = tmp_path / "out.png"
    save_image(target, gradient)
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_image(target, 1 - gradient)
    assert target.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["out.png"]


def test_every_bundled_sample_loads_and_is_attributed():
    attribution = (sample_path("chelsea").parent / "ATTRIBUTION.md").read_text()
    for name, (file, _, _) in SAMPLES.items():
        image = load_sample(name)
        assert image.shape[-1] == 3
        assert max(image.shape[:2]) == 256
        assert f"`{file}`" in attribution
    assert resolve_image("sample:coffee") == sample_path("coffee")
    with pytest.raises(ValueError, match="no sample image"):
        sample_path("mona-lisa")


def test_json_reports_write_non_finite_numbers_as_null(tmp_path):
    import json

    from mmdstyle.features.files import write_json

    write_json(tmp_path / "r.json", {"loss": [1.0, float("nan"), float("inf")], "ok": {"x": 2}})
    assert json.loads((tmp_path / "r.json").read_text()) == {"loss": [1.0, None, None], "ok": {"x": 2}}


def test_resize_cover_crops_the_centre_to_the_aspect_then_resizes():
    image = np.zeros((40, 100, 3), np.float32)
    image[:, 30:70] = 1.0  # a white centre band 40 wide: exactly the centred square
    square = resize_cover(image, (20, 20))
    assert square.shape == (20, 20, 3)
    np.testing.assert_allclose(square, 1.0, atol=1e-6)
    tall = resize_cover(np.ones((100, 40, 3), np.float32), (10, 20))
    assert tall.shape == (10, 20, 3)
