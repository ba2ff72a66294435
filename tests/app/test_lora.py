"""LoRAs through the app: gradio_client with the new parameters on every endpoint, and the
picker in a real browser (tiny profile plus LoRA files the tests write)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers.app import EXAMPLES, chromium_page, endpoint_calls, running_app
from tests.helpers.lora_files import lora_layers, write_checkpoints, write_kohya, write_peft

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def lora_app(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora_app")
    layers = lora_layers(seed=1)
    files = {"Kohya": write_kohya(d / "kohya.safetensors", layers, alpha=2.0),
             "PEFT": write_peft(d / "peft.safetensors", layers, alpha=2.0)}
    with running_app("tiny", write_checkpoints(d / "checkpoints.yaml", files)) as served:
        yield served


@pytest.fixture(scope="module")
def lora_client(lora_app):
    from gradio_client import Client

    return Client(lora_app[2], verbose=False)


def variation(client, **loras):
    from gradio_client import handle_file

    gallery, info, _ = client.predict(handle_file(str(EXAMPLES / "chelsea.jpg")), "SeeCoder", "Tiny SD", 2.0, 2,
                                      64, 64, 5, False, 1, "DDIM", api_name="/image_variation", **loras)
    return np.asarray(Image.open(gallery[0]["image"]).convert("RGB")), info


def test_variation_endpoint_takes_loras_by_name(lora_client):
    plain, info = variation(lora_client)
    kohya, kohya_info = variation(lora_client, lora_1="Kohya", lora_1_scale=1.0)
    peft, _ = variation(lora_client, lora_2="PEFT", lora_2_scale=1.0)
    assert "LoRA" not in info and "LoRA Kohya x1" in kohya_info
    assert (kohya != plain).mean() > 0.5
    assert np.array_equal(kohya, peft)  # the same weights in the two layouts
    assert np.array_equal(variation(lora_client, lora_1="Kohya", lora_1_scale=0.0)[0], plain)
    assert np.array_equal(variation(lora_client, lora_1="none", lora_1_scale=1.5)[0], plain)
    assert np.array_equal(variation(lora_client)[0], plain)  # after LoRA runs: today's picture


@pytest.mark.parametrize("endpoint", ["/image_variation", "/reference_control", "/compare", "/virtual_tryon"])
def test_every_endpoint_hands_its_loras_to_the_task(lora_client, endpoint):
    """An unknown LoRA on any endpoint gets the task's message listing the known ones."""
    args = endpoint_calls()[endpoint]
    with pytest.raises(Exception) as e:
        lora_client.predict(*args, lora_1="Nope", lora_1_scale=1.0, api_name=endpoint)
    assert "unknown LoRA 'Nope'" in str(e.value) and "Kohya, PEFT" in str(e.value)


def test_scale_out_of_range_is_refused_with_a_message(lora_client):
    with pytest.raises(Exception) as e:
        variation(lora_client, lora_1="Kohya", lora_1_scale=3.0)
    assert "3" in str(e.value) and "2" in str(e.value) and ("maximum" in str(e.value) or "between" in str(e.value))


@pytest.mark.browser
def test_browser_picks_a_lora_and_generates(lora_app, tmp_path):
    engine, demo, url = lora_app
    with chromium_page(url) as page:
        page.locator("#variation-lora").get_by_text("LoRA", exact=True).first.click()
        choice = page.locator("#variation-lora-1 input")
        choice.wait_for(state="visible", timeout=30_000)
        choice.click()
        page.get_by_role("option", name="Kohya", exact=True).click()
        page.locator("#variation-reference input[type=file]").set_input_files(str(EXAMPLES / "astronaut.jpg"))
        page.wait_for_selector("#variation-reference img", timeout=30_000)
        page.locator("#variation-run").click()
        page.wait_for_selector("#variation-gallery img", timeout=240_000)
        page.wait_for_function(
            "() => (document.querySelector('#variation-info') || {}).innerText?.includes('LoRA Kohya')", timeout=60_000)
        page.screenshot(path=str(tmp_path / "variation-lora.png"))
        # every tab has the picker
        for tab, label in (("control", "Reference + ControlNet"), ("multi", "Multi-Reference"),
                           ("compare", "Dual-ControlNet Comparison"), ("edit", "Edit with a Reference"),
                           ("tryon", "Virtual Try-On")):
            page.get_by_role("tab", name=label).click()
            page.locator(f"#{tab}-lora").wait_for(state="visible", timeout=30_000)
    assert engine.load_counts[("loras", "Kohya")] == 1
