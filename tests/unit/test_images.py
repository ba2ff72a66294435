"""prompt_free.images, the one image opener (load_image, to_rgb): every odd input image becomes
RGB of the same size, or a clear ``InputImageError`` (the rules detectors and tasks rely on)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prompt_free.errors import InputImageError
from prompt_free.images import load_image, to_rgb


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 0))  # fully transparent red -> white
    assert np.asarray(to_rgb(rgba)).tolist() == np.full((6, 8, 3), 255).tolist()
    half = Image.new("RGBA", (8, 6), (0, 0, 0, 128))  # half-transparent black on white
    assert abs(int(np.asarray(to_rgb(half))[0, 0, 0]) - 127) <= 1
    la = Image.new("LA", (8, 6), (0, 0))
    assert np.asarray(to_rgb(la)).min() == 255
    pt = Image.new("P", (8, 6), 3)
    pt.putpalette([0, 0, 0] * 256)
    pt.info["transparency"] = 3  # transparent palette entry -> white
    assert np.asarray(to_rgb(pt)).min() == 255


def test_high_depth_images_are_scaled_to_8_bits():
    i16 = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert i16.mode.startswith("I;16")
    assert np.asarray(to_rgb(i16))[0, :, 0].tolist() == [0, 128, 255]
    i32 = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert i32.mode == "I"
    assert np.asarray(to_rgb(i32))[0, :, 0].tolist() == [0, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert f.mode == "F"
    assert np.asarray(to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]


def test_colour_modes():
    cmyk = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # red
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]
    p = Image.new("P", (8, 6))
    p.putpalette([0, 0, 255] * 256)
    assert np.asarray(to_rgb(p))[0, 0].tolist() == [0, 0, 255]
    one = Image.new("1", (8, 6), 1)
    assert np.asarray(to_rgb(one)).min() == 255


@pytest.mark.parametrize("mode", ["RGBA", "LA", "I;16", "I", "F", "CMYK", "P", "1", "L", "YCbCr", "HSV", "LAB"])
def test_every_mode_gives_rgb_of_the_same_size(mode):
    img = Image.new(mode, (8, 6))
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == img.size, mode


def test_numpy_arrays():
    assert load_image(np.zeros((5, 4), np.uint8)).size == (4, 5)
    assert load_image(np.zeros((5, 4, 4), np.uint8)).mode == "RGB"
    assert np.asarray(load_image(np.full((2, 2), True))).min() == 255  # bool: True is white
    assert np.asarray(load_image(np.full((2, 2, 3), 0.5)))[0, 0, 0] == 128  # float in [0, 1]
    assert np.asarray(load_image(np.full((2, 2), 65535, np.uint16)))[0, 0, 0] == 255  # 16-bit


def test_missing_or_unusable_images():
    with pytest.raises(InputImageError, match="no image given"):
        load_image(None)
    with pytest.raises(InputImageError, match="file 'not an image' does not exist"):
        load_image("not an image")
    with pytest.raises(InputImageError, match="is empty"):
        load_image(Image.new("RGB", (0, 0)))
    with pytest.raises(InputImageError, match=r"shape \(2, 3, 7\) is not an image"):
        load_image(np.zeros((2, 3, 7), np.uint8))
    with pytest.raises(InputImageError, match="NaN or infinite"):
        load_image(np.full((2, 2), np.nan))
    with pytest.raises(InputImageError, match="could not be read as an image"):
        load_image(b"not a png")


# ----------------------------------------------------------------------------- uploads
@pytest.mark.parametrize("name, reason", [
    ("empty", "empty file"),
    ("text", "not an image file"),
    ("truncated_jpeg", "the file is truncated"),
    ("svg", "an SVG drawing"),
    ("bomb_header", "too many pixels: its header claims"),
    ("10000x10000", "too many pixels: 10000x10000"),
])
def test_unreadable_files_give_the_reason(tmp_path, name, reason):
    from tests.helpers import uploads as U

    path = U.write(tmp_path, name)
    for source in (path, str(path), path.read_bytes()):
        with pytest.raises(InputImageError) as err:
            load_image(source, "control image 1")
        assert str(err.value).startswith(f"control image 1 could not be read as an image ({reason}"), str(err.value)
        assert str(tmp_path) not in str(err.value)


def test_a_missing_file_is_named_without_its_directory(tmp_path):
    with pytest.raises(InputImageError) as err:
        load_image(tmp_path / "gone.png", "mask image")
    assert str(err.value) == "mask image file 'gone.png' does not exist"


def test_a_transparent_png_reaches_seecoder_white_where_it_was_transparent(tmp_path):
    from prompt_free.images import prepare_reference
    from tests.helpers import uploads as U

    rgba = U.rgba_photo((64, 64))
    rgba.save(tmp_path / "rgba.png")
    ref = np.asarray(prepare_reference(tmp_path / "rgba.png"))
    assert ref[16:, :32].min() == 255  # alpha 0 (RGB 0 under it): white, not black
    expected = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    assert np.array_equal(ref, np.asarray(expected))


def test_odd_files_open_by_the_rules(tmp_path):
    from tests.helpers import uploads as U

    grey = np.asarray(load_image(U.write(tmp_path, "grey16")))
    assert grey.max() == 255 and grey.min() == 0  # scaled, not saturated
    assert 100 < grey[32, 32, 0] < 155
    gif = load_image(U.write(tmp_path, "animated_gif"))
    assert np.asarray(gif)[5, 5].tolist() == [255, 0, 0]  # the first frame
    assert load_image(U.write(tmp_path, "exif_rotated")).size == (48, 64)  # upright per EXIF
    assert load_image(U.write(tmp_path, "cmyk_jpeg")).mode == "RGB"
    assert load_image(U.write(tmp_path, "palette")).mode == "RGB"
    assert np.asarray(load_image(U.write(tmp_path, "transparent"))).min() == 255
