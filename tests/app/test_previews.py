"""Live previews in the app (prompt_free/app/previews.py): every generating endpoint takes ``previews`` last (default
on); with it the result gallery shows captioned previews while the run goes on and the final pictures
are the same as without; preview files are tracked for the cache cleanup; ``--no-previews`` hides the
checkbox and turns the work off; the browser sees a preview, then the final picture."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, chromium_page

pytestmark = pytest.mark.timeout(600)

ENDPOINTS = ("/image_variation", "/reference_control", "/multi_reference", "/compare", "/edit_reference",
             "/virtual_tryon")
# Long enough (tiny profile, 128 px) that the endpoint's generator, which wakes every 0.2 s, sees previews.
STEPS = 30


def variation_args(steps=STEPS, size=128, seed=5):
    from gradio_client import handle_file

    return [handle_file(str(EXAMPLES / "chelsea.jpg")), "SeeCoder", "Tiny SD", 2.0, steps, size, size, seed, False, 2,
            "DDIM"]


def digest(gallery) -> str:
    h = hashlib.sha256()
    for item in gallery:
        h.update(np.asarray(Image.open(item["image"]).convert("RGB")).tobytes())
    return h.hexdigest()


def preview_galleries(outputs) -> list:
    """The galleries among a job's intermediate outputs whose captions say "preview"."""
    found = []
    for out in outputs:
        gallery = out[0] if isinstance(out, (list, tuple)) and out else None
        if isinstance(gallery, list) and gallery and all(
                isinstance(item, dict) and str(item.get("caption") or "").startswith("preview · ") for item in gallery):
            found.append(gallery)
    return found


def test_every_generating_endpoint_takes_previews_last_with_default_on(client):
    """``previews`` ends the published parameters; only optional ones appended since follow it."""
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ENDPOINTS:
        params = api[name]["parameters"]
        at = [p["parameter_name"] for p in params].index("previews")
        assert params[at]["parameter_has_default"] and params[at]["parameter_default"] is True, name
        assert all(p["parameter_has_default"] for p in params[at + 1:]), name


def test_previews_show_in_the_gallery_and_never_change_the_final_pictures(app, client):
    from prompt_free.app.cache_files import app_files

    engine, demo, url = app
    tracked_before = set(app_files(demo.GRADIO_CACHE))
    job = client.submit(*variation_args(), api_name="/image_variation")  # previews left out: on
    gallery, info, seed = job.result()
    shown = preview_galleries(job.outputs())
    assert shown, "no preview reached the client"
    steps = [int(item["caption"].split("step ")[1].split(" of ")[0]) for g in shown for item in g]
    assert all(0 < s < STEPS and s % 5 == 0 for s in steps), steps
    assert all(item["caption"].endswith(f" of {STEPS}") for g in shown for item in g)
    assert all(len(g) == 2 for g in shown)  # one per image of the run
    assert not any(str(item.get("caption") or "").startswith("preview") for item in gallery)
    # every preview picture Gradio saved is tracked for the cleanup, like the final ones
    new = set(app_files(demo.GRADIO_CACHE)) - tracked_before
    assert len(new) >= 2 * len(shown) + len(gallery)

    job_off = client.submit(*variation_args(), api_name="/image_variation", **{"previews": False})
    gallery_off, _, _ = job_off.result()
    assert not preview_galleries(job_off.outputs())
    assert digest(gallery_off) == digest(gallery)


def test_no_previews_hides_the_checkbox_and_does_no_preview_work(monkeypatch):
    import app as app_module
    from prompt_free.previews import showing
    from prompt_free.tasks import VariationSettings, image_variation

    assert app_module.parse_args(["--no-previews"]).previews is False
    assert app_module.parse_args([]).previews is None
    for engine, demo in (app_module.create_app("tiny", previews=False), _with_env(monkeypatch, app_module)):
        boxes = [b for b in demo.blocks.values() if str(getattr(b, "elem_id", "") or "").endswith("-previews")]
        assert len(boxes) == 6 and all(b.visible is False and b.value is False for b in boxes)
        seen = []
        with showing(seen.append):
            image_variation(engine, Image.open(EXAMPLES / "chelsea.jpg"), VariationSettings(steps=6, width=64, height=64))
        assert seen == [] and "preview_decoder" not in {r["kind"] for r in engine.memory_report()}
    monkeypatch.delenv("PFD_PREVIEWS")
    engine, demo = app_module.create_app("tiny")
    boxes = [b for b in demo.blocks.values() if str(getattr(b, "elem_id", "") or "").endswith("-previews")]
    assert len(boxes) == 6 and all(b.visible is True and b.value is True for b in boxes)


def _with_env(monkeypatch, app_module):
    monkeypatch.setenv("PFD_PREVIEWS", "0")
    return app_module.create_app("tiny")


def test_zerogpu_hides_the_previews(monkeypatch):
    from prompt_free.engine import Engine
    from prompt_free.app.previews import available

    engine = Engine.from_profile("tiny", device="cpu")
    assert available(engine)
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    assert not available(engine)


@pytest.mark.browser
def test_browser_sees_a_preview_then_the_final_picture(app):
    engine, demo, url = app
    with chromium_page(url) as page:
        page.locator("#variation-reference input[type=file]").set_input_files(str(EXAMPLES / "coffee.jpg"))
        page.wait_for_selector("#variation-reference img", timeout=30_000)
        steps = page.locator("#variation-steps input[type=number]")
        steps.fill("60")
        steps.press("Enter")
        assert page.locator("#variation-previews input[type=checkbox]").is_checked()
        page.locator("#variation-run").click()
        page.wait_for_function(
            "() => (document.querySelector('#variation-gallery') || {}).innerText?.includes('preview · step')",
            timeout=240_000)
        assert page.locator("#variation-gallery img").count() >= 1
        caption = page.locator("#variation-gallery").inner_text()
        assert "of 60" in caption, caption
        # then the final picture: no preview caption left, the picture stays
        page.wait_for_function(
            "() => { const g = document.querySelector('#variation-gallery');"
            " return g && g.querySelector('img') && !g.innerText.includes('preview'); }", timeout=240_000)
        page.wait_for_function(
            "() => (document.querySelector('#variation-info') || {}).innerText?.includes('seed')", timeout=60_000)
