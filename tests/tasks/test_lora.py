"""LoRAs on the base model (issue 14, feature 5): files in both layouts, exactness, restoration
after every kind of run, base-model switches, errors, the registry and the download plan."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from prompt_free.cancel import CancelToken, cancellable
from prompt_free.engine import Engine
from prompt_free.errors import (
    Cancelled,
    CheckpointError,
    ConfigError,
    InvalidSettingError,
    LoraMismatchError,
    UnknownModelError,
)
from prompt_free.lora import LoraPatch, read_lora
from prompt_free.registry import Registry
from prompt_free.tasks import ControlSettings, ControlSpec, VariationSettings, image_variation, reference_control
from tests.helpers.app import EXAMPLES
from tests.helpers.lora_files import RANK, lora_layers, tiny_data_with_loras, write_kohya, write_peft

pytestmark = pytest.mark.timeout(600)

REF = EXAMPLES / "chelsea.jpg"
OTHER_BASE = "Tiny SD (other seed)"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    layers = lora_layers(seed=1)
    return {
        "Kohya": write_kohya(d / "kohya.safetensors", layers, alpha=2.0),  # alpha / rank = 0.5
        "PEFT": write_peft(d / "peft.safetensors", layers, alpha=2.0),
        "PEFT pre-scaled": write_peft(d / "peft_scaled.safetensors", layers, up_factor=0.5),  # no alpha: 1
        "Kohya with text encoder": write_kohya(d / "kohya_te.safetensors", layers, alpha=2.0, text_encoder=True),
        "Other": write_kohya(d / "other.safetensors", lora_layers(seed=2), alpha=RANK),
        "Too wide": write_kohya(d / "wide.safetensors", lora_layers(seed=3, width_extra=8)),
        "Missing layer": write_kohya(d / "missing.safetensors",
                                     {"down_blocks.5.attentions.0.proj_in": lora_layers(seed=4)["down_blocks.0.attentions.0.proj_in"]}),
    }


@pytest.fixture(scope="module")
def engine(files):
    return Engine(Registry.from_dict(tiny_data_with_loras(files), profile="tiny-lora"), device="cpu")


def pixels(engine, loras=(), base_model=None, seed=3, **kw) -> np.ndarray:
    s = VariationSettings(width=64, height=64, steps=2, seed=seed, loras=loras, base_model=base_model, **kw)
    return np.asarray(image_variation(engine, REF, s).images[0])


@pytest.fixture(scope="module")
def today(engine):
    """The no-LoRA pictures of both base models, taken before any LoRA ran."""
    return {None: pixels(engine), OTHER_BASE: pixels(engine, base_model=OTHER_BASE)}


def unet_snapshot(engine, name="Tiny SD"):
    unet = engine.base_model(name).unet
    return {k: (v.data_ptr(), v.clone()) for k, v in unet.state_dict().items()}


def assert_unet_is(engine, snapshot, name="Tiny SD"):
    now = engine.base_model(name).unet.state_dict()
    assert set(now) == set(snapshot)
    for k, (ptr, value) in snapshot.items():
        assert now[k].data_ptr() == ptr, f"{k} was not given back its own tensor"
        assert torch.equal(now[k], value), f"{k} differs after the run"


# ----------------------------------------------------------------------------- exactness
def test_both_layouts_of_the_same_weights_give_the_same_picture_and_it_differs_from_none(engine, today):
    kohya = pixels(engine, (("Kohya", 1.0),))
    assert (kohya != today[None]).mean() > 0.5
    assert np.array_equal(pixels(engine, (("PEFT", 1.0),)), kohya)
    # alpha / rank: kohya alpha 2 at rank 4 is the PEFT file with lora_B halved and no alpha
    assert np.array_equal(pixels(engine, (("PEFT pre-scaled", 1.0),)), kohya)


def test_scale_zero_is_no_lora_and_a_run_after_a_lora_run_is_todays(engine, today):
    snapshot = unet_snapshot(engine)
    assert np.array_equal(pixels(engine, (("Kohya", 0.0),)), today[None])
    assert not np.array_equal(pixels(engine, (("Kohya", 0.7), ("Other", -0.5))), today[None])
    assert np.array_equal(pixels(engine), today[None])
    assert_unet_is(engine, snapshot)


def test_scale_changes_the_picture_and_two_loras_are_not_one(engine, today):
    one = pixels(engine, (("Kohya", 1.0),))
    assert not np.array_equal(pixels(engine, (("Kohya", 0.5),)), one)
    assert not np.array_equal(pixels(engine, (("Kohya", 1.0), ("Other", 1.0))), one)


def test_text_encoder_layers_are_ignored(engine, files):
    assert read_lora(files["Kohya with text encoder"], "x").ignored_text_encoder == 1
    assert read_lora(files["Kohya"], "x").ignored_text_encoder == 0
    assert np.array_equal(pixels(engine, (("Kohya with text encoder", 1.0),)), pixels(engine, (("Kohya", 1.0),)))


def test_fused_weight_is_w_plus_alpha_over_rank_up_down(engine, files):
    """During the run a patched layer holds W + scale * alpha / r * up @ down (1x1 convs too)."""
    unet = engine.base_model("Tiny SD").unet
    layers = lora_layers(seed=1)
    weights = read_lora(files["Kohya"], "Kohya")
    modules = dict(unet.named_modules())
    names = ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", "down_blocks.0.attentions.0.proj_in"]
    before = {n: modules[n].weight.detach().clone() for n in names}
    with LoraPatch([(weights, 0.8)]).applied(unet):
        for n in names:
            down, up = layers[n]
            want = before[n] + 0.8 * (2.0 / RANK) * (up.flatten(1) @ down.flatten(1)).reshape(before[n].shape)
            torch.testing.assert_close(modules[n].weight, want, rtol=0, atol=1e-6)
    for n in names:
        assert torch.equal(modules[n].weight, before[n])


def test_a_locon_conv_lora_is_the_composed_convolution(engine, tmp_path):
    """kohya LoCon layers (3x3 down, 1x1 up on a ResNet conv): the fused conv equals the base
    conv plus scale * alpha / r * up(down(x))."""
    import torch.nn.functional as F

    unet = engine.base_model("Tiny SD").unet
    name = "mid_block.resnets.0.conv1"
    conv = unet.get_submodule(name)
    g = torch.Generator().manual_seed(5)
    down = torch.randn(RANK, conv.in_channels, 3, 3, generator=g) * 0.2
    up = torch.randn(conv.out_channels, RANK, 1, 1, generator=g) * 0.2
    weights = read_lora(write_kohya(tmp_path / "locon.safetensors", {name: (down, up)}, alpha=1.0), "LoCon")
    x = torch.randn(1, conv.in_channels, 8, 8, generator=g)
    with torch.no_grad():
        want = conv(x) + 1.5 * (1.0 / RANK) * F.conv2d(F.conv2d(x, down, padding=1), up)
        with LoraPatch([(weights, 1.5)]).applied(unet):
            got = conv(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_virtual_tryon_takes_loras_on_the_inpainting_model(engine):
    from PIL import Image, ImageDraw

    from prompt_free.tasks import TryOnSettings, virtual_tryon

    person = Image.open(EXAMPLES / "tryon_person.png").convert("RGB").resize((96, 128))
    mask = Image.new("L", person.size, 0)
    ImageDraw.Draw(mask).rectangle((20, 30, 70, 90), fill=255)
    garment = Image.open(EXAMPLES / "tryon_garment_shirt.png")

    def run(loras):
        s = TryOnSettings(steps=2, seed=3, max_side=64, pose_control=False, base_model="Tiny SD Inpainting", loras=loras)
        return np.asarray(virtual_tryon(engine, person, garment, mask, s).images[0])

    plain = run(())
    assert not np.array_equal(run((("Kohya", 1.0),)), plain)
    assert np.array_equal(run(()), plain)


# ----------------------------------------------------------------------------- restoration
def test_a_failed_run_takes_the_lora_out(engine, today):
    snapshot = unet_snapshot(engine)

    def fail(i, n):
        if i == 1:
            raise RuntimeError("boom in the middle of the run")

    s = VariationSettings(width=64, height=64, steps=2, seed=3, loras=(("Kohya", 1.0),))
    with pytest.raises(RuntimeError, match="boom"):
        image_variation(engine, REF, s, progress=fail)
    assert_unet_is(engine, snapshot)
    assert np.array_equal(pixels(engine), today[None])


def test_a_cancelled_run_takes_the_lora_out(engine, today):
    snapshot = unet_snapshot(engine)
    token = CancelToken()
    s = VariationSettings(width=64, height=64, steps=3, seed=3, loras=(("Other", 1.0),))
    with cancellable(token), pytest.raises(Cancelled):
        image_variation(engine, REF, s, progress=lambda i, n: token.cancel())
    assert_unet_is(engine, snapshot)
    assert np.array_equal(pixels(engine), today[None])


def test_switching_base_models_never_carries_a_lora(engine, today):
    a_before, b_before = unet_snapshot(engine), unet_snapshot(engine, OTHER_BASE)
    lora_on_b = pixels(engine, (("Kohya", 1.0),), base_model=OTHER_BASE)
    assert not np.array_equal(lora_on_b, today[OTHER_BASE])
    assert np.array_equal(pixels(engine), today[None])
    assert np.array_equal(pixels(engine, base_model=OTHER_BASE), today[OTHER_BASE])
    pixels(engine, (("Other", 1.0),))
    assert np.array_equal(pixels(engine, base_model=OTHER_BASE), today[OTHER_BASE])
    assert_unet_is(engine, a_before)
    assert_unet_is(engine, b_before, OTHER_BASE)


def test_reference_control_takes_loras_too(engine):
    def run(loras):
        r = reference_control(engine, REF, [ControlSpec("openpose", EXAMPLES / "pose_standing.png", "use as-is")],
                              ControlSettings(width=64, height=64, steps=2, seed=4, loras=loras))
        return np.asarray(r.images[0]), r.info

    plain, info = run(())
    with_lora, lora_info = run((("PEFT", 1.0),))
    assert "loras" not in info and lora_info["loras"] == [["PEFT", 1.0]]
    assert not np.array_equal(plain, with_lora)
    assert np.array_equal(run(())[0], plain)


# ----------------------------------------------------------------------------- the engine holds them
def test_a_lora_is_read_once_and_reported(engine):
    pixels(engine, (("Other", 1.0),))
    pixels(engine, (("Other", 0.5),))
    assert engine.load_counts[("loras", "Other")] == 1
    from prompt_free.memory import REPORT_KINDS

    assert "lora" in REPORT_KINDS
    rows = [r for r in engine.memory_report() if r["kind"] == "lora" and r["name"] == "Other"]
    assert len(rows) == 1 and rows[0]["bytes"] == sum(d.numel() * 4 + u.numel() * 4 for d, u in lora_layers(seed=2).values())


# ----------------------------------------------------------------------------- errors
def test_unknown_lora_is_refused_before_anything_loads(files):
    fresh = Engine(Registry.from_dict(tiny_data_with_loras(files), profile="tiny-lora"), device="cpu")
    with pytest.raises(UnknownModelError) as e:
        image_variation(fresh, REF, VariationSettings(width=64, height=64, steps=2, loras=(("Nope", 1.0),)))
    assert "unknown LoRA 'Nope'" in str(e.value) and "Kohya, PEFT" in str(e.value)
    assert not fresh.load_counts


@pytest.mark.parametrize("loras, message", [
    ((("Kohya", 2.5),), "the scale of LoRA 'Kohya' must be between -2 and 2, got 2.5"),
    ((("Kohya", "big"),), "the scale of LoRA 'Kohya' must be a number"),
    ((("Kohya", 1.0), ("Kohya", 0.5)), "LoRA 'Kohya' is chosen twice"),
    ((("Kohya", 1.0), ("PEFT", 1.0), ("Other", 1.0)), "at most 2 LoRAs"),
])
def test_bad_lora_settings_are_refused(files, loras, message):
    fresh = Engine(Registry.from_dict(tiny_data_with_loras(files), profile="tiny-lora"), device="cpu")
    with pytest.raises(InvalidSettingError, match=message):
        image_variation(fresh, REF, VariationSettings(width=64, height=64, steps=2, loras=loras))
    assert not fresh.load_counts


@pytest.mark.parametrize("name, problem", [
    ("Too wide", "layer 'down_blocks.0.attentions.0.proj_in' is (32, 32, 1, 1) but the LoRA gives"),
    ("Missing layer", "the base model has no layer 'down_blocks.5.attentions.0.proj_in'"),
])
def test_a_lora_that_does_not_fit_names_its_file_and_changes_nothing(engine, today, name, problem):
    snapshot = unet_snapshot(engine)
    with pytest.raises(LoraMismatchError) as e:
        pixels(engine, ((name, 1.0),))
    msg = str(e.value)
    assert f"LoRA '{name}' (file '" in msg and ".safetensors')" in msg and "base model 'Tiny SD'" in msg
    assert problem in msg
    assert_unet_is(engine, snapshot)


def test_unreadable_or_foreign_files_are_checkpoint_errors(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_lora(junk, "Junk")
    loha = tmp_path / "loha.safetensors"  # LyCORIS LoHa keys: not a plain LoRA
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a": torch.zeros(4, 4),
               "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0)}, str(loha))
    with pytest.raises(CheckpointError, match=r"LoRA 'LoHa' \(file 'loha.safetensors'\)"):
        read_lora(loha, "LoHa")


# ----------------------------------------------------------------------------- registry and download
@pytest.mark.parametrize("entry, message", [
    ({"path": "x.bin"}, "read as .safetensors only"),
    ({"repo": "someone/lora"}, "add `file: <name>.safetensors`"),
    ({"tiny": "lora"}, "unknown tiny builder"),
])
def test_registry_checks_lora_entries(files, entry, message):
    data = tiny_data_with_loras({})
    data["loras"] = {"Bad": entry}
    with pytest.raises(ConfigError, match=message):
        Registry.from_dict(data)


def test_none_is_not_a_lora_name():
    data = tiny_data_with_loras({})
    data["loras"] = {"none": {"path": "x.safetensors"}}
    with pytest.raises(ConfigError, match="'none' means 'no LoRA'"):
        Registry.from_dict(data)


def test_a_tiny_profile_with_lora_files_stays_tiny(engine):
    assert engine.registry.is_tiny


def test_download_plans_and_checks_lora_files(files):
    from prompt_free.download import check, plan

    registry = Registry.from_dict(tiny_data_with_loras(files), profile="tiny-lora")
    needs = plan(registry, ["Kohya"])
    assert [(n.owner, n.sources[0].path) for n in needs] == [("LoRA 'Kohya'", files["Kohya"])]
    out = io.StringIO()
    assert check(registry, needs, out) == 0
    assert "kohya.safetensors" in out.getvalue()
