"""Saved embeddings and the start from the reference through the app (``gradio_client``, tiny
profile): ``/image_variation``'s appended ``embedding`` gives the reference's picture bit for bit
without the reference, the accordion's save and combine endpoints write loadable files, and
``denoise_strength`` reaches the task (1 = the pinned picture: tests/pins)."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file

from prompt_free import embeddings as E
from tests.helpers.app import EXAMPLES, pictures, variation_args

pytestmark = pytest.mark.timeout(600)


def test_embedding_parameter_replaces_the_reference(client, tmp_path):
    ref = EXAMPLES / "coffee.jpg"
    saved = client.predict(handle_file(str(ref)), "SeeCoder", api_name="/variation_save_embedding")
    loaded = E.load(saved)
    assert loaded.seecoder == "SeeCoder" and loaded.context.shape[:2] == (1, 148)
    args = variation_args(ref, steps=2, size=64)
    today = [np.asarray(p) for p in pictures(client.predict(*args, api_name="/image_variation"))]
    no_ref = [None, *args[1:]]
    used = [np.asarray(p) for p in pictures(client.predict(*no_ref, embedding=handle_file(saved),
                                                           api_name="/image_variation"))]
    assert len(today) == len(used) == 1 and np.array_equal(today[0], used[0])
    combined = client.predict([handle_file(saved), handle_file(saved)], "1, 1", "subtract",
                              api_name="/variation_combine_embeddings")
    assert not E.load(combined).context.any()


def test_denoise_strength_and_init_image_reach_the_task(client):
    args = variation_args(EXAMPLES / "coffee.jpg", steps=4, size=64)
    today = np.asarray(pictures(client.predict(*args, api_name="/image_variation"))[0])
    low = np.asarray(pictures(client.predict(*args, denoise_strength=0.5, api_name="/image_variation"))[0])
    init = np.asarray(pictures(client.predict(*args, denoise_strength=0.5, init_image=handle_file(str(EXAMPLES / "chelsea.jpg")),
                                              api_name="/image_variation"))[0])
    assert not np.array_equal(today, low) and not np.array_equal(low, init)
    with pytest.raises(Exception, match="less than minimum value 0.01|denoise strength must be between"):
        client.predict(*args, denoise_strength=0, api_name="/image_variation")
