"""The balance through the server (gradio_client): left empty it is the picture of a call that
leaves it out, bit for bit; 0.5 with a prompt changes it and the info line reports the balance
and its calibrated text bias; without a prompt it is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, variation_args

pytestmark = pytest.mark.timeout(600)


def test_balance_through_the_endpoint(app):
    from gradio_client import Client

    client = Client(app[2], verbose=False)

    def picture(**kw):
        out = client.predict(*variation_args(EXAMPLES / "chelsea.jpg", steps=2, size=64), api_name="/image_variation",
                             prompt="a red car", **kw)
        return np.asarray(Image.open(out[0][0]["image"]).convert("RGB")), out[1]

    today, _ = picture()
    off, _ = picture(balance=None)
    assert np.array_equal(off, today)
    half, info = picture(balance=0.5)
    assert not np.array_equal(half, today) and "balance 0.5" in info and "text bias " in info
    with pytest.raises(Exception, match="give a prompt"):
        client.predict(*variation_args(EXAMPLES / "chelsea.jpg", steps=2, size=64), api_name="/image_variation",
                       balance=0.5)
