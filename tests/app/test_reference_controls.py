"""The reference window and the negative reference through ``gradio_client`` (issue 26, controls 1
and 2): appended parameters of every endpoint (after ``previews``); their neutral values give the
picture of a call that leaves them out, bit for bit; each changes the picture; the negative image
is an upload like the other images, recorded in the PNG by name and hash; bad values are clear."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prompt_free.catalog import TASKS
from tests.helpers.app import EXAMPLES, endpoint_calls, pictures

pytestmark = pytest.mark.timeout(900)

APPENDED = ["reference_start", "reference_end", "negative_image", "negative_strength", "negative_mode"]


def test_every_endpoint_takes_them_after_previews(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for task in TASKS:
        names = [p["parameter_name"] for p in api["/" + task.endpoint]["parameters"]]
        after = names[names.index("previews") + 1:]
        assert [n for n in after if n in APPENDED] == APPENDED, task.endpoint


def _variation(client, **kw):
    out = client.predict(*endpoint_calls()["/image_variation"], api_name="/image_variation", **kw)
    return [np.asarray(p) for p in pictures(out)], out


def test_neutral_values_are_the_plain_call_and_each_control_changes_the_picture(client):
    from gradio_client import handle_file
    from PIL import Image

    plain, _ = _variation(client)
    neutral, _ = _variation(client, reference_start=0.0, reference_end=1.0, negative_image=None,
                            negative_strength=1.0, negative_mode="none")
    assert len(plain) == 2 and all(np.array_equal(a, b) for a, b in zip(neutral, plain))
    negative = handle_file(str(EXAMPLES / "chelsea.jpg"))
    zero, _ = _variation(client, negative_image=negative, negative_strength=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(zero, plain))  # strength 0: no negative
    for kw in (dict(reference_start=0.5), dict(negative_mode="noise"), dict(negative_image=negative)):
        changed, out = _variation(client, **kw)
        assert not np.array_equal(changed[0], plain[0]), kw
    rec = json.loads(Image.open(out[0][0]["image"]).info["prompt-free"])  # the negative image's run
    assert rec["settings"]["negative_image"]["name"] == "chelsea.jpg" and "path" not in rec["settings"]["negative_image"]
    assert rec["settings"]["negative_image"]["sha256"]
    assert "negative reference image" in out[1]  # the info line says so


def test_a_window_that_ends_before_it_starts_is_a_clear_message(client):
    with pytest.raises(Exception, match=r"reference_start \(0.8\) must be below reference_end \(0.2\)"):
        client.predict(*endpoint_calls()["/image_variation"], api_name="/image_variation",
                       reference_start=0.8, reference_end=0.2)


@pytest.mark.parametrize("endpoint", ["/" + t.endpoint for t in TASKS if t.endpoint != "image_variation"])
def test_every_other_endpoint_applies_them(client, endpoint):
    """A window with the noise negative changes every tab's picture (the comparison: its
    Prompt-Free column; try-on: the garment's context)."""
    args = endpoint_calls()[endpoint]
    plain = pictures(client.predict(*args, api_name=endpoint))
    changed = pictures(client.predict(*args, api_name=endpoint, reference_end=0.5, negative_mode="noise"))
    assert len(changed) == len(plain)
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(changed, plain))
