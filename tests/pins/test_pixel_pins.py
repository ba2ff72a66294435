"""Pixel pins: the same seed and settings give the same PNGs, for every tab, across refactors.

The pictures in ``tests/pins/`` were recorded on the tiny profile (before the issue-11
redesign) through the same task functions the tabs call. On a CPU of the recording's kind
(``torch.backends.cpu.get_cpu_capability()``) every pixel must be identical. Other CPU kinds
run other float kernels (AMX vs AVX2 ...), which moves ~0.02 % of pixels by 1/255; there the
pin allows a few levels on at most 1 % of the values, far below what any real change of the
picture does.

Re-record (only where an issue asks for different pictures, and say so):
    PFD_RECORD_PINS=1 python -m pytest tests/pins/test_pixel_pins.py
"""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image, ImageDraw

from prompt_free.catalog import TASKS
from prompt_free.engine import Engine
from prompt_free.tasks import (
    CompareSettings,
    ControlSettings,
    ControlSpec,
    EditSettings,
    MultiReferenceSettings,
    Reference,
    TryOnSettings,
    VariationSettings,
    compare,
    edit_with_reference,
    image_variation,
    multi_reference,
    reference_control,
    virtual_tryon,
)
from tests.helpers.app import EXAMPLES, endpoint_calls, pictures
from tests.helpers.models import IP_NAME, tiny_profile_with, write_tiny_ip_adapter
from tests.helpers.pins import MANIFEST, PINS, assert_endpoint_pins, assert_same, capability

