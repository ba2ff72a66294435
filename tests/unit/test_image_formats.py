"""The format allowlist and unreadable EXIF (issue 28, items 1 and 2): every image the project
opens is read as PNG, JPEG, MPO, WebP, GIF, BMP or TIFF only (``PFD_IMAGE_FORMATS`` widens it),
anything else is refused before a decoder runs with a message naming the input, no EPS ever
starts Ghostscript (Debian's ``ghostscript`` is installed by ./test, so a real ``gs`` is there to
be started); EXIF that cannot be parsed means the picture as stored."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from PIL import Image

from prompt_free import metadata
from prompt_free.errors import InputImageError, InvalidSettingError
from prompt_free.metadata import MetadataError
from prompt_free.images import load_image, open_image, open_lazy
from prompt_free.masks import load_mask
from prompt_free.train.data import scan_images
from tests.helpers import cli
from tests.helpers import formats as F

GS = shutil.which("gs")
needs_gs = pytest.mark.skipif(GS is None, reason="Ghostscript is not installed (./test installs Debian's ghostscript)")
NOT_READ = "could not be read as an image ("


def _refused_at_once(call, what):
    """``call()`` raises an InputImageError naming ``what`` within a second, and no gs starts."""
    start = time.monotonic()
    with F.watching_for_gs() as seen:
        with pytest.raises(InputImageError) as err:
            call()
    assert time.monotonic() - start < 1.0
    assert seen == [], "Ghostscript was started"
    assert str(err.value).startswith(f"{what} {NOT_READ}"), str(err.value)
    return str(err.value)


@needs_gs
def test_without_the_allowlist_pillow_would_start_ghostscript_on_the_eps(tmp_path):
    """The control: the EPS really starts `gs` in a bare Pillow (so the watch below can see it)."""
    eps = tmp_path / "spin.eps"
    eps.write_bytes(F.EPS_LOOP)
    code = "import sys; from PIL import Image; Image.open(sys.argv[1]).load()"
    child = subprocess.Popen([sys.executable, "-c", code, str(eps)], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not F.gs_processes(psutil.Process(child.pid)) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
        assert F.gs_processes(psutil.Process(child.pid)), "bare Pillow did not start gs on the EPS"
    finally:
        for p in psutil.Process(child.pid).children(recursive=True):
            p.kill()
        child.kill()
        child.wait()


@pytest.mark.parametrize("name, data", [("spin.eps", F.EPS_LOOP), ("doc.pdf", F.PDF),
                                        ("dos.eps", b"\xc5\xd0\xd3\xc6" + bytes(26) + F.EPS_LOOP)])
def test_eps_and_pdf_are_refused_at_once_by_every_opener_and_no_gs_starts(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    for source in (path, str(path), data):
        message = _refused_at_once(lambda: open_image(source, "reference image"), "reference image")
        assert "PostScript, EPS or PDF" in message and str(tmp_path) not in message
    _refused_at_once(lambda: load_mask(path), "mask image")
    _refused_at_once(lambda: metadata.read(path), "settings PNG")
    _refused_at_once(lambda: open_lazy(io.BytesIO(data), "training image"), "training image")


@needs_gs
def test_an_eps_opened_by_a_caller_is_not_decoded_either(tmp_path):
    path = tmp_path / "spin.eps"
    path.write_bytes(F.EPS_LOOP)
    with Image.open(path) as lazy:  # a bare Pillow open: the header only, gs would run at load()
        message = _refused_at_once(lambda: open_image(lazy, "control image 1"), "control image 1")
    assert "a EPS file" in message


def test_the_cli_refuses_an_eps_reference_at_once(tmp_path, capsys):
    eps = tmp_path / "spin.eps"
    eps.write_bytes(F.EPS_LOOP)
    start = time.monotonic()
    with F.watching_for_gs() as seen:
        code, out, err = cli.run(["generate", "--reference", eps, *cli.TINY, "--out", tmp_path / "out"], capsys)
    assert seen == [] and time.monotonic() - start < 30  # the tiny engine's start included
    assert code == 1 and f"reference image {NOT_READ}a PostScript, EPS or PDF document" in err, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_training_data_skips_an_eps_with_the_reason(tmp_path):
    (tmp_path / "spin.eps").write_bytes(F.EPS_LOOP)
    (tmp_path / "fake.png").write_bytes(F.EPS_LOOP)  # the extension does not matter: the content does
    (tmp_path / "good.png").write_bytes(F.encoded("PNG"))
    with F.watching_for_gs() as seen:
        records, warnings = scan_images([str(tmp_path)])
    assert seen == [] and [r.key for r in records] == [str(tmp_path / "good.png")]
    assert len(warnings) == 1 and "PostScript, EPS or PDF" in warnings[0], warnings


@pytest.mark.parametrize("fmt", F.RARE)
def test_rarely_used_formats_are_refused_unless_the_environment_adds_them(fmt, monkeypatch):
    data = F.encoded(fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself reads it
    monkeypatch.delenv("PFD_IMAGE_FORMATS", raising=False)
    with pytest.raises(InputImageError, match=r"^control image 1 could not be read as an image \(not an image file"):
        open_image(data, "control image 1")
    monkeypatch.setenv("PFD_IMAGE_FORMATS", f" png, {fmt.lower()} ")
    assert open_image(data).size == Image.open(io.BytesIO(data)).size


def test_an_unknown_format_name_in_the_environment_is_refused_by_name(monkeypatch):
    from prompt_free import settings

    monkeypatch.setenv("PFD_IMAGE_FORMATS", "TGA,NOPE")
    with pytest.raises(InvalidSettingError, match="PFD_IMAGE_FORMATS names formats Pillow does not read: NOPE"):
        settings.check_environment()


@pytest.mark.parametrize("fmt", F.ALLOWED)
def test_the_allowed_formats_still_give_their_pixels(fmt):
    data = F.encoded(fmt)
    assert open_lazy(io.BytesIO(data)).format == fmt
    img = open_image(data)
    assert img.size == F.picture().size  # the very pixels Pillow decodes:
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(io.BytesIO(data))))
    if fmt not in ("JPEG", "GIF"):  # lossless: the picture itself
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(F.picture()))


def test_an_mpo_from_a_camera_opens_as_its_first_picture():
    buf = io.BytesIO()
    F.picture().save(buf, format="MPO", save_all=True, append_images=[F.picture().rotate(180)])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    assert open_image(buf.getvalue()).size == F.picture().size


def test_the_settings_loader_reads_png_only():
    for fmt in ("JPEG", "WEBP", "GIF", "TIFF"):
        with pytest.raises(InputImageError, match=r"^settings PNG could not be read as an image \(not an image .*use a PNG\)"):
            metadata.read(F.encoded(fmt))
    with pytest.raises(MetadataError, match="carries no Prompt-Free settings"):
        metadata.read(F.encoded("PNG"))


# ----------------------------------------------------------------------------- EXIF
def test_a_damaged_exif_block_gives_the_picture_as_stored():
    Image.init()  # every plugin loaded: whether Pillow raised depended on which were (issue 28)
    data = F.damaged_exif_jpeg()
    for source in (data, io.BytesIO(data).getvalue()):
        img = open_image(source, "reference image")
        assert img.size == (64, 48)  # not rotated: the orientation could not be trusted
        assert load_image(source).size == (64, 48)
    assert load_mask(data).shape == (48, 64)


@pytest.mark.parametrize("cut", [7, 10, 14, 20, 25])
def test_a_truncated_exif_block_gives_a_picture(cut):
    Image.init()
    img = open_image(F.truncated_exif_jpeg(cut))
    assert img.size in ((64, 48), (48, 64))


def test_readable_exif_still_turns_the_picture():
    exif = Image.Exif()
    exif[0x0112] = 6
    assert open_image(F.encoded_with_exif(F.picture((64, 48)), exif)).size == (48, 64)

