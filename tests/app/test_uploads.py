"""Uploads as API clients send them: every odd or broken file, to every image input of every
endpoint, gets a result or a clear error that names the input (never a bare "Error"), and the
server keeps serving; the upload size limit; the comparison's download in Gradio's cache.

The files come from ``tests/helpers/uploads.py``. Each tab's main input gets every file; every
other image input gets the corrupt, empty and bomb files (``CORE``). Tiny profile, 1 step, 64 px.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import uploads as U
from tests.helpers.app import EXAMPLES

pytestmark = pytest.mark.timeout(900)

S = 64
POSE = EXAMPLES / "pose_standing.png"
CANNY = EXAMPLES / "canny_house.png"
PERSON = EXAMPLES / "tryon_person.png"
GARMENT = EXAMPLES / "tryon_garment_shirt.png"
MASK = EXAMPLES / "tryon_person_mask.png"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    good = folder / "reference.png"
    U.photo((S, S)).save(good)
    return folder, good


def _f(p):
    from gradio_client import handle_file

    return handle_file(str(p)) if p else None


def variation(files, reference=None):
    return "/image_variation", [_f(reference or files[1]), "SeeCoder", "Tiny SD", 2.0, 1, S, S, 3, False, 1, "DDIM"]


def control(files, reference=None, image1=POSE, image2=None):
    return "/reference_control", [
        _f(reference or files[1]), "SeeCoder", "Tiny SD",
        "openpose", _f(image1), "use as-is", "openpose_full", 1.0, 0.0, 1.0,
        image2 is not None, "depth", _f(image2), "use as-is", "depth", 1.0, 0.0, 1.0,
        False, 2.0, 1, S, S, 3, False, 1, "DDIM",
    ]


def compare(files, reference=None, structure=CANNY):
    return "/compare", [
        _f(reference or files[1]), _f(structure), "canny", "use as-is", "canny", "SeeCoder", "Tiny SD",
        True, False, False, "", "", 1.0, 1.0, 2.0, 1, S, S, 3, False, "DDIM",
    ]


def multi(files, reference_1=None, reference_3=None, mask_2=None, image1=None):
    """Regions of two or three references (mask 2: the photo's bright part), with a ControlNet when
    ``image1`` is given."""
    good = files[1]
    return "/multi_reference", [
        _f(reference_1 or good), _f(good), _f(reference_3), None, 1.0, 1.0, 1.0, 1.0,
        None, _f(mask_2 or good), _f(good) if reference_3 else None, None, "regions", "SeeCoder", "Tiny SD",
        image1 is not None, "openpose", _f(image1), "use as-is", "openpose_full", 1.0, 0.0, 1.0,
        False, "depth", None, "use as-is", "depth", 1.0, 0.0, 1.0,
        False, 2.0, 1, S, S, 3, False, 1, "DDIM",
    ]


def tryon(files, person=PERSON, garment=GARMENT, mask=MASK):
    return "/virtual_tryon", [_f(person), _f(garment), _f(mask), "mask image", "SeeCoder", "auto", 2, 3, True, False,
                              2.0, 1, 4, False, 1, "DDIM", S]


def edit(files, photo=None, reference=None, mask=MASK):
    # the try-on mask on the S x S photo: another size and aspect ratio, resized with a note
    return "/edit_reference", [_f(photo or files[1]), _f(reference or files[1]), _f(mask), "SeeCoder", "auto", 2, 3,
                               False, 2.0, 1, 4, False, 1, "DDIM", S]


# (endpoint builder, its image input, how messages name that input, the files it gets)
INPUTS = [
    (variation, "reference", "reference image", U.ALL),
    (control, "reference", "reference image", U.CORE),
    (control, "image1", "control image 1", U.ALL),
    (control, "image2", "control image 2", U.CORE),
    (multi, "reference_1", "reference image 1", U.ALL),
    (multi, "reference_3", "reference image 3", U.CORE),
    (multi, "mask_2", "mask 2", U.ALL),
    (multi, "image1", "control image 1", U.CORE),
    (compare, "reference", "reference image", U.CORE),
    (compare, "structure", "structure image", U.ALL),
    (tryon, "person", "person photo", U.ALL),
    (tryon, "garment", "garment image", U.CORE),
    (tryon, "mask", "mask image", U.ALL),
    (edit, "photo", "photo", U.CORE),
    (edit, "reference", "reference image", U.CORE),
    (edit, "mask", "mask image", U.CORE),
]
CASES = [pytest.param(build, arg, what, name, id=f"{build.__name__}-{arg}-{name}")
         for build, arg, what, names in INPUTS for name in names]


@pytest.mark.parametrize("build, arg, what, name", CASES)
def test_every_upload_gets_a_result_or_a_clear_error_naming_the_input(client, files, build, arg, what, name):
    path = U.write(files[0], name)
    api_name, args = build(files, **{arg: path})
    try:
        result = client.predict(*args, api_name=api_name)
    except Exception as e:  # noqa: BLE001 - the message is what is tested
        message = str(e)
        assert what in message, (name, message)
        assert "Unexpected error" not in message and str(files[0]) not in message, (name, message)
        if name in U.UNREADABLE:
            assert f"{what} could not be read as an image (" in message, (name, message)
        return
    assert name not in U.UNREADABLE, f"{name} was accepted as the {what}"
    assert _one_image(result).size > 0


def _one_image(result):
    first = result[0]
    return np.asarray(Image.open(first[0]["image"] if isinstance(first, list) else first).convert("RGB"))


@pytest.mark.parametrize("build, arg", [(variation, "reference"), (control, "image1"), (tryon, "mask"),
                                         (edit, "photo")], ids=lambda b: getattr(b, "__name__", b))
def test_an_eps_upload_is_refused_at_once_and_never_starts_ghostscript(client, files, build, arg):
    from tests.helpers import formats as F

    api_name, args = build(files, **{arg: U.write(files[0], "eps")})
    start = time.monotonic()
    with F.watching_for_gs() as seen, pytest.raises(Exception, match="PostScript, EPS or PDF document"):
        client.predict(*args, api_name=api_name)
    assert seen == [] and time.monotonic() - start < 10  # a refusal, not a run: the tiny app answers in ms


@pytest.mark.parametrize("build", [variation, control, multi, compare, tryon, edit], ids=lambda b: b.__name__)
def test_the_server_keeps_serving_after_the_bad_uploads(client, files, build):
    api_name, args = build(files)
    assert _one_image(client.predict(*args, api_name=api_name)).size > 0


def test_an_editor_layer_that_cannot_be_read_names_the_layer(tmp_path):
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData

    from prompt_free.errors import InputImageError
    from prompt_free.app.tryon import editor_mask
    from prompt_free.app.uploads import mask_editor

    editor = mask_editor(type="numpy", image_mode="RGBA")
    for name, reason in (("empty", "empty file"), ("bomb_header", "too many pixels"), ("text", "not an image")):
        path = U.write(tmp_path, name)
        value = editor.preprocess(EditorData(background=None, layers=[FileData(path=str(path))], composite=None))
        assert value["layers"] == [str(path)]  # passed on undecoded
        with pytest.raises(InputImageError, match=f"mask layer could not be read as an image \\({reason}"):
            editor_mask(value, (S, S))
    painted = tmp_path / "layer.png"
    layer = np.zeros((S, S, 4), np.uint8)
    layer[8:20, 8:20] = (255, 0, 255, 150)
    Image.fromarray(layer, "RGBA").save(painted)
    value = editor.preprocess(EditorData(background=None, layers=[FileData(path=str(painted))], composite=None))
    assert (np.asarray(editor_mask(value, (S, S))) > 127).sum() == 12 * 12


def test_a_transparent_reference_is_white_where_it_was_transparent(client, files, tmp_path):
    """The RGBA reference gives the same pixels as the same picture composited on white."""
    rgba = U.rgba_photo((S, S))
    rgba_path = tmp_path / "rgba.png"
    rgba.save(rgba_path)
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    white_path = tmp_path / "white.png"
    white.save(white_path)
    black_path = tmp_path / "black.png"
    rgba.convert("RGB").save(black_path)  # what dropping the alpha channel gives
    out = {p.stem: _one_image(client.predict(*variation(files, p)[1], api_name="/image_variation"))
           for p in (rgba_path, white_path, black_path)}
    assert np.array_equal(out["rgba"], out["white"])
    assert not np.array_equal(out["rgba"], out["black"])


def test_an_upload_over_the_limit_is_refused_with_a_clear_message(app, tmp_path):
    import httpx

    from prompt_free import settings

    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(30 * 1024 * 1024)
    assert settings.max_upload_size() == 25 * 1024 * 1024
    with open(big, "rb") as f:
        r = httpx.post(app[2] + "gradio_api/upload", files={"files": ("big.png", f, "image/png")}, timeout=120)
    assert r.status_code == 413, (r.status_code, r.text)
    assert "File size exceeded maximum allowed size of 26214400 bytes" in r.text, r.text
    # gradio_client reads the limit from the app's config and refuses before uploading
    from gradio_client import Client

    with pytest.raises(Exception) as err:
        Client(app[2], verbose=False).predict(*variation(None, big)[1], api_name="/image_variation")
    assert "exceeds the maximum file size of 26214400 bytes" in str(err.value), str(err.value)


def test_the_comparison_download_is_written_in_gradios_cache(client, files, app):
    from pathlib import Path

    out = client.predict(*compare(files)[1], api_name="/compare")
    download = next(x for x in out if isinstance(x, str) and "prompt-free-comparison" in x)
    assert Path(download).name.startswith("prompt-free-comparison-seed3")
    demo = app[1]
    cached = [f for s in demo.temp_file_sets for f in s if "prompt-free-comparison-seed3" in f]
    assert cached, "the side-by-side PNG is not among the files Gradio's delete_cache removes"
    cache = Path(next(b.GRADIO_CACHE for b in demo.blocks.values() if getattr(b, "GRADIO_CACHE", None))).resolve()
    assert all(Path(f).resolve().is_relative_to(cache) for f in cached), (cached, cache)
    assert demo.delete_cache == (600, 3600)
