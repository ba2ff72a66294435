"""Few-step LoRAs in the app: choosing a LoRA whose checkpoints.yaml entry carries sampler
settings puts them in the tab's sampler controls (which stay editable) and shows its note
("not validated with SeeCoder context") beside the picker; the run uses what the controls say.
Tiny profile, LoRA files the tests write with kohya keys."""

from __future__ import annotations

import pytest

from tests.helpers.app import EXAMPLES, ROOT, chromium_page, running_app
from tests.helpers.models import write_few_step_checkpoints

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def few_step_app(tmp_path_factory):
    with running_app("tiny", write_few_step_checkpoints(tmp_path_factory.mktemp("few_step_app"))) as served:
        yield served


def test_every_tab_connects_its_lora_picker_to_its_sampler_controls(few_step_app):
    """Each tab's LoRA dropdowns have a handler whose outputs are that tab's sampler, steps and
    guidance controls (so a few-step LoRA sets them), and a note beside the picker."""
    from prompt_free.app import TABS
    from prompt_free.app.widgets import lora_notes

    engine, demo, _ = few_step_app
    blocks = demo.blocks
    pickers = [b for b in blocks.values() if (getattr(b, "elem_id", None) or "").endswith("-lora-1")]
    assert len(pickers) == len(TABS)
    labels = {}
    for fn in demo.fns.values():
        triggers = [blocks[t[0]] for t in fn.targets if t[0] in blocks]
        if any(t in pickers for t in triggers) and any(name == "input" for _, name in fn.targets):
            labels[triggers[0].elem_id] = sorted(getattr(o, "label", "") for o in fn.outputs)
    assert sorted(labels) == sorted(p.elem_id for p in pickers)
    assert all(v == ["Guidance", "Sampler", "Steps"] for v in labels.values()), labels
    notes = [b for b in blocks.values() if (getattr(b, "elem_id", None) or "").endswith("-lora-note")]
    assert len(notes) == len(TABS)
    assert lora_notes(engine, "none", "Style") == ""
    assert lora_notes(engine, "Fast", "none").startswith("&#9888; LoRA 'Fast' sets the sampler to LCM, 3 steps, guidance 1")


def test_endpoints_take_no_new_parameter(few_step_app):
    """The sampler settings reach the endpoints through the existing steps/scheduler/guidance."""
    import json

    from gradio_client import Client

    _, _, url = few_step_app
    api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    pinned = json.loads((ROOT / "tests" / "pins" / "api.json").read_text())
    ours = {name: [p["parameter_name"] for p in e["parameters"]] for name, e in api.items()}
    assert {k: ours[k] for k in pinned} == pinned


@pytest.mark.browser
def test_browser_few_step_lora_sets_the_sampler_shows_its_note_and_the_run_uses_it(few_step_app, tmp_path):
    from prompt_free import metadata

    engine, demo, url = few_step_app
    with chromium_page(url) as page:
        page.get_by_role("tab", name="Multi-Reference").click()
        steps = page.locator("#multi-steps input[type=number]")
        guidance = page.locator("#multi-guidance input[type=number]")
        sampler = page.locator("#multi-scheduler input")
        note = page.locator("#multi-lora-note")
        steps.wait_for(state="visible", timeout=30_000)
        assert (steps.input_value(), sampler.input_value(), guidance.input_value()) == ("20", "DDIM", "2")  # the tiny profile's defaults
        page.locator("#multi-lora").get_by_text("LoRA", exact=True).first.click()
        choice = page.locator("#multi-lora-1 input")
        choice.wait_for(state="visible", timeout=30_000)
        choice.click()
        page.locator("#multi-lora-1").get_by_role("option", name="Fast", exact=True).click()
        page.wait_for_function("() => document.querySelector('#multi-steps input[type=number]').value === '3'",
                               timeout=30_000)
        assert sampler.input_value() == "LCM" and guidance.input_value() == "1"
        page.wait_for_function(
            "() => document.querySelector('#multi-lora-note').innerText.includes('not validated with SeeCoder context')",
            timeout=30_000)
        assert "LoRA 'Fast' sets the sampler to LCM, 3 steps, guidance 1" in note.inner_text()
        steps.fill("2")  # still editable after the LoRA set it
        steps.press("Enter")
        # a plain LoRA in the second slot sets nothing; the first one's note stays
        second = page.locator("#multi-lora-2 input")
        second.click()
        page.locator("#multi-lora-2").get_by_role("option", name="Style", exact=True).click()
        page.wait_for_timeout(500)
        assert (steps.input_value(), sampler.input_value()) == ("2", "LCM")
        assert "LoRA 'Fast'" in note.inner_text() and "Style" not in note.inner_text()

        page.locator("#multi-reference-1 input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
        page.wait_for_selector("#multi-reference-1 img", timeout=30_000)
        page.locator("#multi-run").click()
        page.wait_for_selector("#multi-gallery img", timeout=240_000)
        page.wait_for_function(
            "() => (document.querySelector('#multi-info') || {}).innerText?.includes('LoRA Fast')", timeout=60_000)
        src = page.locator("#multi-gallery img").first.get_attribute("src")
        png = tmp_path / "out.png"
        png.write_bytes(page.request.get(src).body())
        page.screenshot(path=str(tmp_path / "multi-few-step.png"))

        # back to no LoRA: the note goes, the controls keep what they have
        for i, box in ((1, choice), (2, second)):  # each slot's own option list (two can be in the page)
            box.click()
            page.locator(f"#multi-lora-{i}").get_by_role("option", name="none", exact=True).click()
        page.wait_for_function("() => !document.querySelector('#multi-lora-note').innerText.includes('Fast')",
                               timeout=30_000)
        assert sampler.input_value() == "LCM"
    rec = metadata.read(png)["settings"]
    assert (rec["scheduler"], rec["steps"], rec["guidance"]) == ("LCM", 2, 1.0)
    assert rec["loras"] == [["Fast", 1.0], ["Style", 1.0]]
