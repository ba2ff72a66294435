"""Block weights and the layout image through the server (gradio_client): neutral values give
the picture of a call that leaves them out, bit for bit; an up-block weight of 0 and a layout
image change it; a bad weight is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, control_args, variation_args

pytestmark = pytest.mark.timeout(600)


def test_block_weights_and_layout_image_through_the_endpoint(app):
    from gradio_client import Client, handle_file

    client = Client(app[2], verbose=False)

    def picture(**kw):
        out = client.predict(*variation_args(EXAMPLES / "chelsea.jpg", steps=2, size=64), api_name="/image_variation",
                             **kw)
        return np.asarray(Image.open(out[0][0]["image"]).convert("RGB")), out[1]

    today, _ = picture()
    neutral, _ = picture(reference_weight_down=1.0, reference_weight_mid=1.0, reference_weight_up=1.0,
                         layout_image=None)
    assert np.array_equal(neutral, today)
    up0, info = picture(reference_weight_up=0.0)
    assert not np.array_equal(up0, today) and "up blocks weight 0" in info
    laid, info = picture(layout_image=handle_file(str(EXAMPLES / "coffee.jpg")))
    assert not np.array_equal(laid, today) and "layout from the layout image" in info
    with pytest.raises(Exception, match="maximum"):  # the slider refuses it first
        picture(reference_weight_mid=3.0)


def test_block_weights_on_reference_control(app):
    from gradio_client import Client, handle_file

    client = Client(app[2], verbose=False)

    def picture(**kw):
        gallery = client.predict(*control_args(), api_name="/reference_control", **kw)[0]
        return np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))

    today = picture()
    assert np.array_equal(picture(reference_weight_down=1.0, layout_image=None), today)
    assert not np.array_equal(picture(reference_weight_down=0.0), today)
    assert not np.array_equal(picture(layout_image=handle_file(str(EXAMPLES / "coffee.jpg"))), today)
