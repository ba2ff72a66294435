"""The Comparison tab as users and API clients reach it: in-process server (tiny profile),
gradio_client on the named ``/compare`` endpoint, and a real Chromium browser."""

from __future__ import annotations

import pytest

from tests.helpers.app import EXAMPLES, chromium_page, running_app, wait_for_result_or_error

pytestmark = pytest.mark.timeout(600)

S = 64
STRUCTURE = EXAMPLES / "canny_house.png"  # a ready canny map
REFERENCE = None  # a small copy of astronaut.jpg (SeeCoder encodes at native size: keep it cheap)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from PIL import Image

    global REFERENCE
    REFERENCE = tmp_path_factory.mktemp("ref") / "astronaut_small.png"
    Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((S, S), Image.BICUBIC).save(REFERENCE)
    with running_app("tiny") as served:
        yield served


def compare_args(reference="default", structure=STRUCTURE, *, pf=True, dual=True, ip=False, seed=3, steps=2,
                 size=S, prompt="", negative=""):
    from gradio_client import handle_file

    reference = REFERENCE if reference == "default" else reference
    return [
        handle_file(str(reference)) if reference else None,
        handle_file(str(structure)) if structure else None,
        "canny", "use as-is", "canny", "SeeCoder", "Tiny SD",
        pf, dual, ip, prompt, negative, 1.0, 1.0,
        2.0, steps, size, size, seed, False, "DDIM",
    ]


def test_compare_endpoint_prompt_free_only_does_no_baseline_work(app):
    from gradio_client import Client
    from PIL import Image

    engine, demo, url = app
    client = Client(url, verbose=False)
    out = client.predict(*compare_args(dual=False), api_name="/compare")
    pf, dual, ip, pf_stats, dual_stats, ip_stats, diff, download, maps, seed = out
    assert Image.open(pf).size == (S, S) and dual is None and ip is None
    assert "wall" in pf_stats and "n/a on CPU" in pf_stats
    assert "switched off" in dual_stats and "switched off" in ip_stats
    assert Image.open(download).size == (S, S)
    assert not any(k[0] == "text_encoder" for k in engine.load_counts)  # column 2 off: no text encoder
    assert ("controlnets", "shuffle") not in engine.load_counts


def test_compare_endpoint_returns_columns_stats_differences_and_download(app):
    from gradio_client import Client
    from PIL import Image

    engine, demo, url = app
    client = Client(url, verbose=False)
    out = client.predict(*compare_args(), api_name="/compare")
    pf, dual, ip, pf_stats, dual_stats, ip_stats, diff, download, maps, seed = out
    assert seed == 3
    assert Image.open(pf).size == (S, S) and Image.open(dual).size == (S, S)
    assert ip is None and "switched off" in ip_stats  # no IP-Adapter configured in the tiny profile
    for stats in (pf_stats, dual_stats):
        assert "wall" in stats and "peak GPU memory n/a on CPU" in stats
    assert "Text encoder" in diff and "yes (CLIP)" in diff and "content: shuffle, structure: canny" in diff
    assert "same loaded objects" in diff
    assert str(download).endswith(".png") and Image.open(download).size == (2 * S + 8, S)
    assert len(maps) == 2  # the structure map and the shuffled reference
    assert sum(v for k, v in engine.load_counts.items() if k[0] == "text_encoder") == 1


@pytest.mark.parametrize(
    "case, patch, message",
    [
        ("missing reference", {"reference": None}, "no reference image given: please upload the image whose content"),
        ("missing structure", {"structure": None}, "no structure image given"),
        ("all columns off", {"pf": False, "dual": False}, "All columns are switched off: tick at least one method to compare."),
        ("ip not configured", {"ip": True}, "The IP-Adapter column is not available: no IP-Adapter is configured"),
    ],
)
def test_compare_bad_inputs_give_clear_errors(app, case, patch, message):
    from gradio_client import Client

    client = Client(app[2], verbose=False)
    with pytest.raises(Exception) as err:
        client.predict(*compare_args(**patch), api_name="/compare")
    assert message in str(err.value), (case, str(err.value))


@pytest.mark.browser
def test_browser_upload_two_images_and_compare(app, tmp_path):
    engine, demo, url = app
    with chromium_page(url) as page:
        page.get_by_role("tab", name="Comparison").click()
        page.wait_for_selector("#compare-reference", state="visible", timeout=30_000)
        # no IP-Adapter configured: its column is hidden and a note says why
        assert page.locator("#compare-ip-note").is_visible()
        assert "not configured" in page.locator("#compare-ip-note").inner_text()
        assert not page.locator("#compare-image-ip").is_visible()
        page.locator("#compare-reference input[type=file]").set_input_files(str(REFERENCE))
        page.wait_for_selector("#compare-reference img", timeout=30_000)
        # a ready pose map for the default (openpose) ControlNet; the size follows it (small in tiny)
        page.locator("#compare-structure input[type=file]").set_input_files(str(EXAMPLES / "pose_standing.png"))
        page.wait_for_selector("#compare-structure img", timeout=30_000)
        steps = page.locator("#compare-steps input[type=number]")
        steps.fill("3")
        steps.press("Enter")
        page.wait_for_timeout(300)
        page.locator("#compare-run").click()
        wait_for_result_or_error(page, "#compare-image-prompt-free img")
        wait_for_result_or_error(page, "#compare-image-dual img")
        wait_for_result_or_error(page, "#compare-download a", 60)
        assert "wall" in page.locator("#compare-stats-prompt-free").inner_text()
        assert "wall" in page.locator("#compare-stats-dual").inner_text()
        diff = page.locator("#compare-differences").inner_text()
        assert "Text encoder" in diff and "3 steps" in diff
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)


def test_compare_takes_the_preprocessor_by_name_as_the_control_tab(app):
    """One preprocessor picker in both tabs: the same choices, and the API takes the names."""
    from gradio_client import Client
    import numpy as np
    from PIL import Image

    engine, demo, url = app
    pickers = {c.elem_id: c for c in demo.blocks.values() if getattr(c, "elem_id", None) in
               ("control-preprocessor-1", "compare-preprocessor")}
    assert len(pickers) == 2
    assert pickers["compare-preprocessor"].choices == pickers["control-preprocessor-1"].choices
    assert ("Canny edges [canny]", "canny") in pickers["compare-preprocessor"].choices
    args = compare_args(structure=EXAMPLES / "coffee.jpg", dual=False)
    args[3], args[4] = "preprocess", "canny"
    out = Client(url, verbose=False).predict(*args, api_name="/compare")
    maps = out[8]
    assert len(maps) == 1  # the canny map (no shuffled reference: Dual-ControlNet is off)
    edges = np.asarray(Image.open(maps[0]["image"]).convert("L"))
    assert set(np.unique(edges)) <= {0, 255} and edges.max() == 255


def test_compare_endpoint_takes_the_official_preprocessor_names_and_refuses_unknown_ones(client):
    """/compare has always accepted the official demo's detector names (aliases); an unknown
    name in preprocess mode gets the task's message listing the known ones."""
    args = compare_args(dual=False)
    args[4] = "openpose_withface"  # alias of openpose_face; unused in 'use as-is' mode
    images = client.predict(*args, api_name="/compare")
    assert images[0] is not None
    args[3], args[4] = "preprocess", "no-such-detector"
    with pytest.raises(Exception) as err:
        client.predict(*args, api_name="/compare")
    assert "unknown preprocessor 'no-such-detector'; choose one of: canny" in str(err.value), str(err.value)