RECORD = os.environ.get("PFD_RECORD_PINS") == "1"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The tiny profile plus a tiny IP-Adapter with fixed random weights."""
    path = write_tiny_ip_adapter(tmp_path_factory.mktemp("ip"), seed=0)
    return Engine(tiny_profile_with(ip_adapters={IP_NAME: {"path": str(path)}}), device="cpu")


def _person_and_mask():
    person = Image.open(EXAMPLES / "tryon_person.png").convert("RGB").resize((150, 230), Image.BICUBIC)
    mask = Image.new("L", person.size, 0)
    ImageDraw.Draw(mask).rectangle((40, 70, 110, 140), fill=255)
    return person, mask


def run_tab(engine, tab: str):
    """The pictures one tab makes for fixed inputs and settings: {name: PIL image}."""
    ref = EXAMPLES / "chelsea.jpg"
    if tab == "variation":
        r = image_variation(engine, ref, VariationSettings(width=128, height=96, steps=4, seed=5, num_images=2))
        e = image_variation(engine, EXAMPLES / "coffee.jpg", VariationSettings(
            seecoder="SeeCoder-PA", width=64, height=64, steps=3, seed=7, guidance=3.5, scheduler="Euler a"))
        return {"variation_0": r.images[0], "variation_1": r.images[1], "variation_euler_a": e.images[0]}
    if tab == "control":
        r = reference_control(
            engine, ref,
            [ControlSpec("openpose", EXAMPLES / "pose_standing.png", "use as-is", scale=0.8, start=0.0, end=0.75),
             ControlSpec("canny", EXAMPLES / "coffee.jpg", "preprocess", scale=1.2)],
            ControlSettings(width=128, height=128, steps=4, seed=11),
        )
        auto = reference_control(engine, EXAMPLES / "astronaut.jpg",
                                 [ControlSpec("scribble", EXAMPLES / "scribble_rocket.png")],
                                 ControlSettings(steps=2, seed=2))  # size follows the control image
        return {"control": r.images[0], "control_map_1": r.extras[0], "control_map_2": r.extras[1],
                "control_follow_size": auto.images[0]}
    if tab == "compare":
        r = compare(engine, ref, EXAMPLES / "pose_standing.png", "openpose",
                    settings=CompareSettings(width=64, height=96, steps=3, seed=13, prompt="a cat",
                                             methods=("prompt_free", "dual_controlnet", "ip_adapter"),
                                             ip_adapter_scale=0.7, content_scale=0.9))
        out = {f"compare_{m}": c.image for m, c in r.columns.items()}
        out["compare_side_by_side"] = r.side_by_side
        return out
    if tab == "tryon":
        person, mask = _person_and_mask()
        garment = Image.open(EXAMPLES / "tryon_garment_shirt.png")
        blend = virtual_tryon(engine, person, garment, mask, TryOnSettings(
            steps=3, seed=3, max_side=192, pose_control=False, dilation=3, feather=4, base_model="Tiny SD"))
        inpaint = virtual_tryon(engine, person, garment, mask, TryOnSettings(
            steps=3, seed=4, max_side=128, pose_control=False, num_images=2, base_model="Tiny SD Inpainting"))
        return {"tryon_blend": blend.images[0], "tryon_inpaint_0": inpaint.images[0],
                "tryon_inpaint_1": inpaint.images[1]}
    if tab == "multi_reference":
        _, mask = _person_and_mask()
        average = multi_reference(engine, [Reference(ref), Reference(EXAMPLES / "coffee.jpg", 0.6)],
                                  MultiReferenceSettings(width=96, height=64, steps=3, seed=9))
        regions = multi_reference(engine, [Reference(ref), Reference(EXAMPLES / "coffee.jpg", 1.0, mask)],
                                  MultiReferenceSettings(width=64, height=96, steps=3, seed=10, blend="regions",
                                                         reference_strength=1.5))
        return {"multi_reference_average": average.images[0], "multi_reference_regions": regions.images[0]}
    if tab == "edit":
        photo, mask = _person_and_mask()
        blend = edit_with_reference(engine, photo, mask, ref, EditSettings(
            steps=3, seed=6, max_side=192, dilation=3, feather=4, base_model="Tiny SD"))
        inpaint = edit_with_reference(engine, photo, mask, EXAMPLES / "coffee.jpg", EditSettings(
            steps=3, seed=8, max_side=128, crop_reference=True))  # auto: the inpainting model
        return {"edit_blend": blend.images[0], "edit_inpaint": inpaint.images[0]}
    raise ValueError(tab)


def _record(tab: str, images) -> None:
    PINS.mkdir(exist_ok=True)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    manifest["cpu_capability"] = capability()
    manifest.setdefault("tabs", {})[tab] = sorted(images)
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    for name, img in images.items():
        img.save(PINS / f"{name}.png")


# the pins' name of each task's tab (every task of the one list is pinned)
TABS = {"image_variation": "variation", "reference_control": "control", "multi_reference": "multi_reference",
        "compare": "compare", "edit_with_reference": "edit", "virtual_tryon": "tryon"}


def test_every_task_is_pinned():
    assert sorted(TABS) == sorted(t.name for t in TASKS)


@pytest.mark.parametrize("tab", [TABS[t.name] for t in TASKS])
def test_same_seed_same_settings_give_the_pinned_pngs(engine, tab):
    images = run_tab(engine, tab)
    if RECORD:
        _record(tab, images)
        pytest.skip("pins recorded")
    manifest = json.loads(MANIFEST.read_text())
    assert sorted(images) == manifest["tabs"][tab]
    same_kind = manifest["cpu_capability"] == capability()
    for name, img in images.items():
        assert_same(name, img, same_kind)


# ----------------------------------------------------------------------------- the endpoints
API_MANIFEST = PINS / "api.json"


def test_every_endpoint_keeps_its_name_and_parameters(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    params = {name: [p["parameter_name"] for p in api[name]["parameters"]] for name in endpoint_calls()}
    if RECORD:
        PINS.mkdir(exist_ok=True)
        API_MANIFEST.write_text(json.dumps(params, indent=1) + "\n")
        pytest.skip("API recorded")
    assert params == json.loads(API_MANIFEST.read_text())


@pytest.mark.parametrize("endpoint", ["/" + t.endpoint for t in TASKS])
def test_every_endpoint_gives_the_pinned_pngs(client, endpoint):
    images = pictures(client.predict(*endpoint_calls()[endpoint], api_name=endpoint))
    assert images
    stem = "endpoint_" + endpoint.strip("/")
    if RECORD:
        _record(stem, {f"{stem}_{i}": p for i, p in enumerate(images)})
        pytest.skip("pins recorded")
    assert_endpoint_pins(endpoint, images)
