"""Reference + ControlNet task (library level, tiny profile, offline): every ControlNet kind end
to end, preprocessing, two ControlNets, the guidance window, size rules, clear errors, caching
shared with Image Variation, and the official slimmed ControlNet file through checkpoints.yaml."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from prompt_free.engine import Engine
from prompt_free.errors import InputImageError, InvalidSettingError, ModelUnavailableError, UnknownModelError
from prompt_free.tasks import (
    ControlSettings,
    ControlSpec,
    VariationSettings as SamplerSettings,
    image_variation,
    reference_control,
)
from prompt_free.tasks.control import (
    MODE_AS_IS,
    MODE_PREPROCESS,
    control_kind,
    controlnet_choices,
    default_preprocessor,
    follow_size,
    map_problem,
)
from tests.helpers.app import EXAMPLES

pytestmark = pytest.mark.timeout(300)

S = 64  # output side in these tests: latent 8x8


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


@pytest.fixture(scope="module")
def reference():
    return Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((64, 64), Image.BICUBIC)


def settings(**kw):
    base = dict(width=S, height=S, steps=2, seed=5, guidance=2.0)
    base.update(kw)
    return ControlSettings(**base)


def pixels(result, i=0):
    return np.asarray(result.images[i], dtype=np.int16)


# ----------------------------------------------------------------------------- ready maps per kind
def _lines(size=S, width=1, blur=0.0):
    img = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(img)
    d.rectangle([size * 0.2, size * 0.3, size * 0.7, size * 0.85], outline=(255, 255, 255), width=width)
    d.line([(size * 0.1, size * 0.35), (size * 0.45, size * 0.1), (size * 0.8, size * 0.35)], fill=(255, 255, 255), width=width)
    return img.filter(ImageFilter.GaussianBlur(blur)) if blur else img


def _depth(size=S):
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None].repeat(size, 1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    y = np.where((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.08, 0.95, 0.3 * y)
    return Image.fromarray((y * 255).astype(np.uint8)).convert("RGB")


def _normal(size=S):
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    a = np.stack([128 + 90 * (xx - 0.5), 128 + 90 * (yy - 0.5), np.full_like(xx, 245)], -1)
    return Image.fromarray(a.astype(np.uint8))


def _seg(size=S):
    a = np.zeros((size, size, 3), np.uint8)
    a[:] = (120, 120, 120)  # ADE20K wall
    a[size // 2:] = (80, 50, 50)  # floor
    a[size // 4: size // 2, size // 3: 2 * size // 3] = (4, 200, 3)  # tree
    return Image.fromarray(a)


def _pose():
    return Image.open(EXAMPLES / "pose_standing.png").convert("RGB")


READY_MAPS = {
    "openpose": _pose,
    "canny": _lines,
    "mlsd": lambda: _lines(width=2),
    "scribble": lambda: _lines(width=4),
    "lineart": _lines,
    "lineart_anime": _lines,
    "softedge": lambda: _lines(width=3, blur=1.5),
    "depth": _depth,
    "normal": _normal,
    "seg": _seg,
    "shuffle": lambda: Image.open(EXAMPLES / "coffee.jpg").convert("RGB"),
}


def ready_map(engine, name):
    return READY_MAPS[control_kind(engine, name)]()


# ----------------------------------------------------------------------------- every kind, as-is
def test_every_controlnet_in_the_profile_has_a_known_kind(engine):
    names = engine.registry.names("controlnets")
    assert {control_kind(engine, n) for n in names} == set(READY_MAPS)
    assert "shuffle" not in controlnet_choices(engine) and "shuffle" in controlnet_choices(engine, include_shuffle=True)
    assert default_preprocessor(engine, "openpose") == "openpose_full"
    assert default_preprocessor(engine, "softedge") == "hed"


@pytest.mark.parametrize("name", ["openpose", "canny", "depth", "softedge", "mlsd", "normal", "scribble",
                                  "lineart", "lineart_anime", "seg", "shuffle"])
def test_each_controlnet_end_to_end_with_a_ready_map(engine, reference, name):
    control = ready_map(engine, name)
    result = reference_control(engine, reference, [ControlSpec(name, control)], settings())
    assert len(result.images) == 1 and result.images[0].size == (S, S)
    assert len(result.extras) == 1 and result.extras[0].size == (S, S)  # the hint, resized to the output
    expected_hint = control.resize((S, S), Image.BICUBIC) if control.size != (S, S) else control
    assert np.array_equal(np.asarray(result.extras[0]), np.asarray(expected_hint))
    c = result.info["controls"][0]
    assert c["controlnet"] == name and c["mode"] == MODE_AS_IS and c["preprocessor"] is None
    assert result.info["size_from"] == "settings"
    assert np.asarray(result.images[0]).std() > 0


# ----------------------------------------------------------------------------- the control acts
def test_control_affects_result_and_end_zero_equals_no_control(engine, reference):
    pose = _pose()
    a = reference_control(engine, reference, [ControlSpec("openpose", pose)], settings())
    b = reference_control(engine, reference, [ControlSpec("openpose", pose.transpose(Image.FLIP_TOP_BOTTOM))], settings())
    assert np.abs(pixels(a) - pixels(b)).max() > 0, "a different hint must change the picture"

    off = reference_control(engine, reference, [ControlSpec("openpose", pose, end=0.0)], settings())
    plain = image_variation(engine, reference, SamplerSettings(width=S, height=S, steps=2, seed=5, guidance=2.0))
    assert np.array_equal(pixels(off), pixels(plain)), "end=0: the ControlNet never acts"
    assert np.abs(pixels(a) - pixels(plain)).max() > 0

    zero = reference_control(engine, reference, [ControlSpec("openpose", pose, scale=0.0)], settings())
    assert np.array_equal(pixels(zero), pixels(plain))

    # a window covering only the last step differs from both the full window and no control
    late = reference_control(engine, reference, [ControlSpec("openpose", pose, start=0.5, end=1.0)], settings())
    assert np.abs(pixels(late) - pixels(a)).max() > 0 and np.abs(pixels(late) - pixels(plain)).max() > 0


def test_two_controlnets(engine, reference):
    pose, depth = _pose(), _depth()
    one = reference_control(engine, reference, [ControlSpec("openpose", pose)], settings())
    two = reference_control(engine, reference, [ControlSpec("openpose", pose), ControlSpec("depth", depth, scale=0.8)], settings())
    assert len(two.images) == 1 and len(two.extras) == 2
    assert np.abs(pixels(two) - pixels(one)).max() > 0, "the second ControlNet must act"
    muted = reference_control(engine, reference, [ControlSpec("openpose", pose), ControlSpec("depth", depth, scale=0.0)], settings())
    assert np.array_equal(pixels(muted), pixels(one)), "scale 0 for the second equals one ControlNet"
    windowed = reference_control(engine, reference, [ControlSpec("openpose", pose), ControlSpec("depth", depth, end=0.0)], settings())
    assert np.array_equal(pixels(windowed), pixels(one))
    assert [c["controlnet"] for c in two.info["controls"]] == ["openpose", "depth"]


# ----------------------------------------------------------------------------- size
def test_size_follows_the_first_control_image(engine, reference):
    control = _pose().resize((600, 530))  # floor to 64: 576 x 512
    result = reference_control(engine, reference, [ControlSpec("openpose", control)],
                               ControlSettings(steps=1, guidance=1.0, seed=1))
    assert result.info["size_from"] == "control image 1"
    assert (result.info["width"], result.info["height"]) == (576, 512)
    assert result.images[0].size == (576, 512) and result.extras[0].size == (576, 512)


def test_follow_size_rules():
    big = Image.new("RGB", (2000, 700))
    assert follow_size(big) == (1536, 640)  # official: floor to 64, clamp each side to [512, 1536]
    assert follow_size(Image.new("RGB", (300, 200))) == (512, 512)
    assert follow_size(big, lo=64, hi=256, keep_aspect=True) == (256, 64)
    assert follow_size(Image.new("RGB", (512, 768)), lo=64, hi=256, keep_aspect=True) == (128, 256)


def test_explicit_size_and_moderate_aspect_difference_is_resized(engine, reference):
    control = _pose()  # 512 x 768 (2:3) into 64 x 64: 1.5x, resized
    result = reference_control(engine, reference, [ControlSpec("openpose", control)], settings(steps=1))
    assert result.extras[0].size == (S, S)


def test_very_different_aspect_ratio_is_refused(engine, reference):
    control = _pose().resize((64, 256))
    with pytest.raises(InvalidSettingError, match=r"aspect ratios differ by 16\.0x.*crop the control image to roughly 4:1.*follow the control image \(1:4\)"):
        reference_control(engine, reference, [ControlSpec("openpose", control)], settings(width=256, height=64))
    # ... also for the second control image
    with pytest.raises(InvalidSettingError, match="control image 2"):
        reference_control(engine, reference, [ControlSpec("openpose", _pose()), ControlSpec("depth", _depth().resize((256, 32)))],
                          settings(width=64, height=128))


# ----------------------------------------------------------------------------- clear errors
def test_missing_control_image(engine, reference):
    with pytest.raises(InputImageError, match="no control image 1 given: upload a control image for ControlNet 1"):
        reference_control(engine, reference, [ControlSpec("openpose", None)], settings())
    with pytest.raises(InputImageError, match="no control image 2"):
        reference_control(engine, reference, [ControlSpec("openpose", _pose()), ControlSpec("depth", None)], settings())
    with pytest.raises(InvalidSettingError, match="no ControlNet given"):
        reference_control(engine, reference, [], settings())


def test_missing_reference(engine):
    with pytest.raises(InputImageError, match="no reference image"):
        reference_control(engine, None, [ControlSpec("openpose", _pose())], settings())


def test_wrong_kind_of_map_as_is(engine, reference):
    photo = Image.open(EXAMPLES / "coffee.jpg").convert("RGB")
    with pytest.raises(InputImageError, match=r"does not look like a canny map.*choose 'preprocess'"):
        reference_control(engine, reference, [ControlSpec("canny", photo)], settings())
    with pytest.raises(InputImageError, match="does not look like an openpose map"):
        reference_control(engine, reference, [ControlSpec("openpose", photo)], settings())
    with pytest.raises(InputImageError, match="edge map"):
        reference_control(engine, reference, [ControlSpec("openpose", _lines())], settings())
    with pytest.raises(InputImageError, match="pose skeleton"):
        reference_control(engine, reference, [ControlSpec("canny", _pose())], settings())
    with pytest.raises(InputImageError, match="depth map is grey"):
        reference_control(engine, reference, [ControlSpec("depth", photo)], settings())
    with pytest.raises(InputImageError, match="segmentation map"):
        reference_control(engine, reference, [ControlSpec("seg", Image.open(EXAMPLES / "chelsea.jpg"))], settings())
    # the check can be turned off for maps that really are maps
    ok = reference_control(engine, reference, [ControlSpec("canny", photo, check_map=False)], settings(steps=1))
    assert len(ok.images) == 1


def test_map_heuristics_accept_the_drawn_examples():
    for name, kind in [("pose_standing.png", "openpose"), ("pose_arms_up.png", "openpose"),
                       ("pose_two_people.png", "openpose"), ("canny_house.png", "canny"),
                       ("scribble_rocket.png", "scribble"), ("depth_spheres.png", "depth")]:
        assert map_problem(kind, Image.open(EXAMPLES / name).convert("RGB")) is None, name
    assert map_problem(None, Image.open(EXAMPLES / "coffee.jpg")) is None  # unknown kind: no check


def test_unknown_controlnet_and_bad_settings(engine, reference):
    with pytest.raises(UnknownModelError, match="unknown ControlNet 'nope'.*openpose"):
        reference_control(engine, reference, [ControlSpec("nope", _pose())], settings())
    with pytest.raises(InvalidSettingError, match="conditioning scale must be between 0 and 2"):
        reference_control(engine, reference, [ControlSpec("openpose", _pose(), scale=3)], settings())
    with pytest.raises(InvalidSettingError, match="must not be after control end"):
        reference_control(engine, reference, [ControlSpec("openpose", _pose(), start=0.8, end=0.2)], settings())
    with pytest.raises(InvalidSettingError, match="control mode must be"):
        reference_control(engine, reference, [ControlSpec("openpose", _pose(), mode="magic")], settings())
    with pytest.raises(InvalidSettingError, match="at most 2 ControlNets"):
        reference_control(engine, reference, [ControlSpec("openpose", _pose())] * 3, settings())
    with pytest.raises(InvalidSettingError, match="steps must be between"):
        reference_control(engine, reference, [ControlSpec("openpose", _pose())], settings(steps=0))


def test_unavailable_controlnet_gives_the_engine_message(reference):
    from prompt_free.registry import Registry

    reg = Registry.from_dict({
        "seecoders": {"SeeCoder": {"tiny": "seecoder"}},
        "base_models": {"Tiny SD": {"tiny": "sd", "seed": 1}},
        "controlnets": {"canny": {"repo": "nobody/no-such-controlnet", "preprocessor": "canny"}},
    }, profile="offline-test")
    eng = Engine(reg, device="cpu", allow_download=False)
    with pytest.raises(ModelUnavailableError, match="ControlNet 'canny' is not available"):
        reference_control(eng, reference, [ControlSpec("canny", _lines())], settings())
    assert ("base_models", "Tiny SD") not in eng.load_counts  # failed before loading anything heavy


# ----------------------------------------------------------------------------- caching and sharing
def test_controlnets_cached_and_shared_with_variation(engine, reference):
    pose = _pose()
    reference_control(engine, reference, [ControlSpec("openpose", pose), ControlSpec("depth", _depth())], settings(steps=1))
    before = dict(engine.load_counts)  # (earlier tests may have cycled ControlNets through the LRU)
    image_variation(engine, reference, SamplerSettings(width=S, height=S, steps=1))
    reference_control(engine, reference, [ControlSpec("openpose", pose), ControlSpec("depth", _depth())], settings(steps=1))
    reference_control(engine, reference, [ControlSpec("openpose", pose)], settings(steps=1))
    after = dict(engine.load_counts)
    assert after == before, "switching between Variation and ControlNet runs reloads nothing"
    assert after[("base_models", "Tiny SD")] == 1 and after[("seecoders", "SeeCoder")] == 1


def test_controlnet_loaded_once_on_a_fresh_engine(reference):
    eng = Engine.from_profile("tiny", device="cpu")
    for _ in range(2):
        reference_control(eng, reference, [ControlSpec("canny", _lines())], settings(steps=1))
    image_variation(eng, reference, SamplerSettings(width=S, height=S, steps=1))
    assert eng.load_counts[("controlnets", "canny")] == 1
    assert eng.load_counts[("base_models", "Tiny SD")] == 1


# ----------------------------------------------------------------------------- preprocess mode
@pytest.fixture
def offline_no_annotators(monkeypatch, tmp_path):
    """No annotator folder, an empty HF cache and the hub offline (as a user without weights)."""
    import huggingface_hub.constants as C

    monkeypatch.delenv("PFD_ANNOTATOR_DIR", raising=False)
    cache = tmp_path / "empty-hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read by prompt_free.settings.hub_offline
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))


def test_preprocess_canny_end_to_end(engine, reference, offline_no_annotators):
    photo = Image.open(EXAMPLES / "coffee.jpg").convert("RGB")  # 512 x 341 into 64 x 64: resized
    result = reference_control(engine, reference, [ControlSpec("canny", photo, mode=MODE_PREPROCESS)], settings())
    hint = result.extras[0]
    assert hint.size == (S, S)
    # the detector runs on the control image resized to the output size (official order)
    expected = engine.detector("canny")(photo.resize((S, S), Image.BICUBIC))
    assert np.array_equal(np.asarray(hint), np.asarray(expected))
    assert set(np.unique(np.asarray(hint))) <= {0, 255} and np.asarray(hint).max() == 255
    assert result.info["controls"][0]["preprocessor"] == "canny"
    as_is = reference_control(engine, reference, [ControlSpec("canny", photo, check_map=False)], settings())
    assert np.abs(pixels(as_is) - pixels(result)).max() > 0


def test_preprocess_with_a_weighted_detector_and_random_weights(engine, reference, tmp_path, offline_no_annotators):
    from tests.helpers.models import write_fake

    folder = tmp_path / "annotators"
    folder.mkdir()
    write_fake(str(folder), "body_pose_model.pth")  # random OpenPose body net under its hub name
    photo = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
    spec = ControlSpec("openpose", photo, mode=MODE_PREPROCESS, preprocessor="openpose")
    first = reference_control(engine, reference, [spec], settings(annotator_dir=str(folder)))
    again = reference_control(engine, reference, [spec], settings(annotator_dir=str(folder)))
    expected = engine.detector("openpose", str(folder))(photo.resize((S, S), Image.BICUBIC), resolution=S)
    assert np.array_equal(np.asarray(first.extras[0]), np.asarray(expected))
    assert np.array_equal(pixels(first), pixels(again))
    keys = [k for k in engine.load_counts if k[:2] == ("detectors", "openpose")]
    assert len(keys) == 1 and engine.load_counts[keys[0]] == 1, "the detector is built once, held by the engine"


def test_preprocess_without_annotator_weights_suggests_use_as_is(engine, reference, tmp_path, offline_no_annotators):
    spec = ControlSpec("openpose", Image.open(EXAMPLES / "astronaut.jpg"), mode=MODE_PREPROCESS)  # openpose_full
    with pytest.raises(ModelUnavailableError) as err:
        reference_control(engine, reference, [spec], settings(annotator_dir=str(tmp_path / "nothing-here")))
    msg = str(err.value)
    assert "body_pose_model.pth" in msg and "PFD_ANNOTATOR_DIR" in msg
    assert "upload a ready" in msg and "'use as-is'" in msg
    with pytest.raises(InvalidSettingError, match="ControlNet 1: unknown preprocessor 'x-ray'"):
        reference_control(engine, reference, [ControlSpec("openpose", _pose(), mode=MODE_PREPROCESS, preprocessor="x-ray")],
                          settings())


# ----------------------------------------------------------------------------- official slimmed file
_RESNET_LDM = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
               "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}


def diffusers_to_slimmed(sd, config):
    """A diffusers ControlNetModel state dict in the official slimmed layout (spec section d):
    the ldm ControlNet without ``control_model.``. formats.py only reads this layout, so the
    test writes it with this independent table; loading it back checks both directions."""
    per_level = config["layers_per_block"] + 1
    hint_out = 2 * (2 * (len(config["conditioning_embedding_out_channels"]) - 1) + 1)

    def resnet(rest):
        for a, b in _RESNET_LDM.items():
            if rest.startswith(a):
                return b + rest[len(a):]
        raise KeyError(rest)

    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if key.startswith("time_embedding.linear_"):
            new = f"time_embed.{2 * (int(parts[1][-1]) - 1)}." + ".".join(parts[2:])
        elif key.startswith("conv_in."):
            new = "input_blocks.0.0." + ".".join(parts[1:])
        elif key.startswith("controlnet_cond_embedding.conv_in."):
            new = "input_hint_block.0." + ".".join(parts[2:])
        elif key.startswith("controlnet_cond_embedding.blocks."):
            new = f"input_hint_block.{2 * (int(parts[2]) + 1)}." + ".".join(parts[3:])
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            new = f"input_hint_block.{hint_out}." + ".".join(parts[2:])
        elif key.startswith("down_blocks."):
            level, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":
                new = f"input_blocks.{(level + 1) * per_level}.0.op." + ".".join(parts[5:])
            else:
                block = 1 + level * per_level + int(parts[3])
                rest = ".".join(parts[4:])
                new = f"input_blocks.{block}.0." + resnet(rest) if kind == "resnets" else f"input_blocks.{block}.1." + rest
        elif key.startswith("controlnet_down_blocks."):
            new = f"zero_convs.{parts[1]}.0." + ".".join(parts[2:])
        elif key.startswith("mid_block.resnets."):
            new = f"middle_block.{2 * int(parts[2])}." + resnet(".".join(parts[3:]))
        elif key.startswith("mid_block.attentions.0."):
            new = "middle_block.1." + ".".join(parts[3:])
        elif key.startswith("controlnet_mid_block."):
            new = "middle_block_out.0." + ".".join(parts[1:])
        else:
            raise KeyError(key)
        out[new] = value.contiguous().clone()
    return out


def test_official_slimmed_controlnet_file_runs_through_checkpoints_yaml(tmp_path, reference):
    from safetensors.torch import save_file

    from prompt_free import formats, tiny
    from prompt_free.registry import Registry

    model = tiny.tiny_controlnet(seed=21)  # the tiny profile's 'openpose' weights
    slim = diffusers_to_slimmed(model.state_dict(), tiny.TINY_CONTROLNET_CONFIG)
    assert len(slim) == len(model.state_dict())
    assert formats.identify_checkpoint(slim) == "slimmed_controlnet"
    assert not any(k.startswith("control_model.") for k in slim)
    path = tmp_path / "control_tiny_openpose_slimmed.safetensors"
    save_file(slim, str(path))

    loaded = formats.load_controlnet(path, tiny.TINY_CONTROLNET_CONFIG)
    ref_sd = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref_sd[k]), k

    yaml_path = tmp_path / "checkpoints.yaml"
    yaml_path.write_text(
        "profiles:\n"
        "  custom:\n"
        "    seecoders:\n"
        "      SeeCoder: {tiny: seecoder, unconditional: zeros}\n"
        "    base_models:\n"
        "      Tiny SD: {tiny: sd, seed: 1}\n"
        "    controlnets:\n"
        f"      openpose (slimmed file): {{path: {path.name}, preprocessor: openpose_full, config: tiny_controlnet.json}}\n"
        "      openpose (tiny): {tiny: controlnet, seed: 21, preprocessor: openpose_full}\n"
    )
    import json

    (tmp_path / "tiny_controlnet.json").write_text(json.dumps(tiny.TINY_CONTROLNET_CONFIG))
    reg = Registry.load(yaml_path, "custom")
    assert reg.entry("controlnets", "openpose (slimmed file)").sources[0].path == path
    eng = Engine(reg, device="cpu")
    assert control_kind(eng, "openpose (slimmed file)") == "openpose"
    from_file = reference_control(eng, reference, [ControlSpec("openpose (slimmed file)", _pose())], settings())
    built = reference_control(eng, reference, [ControlSpec("openpose (tiny)", _pose())], settings())
    assert eng.load_counts[("controlnets", "openpose (slimmed file)")] == 1
    assert np.array_equal(pixels(from_file), pixels(built)), "same weights, same picture"
