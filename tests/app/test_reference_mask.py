"""The source mask and framing through the server (gradio_client): neutral values and an
all-white mask give the picture of a call that leaves them out, bit for bit; a half mask and a
framing change it; an empty mask is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, variation_args

pytestmark = pytest.mark.timeout(600)


def _mask(tmp_path, name, fill_left, fill_right):
    a = np.zeros((64, 64), np.uint8)
    a[:, :32], a[:, 32:] = fill_left, fill_right
    path = tmp_path / name
    Image.fromarray(a).save(path)
    return str(path)


def test_reference_mask_and_framing_through_the_endpoint(app, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(app[2], verbose=False)

    def picture(**kw):
        out = client.predict(*variation_args(EXAMPLES / "chelsea.jpg", steps=2, size=64), api_name="/image_variation",
                             **kw)
        return np.asarray(Image.open(out[0][0]["image"]).convert("RGB")), out[1]

    today, _ = picture()
    neutral, _ = picture(reference_mask=None, reference_framing="as-is", reference_max_side=0)
    white, _ = picture(reference_mask=handle_file(_mask(tmp_path, "white.png", 255, 255)))
    assert np.array_equal(neutral, today) and np.array_equal(white, today)
    half, info = picture(reference_mask=handle_file(_mask(tmp_path, "half.png", 255, 0)))
    assert not np.array_equal(half, today) and "source mask: 50% of the reference" in info
    padded, info = picture(reference_framing="pad")
    assert not np.array_equal(padded, today) and "reference framing pad" in info
    with pytest.raises(Exception, match="empty"):
        picture(reference_mask=handle_file(_mask(tmp_path, "black.png", 0, 0)))
