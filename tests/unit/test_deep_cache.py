"""Quick mode (prompt_free.deep_cache, approximate): interval 1 is today's loop bit for bit, the
whole-UNet forward that keeps the deep features is the UNet's own, intervals 2 and 3 stay close
to the exact latents, the deep blocks and the ControlNets really do not run on reuse steps
(counted with forward hooks on the real modules), control windows force full steps, invalid
intervals are refused before any work, and the PNG metadata says the picture is approximate."""

from __future__ import annotations

import pytest
import torch

from prompt_free import metadata
from prompt_free.conditioning import Conditioning
from prompt_free.deep_cache import supported, unet_keeping_deep
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.fast import FastPath
from prompt_free.images import image_to_tensor, load_image
from prompt_free.sampling import ControlInput, Sampler, denoise, make_scheduler
from prompt_free.tiny import tiny_controlnet, tiny_unet
from tests.helpers.tensors import one_thread, rel  # noqa: F401 (one_thread: an autouse fixture)

REF = "assets/examples/chelsea.jpg"
MAPS = ("assets/examples/pose_standing.png", "assets/examples/depth_spheres.png")
# Measured on the tiny profile (128², 8 steps, guidance 2, fp32, CPU): max |d| / max |exact| of
# the final latents was 1.7 % (N=2) and 2.6 % (N=3) without ControlNets, 3.2 % / 4.6 % with two.
# The bounds leave room for other CPUs' kernels; an unrelated run differs by ~100 %.
DEVIATION_BOUND = {2: 0.06, 3: 0.09}


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


def _two_controlnets(engine, size=128):
    maps = [image_to_tensor(load_image(p).resize((size, size))) for p in MAPS]
    return [ControlInput(engine.controlnet("openpose"), maps[0], 0.8, 0.0, 1.0),
            ControlInput(engine.controlnet("depth"), maps[1], 1.3, 0.0, 1.0)]


def _latents(engine, deep_cache=1, controls=(), **sampler):
    ctx, unc = engine.encode_reference(REF, "SeeCoder")
    s = Sampler(**{**dict(width=128, height=128, steps=8, seed=3, num_images=1), **sampler}, deep_cache=deep_cache)
    return engine.generate("Tiny SD", Conditioning(ctx, unc, list(controls)), s, decode=False).latents


class Calls:
    """Forward calls of named submodules, counted with forward hooks (observation only)."""

    def __init__(self, modules):
        self.counts = {name: 0 for name in modules}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def count(*_):
            self.counts[name] += 1
        return count

    def remove(self):
        for h in self._handles:
            h.remove()


def test_interval_1_is_todays_loop_bit_for_bit(engine):
    unet = engine.base_model("Tiny SD").unet
    calls = Calls({"unet": unet})
    try:
        off = _latents(engine, 1, num_images=2)
    finally:
        calls.remove()
    assert calls.counts["unet"] == 8  # the UNet's own forward, every step: no partial forward is involved
    assert torch.equal(off, _latents(engine, num_images=2))


def test_the_forward_that_keeps_deep_features_is_the_unets_own_bit_for_bit():
    unet, cn = tiny_unet(1), tiny_controlnet(21)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 12, 20, generator=g), torch.randn(2, 148, 64, generator=g)  # 12x20: odd upsample sizes
    t = torch.tensor(401)
    seen = []
    hook = unet.up_blocks[-1].register_forward_pre_hook(lambda m, a, kw: seen.append(kw["hidden_states"]),
                                                        with_kwargs=True)
    with torch.inference_mode():
        down, mid = cn(x, t, encoder_hidden_states=ctx, controlnet_cond=torch.rand(2, 3, 96, 160, generator=g),
                       return_dict=False)
        want = unet(x, t, encoder_hidden_states=ctx, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid, return_dict=False)[0]
        hook.remove()
        got, deep = unet_keeping_deep(unet, x, t, ctx, down, mid)
    assert torch.equal(got, want)
    assert torch.equal(deep, seen[0])  # what it keeps is the input of the last up block, both guidance halves


@pytest.mark.parametrize("fast", [False, True], ids=["eager", "fast"])
@pytest.mark.parametrize("with_controls", [False, True], ids=["no-controlnet", "two-controlnets"])
def test_intervals_2_and_3_stay_close_to_the_exact_latents(engine, fast, with_controls):
    engine_fast, engine.fast = engine.fast, (FastPath(compile=False) if fast else None)
    try:
        controls = _two_controlnets(engine) if with_controls else ()
        exact = _latents(engine, 1, controls)
        for n in (2, 3):
            quick = _latents(engine, n, controls)
            assert torch.isfinite(quick).all()
            assert 0 < rel(quick, exact) <= DEVIATION_BOUND[n], n  # approximate, and close
    finally:
        engine.fast = engine_fast


def _deep_and_shallow_calls(unet, cns, run):
    modules = {"conv_in": unet.conv_in, "up_last": unet.up_blocks[-1], "mid": unet.mid_block,
               "down_deep": unet.down_blocks[-1], "up_deep": unet.up_blocks[0], "down_first": unet.down_blocks[0]}
    modules.update({f"cn{k}": cn for k, cn in enumerate(cns)})
    calls = Calls(modules)
    try:
        run()
    finally:
        calls.remove()
    return calls.counts


@pytest.mark.parametrize("interval, full", [(2, 3), (3, 2)])
def test_the_deep_blocks_and_controlnets_run_on_full_steps_only(interval, full):
    unet, cn = tiny_unet(1), tiny_controlnet(21)
    g = torch.Generator().manual_seed(3)
    cond, noise = torch.randn(1, 148, 64, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    hint = torch.rand(1, 3, 64, 64, generator=g)

    def run():
        with torch.inference_mode():
            denoise(unet, make_scheduler(), noise, cond, torch.zeros_like(cond), steps=6, guidance=2.0,
                    controls=[ControlInput(cn, hint, 1.0)], deep_cache=interval)

    counts = _deep_and_shallow_calls(unet, [cn], run)
    assert counts["conv_in"] == counts["up_last"] == 6  # the shallow path runs every step
    # down_blocks[0] runs as a whole only on full steps (reuse steps call its layers, not its forward)
    assert counts["mid"] == counts["down_deep"] == counts["up_deep"] == counts["down_first"] == full
    assert counts["cn0"] == full


def test_a_control_window_that_opens_or_closes_forces_a_full_step():
    """10 steps, interval 3, a ControlNet active on steps 2..7: full steps 0, 2 (opens), 5, 8 (closes)."""
    unet, cn = tiny_unet(1), tiny_controlnet(21)
    g = torch.Generator().manual_seed(3)
    cond, noise = torch.randn(1, 148, 64, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    control = ControlInput(cn, torch.rand(1, 3, 64, 64, generator=g), 1.0, 0.2, 0.8)
    assert [i for i in range(10) if control.active(i, 10)] == [2, 3, 4, 5, 6, 7]

    def run():
        with torch.inference_mode():
            denoise(unet, make_scheduler(), noise, cond, torch.zeros_like(cond), steps=10, guidance=2.0,
                    controls=[control], deep_cache=3)

    counts = _deep_and_shallow_calls(unet, [cn], run)
    assert counts["mid"] == 4 and counts["cn0"] == 2  # full steps 0, 2, 5, 8; the ControlNet on 2 and 5


@pytest.mark.parametrize("bad", [0, -1, 11, 2.5, "two", None])
def test_invalid_intervals_are_refused_with_a_clear_message(bad):
    with pytest.raises(InvalidSettingError, match="deep cache interval must be"):
        Sampler(deep_cache=bad).checked()


def test_a_task_refuses_an_invalid_interval_before_any_model_loads(engine):
    from prompt_free.tasks import VariationSettings, image_variation

    fresh = Engine.from_profile("tiny", device="cpu")
    with pytest.raises(InvalidSettingError, match="deep cache interval must be between 1 and 10, got 0"):
        image_variation(fresh, REF, VariationSettings(steps=2, width=64, height=64, deep_cache=0))
    assert fresh.memory_report() == []


def test_an_unsupported_unet_is_refused_with_a_clear_message():
    from diffusers import UNet2DConditionModel

    from prompt_free.tiny import TINY_UNET_CONFIG

    other = UNet2DConditionModel(**{**TINY_UNET_CONFIG, "class_embed_type": "timestep"})
    assert supported(tiny_unet(1)) and not supported(other)
    from prompt_free.deep_cache import check_supported

    with pytest.raises(InvalidSettingError, match="quick mode .* not available for the base model 'X'"):
        check_supported(other, "'X'")


def test_the_png_metadata_records_quick_mode_and_says_approximate(engine, tmp_path):
    from prompt_free.tasks import VariationSettings, image_variation

    s = VariationSettings(steps=2, width=64, height=64, deep_cache=2)
    result = image_variation(engine, REF, s)
    assert result.info["deep_cache"] == 2
    tagged = metadata.tag(engine, result, "image_variation", s, {"reference": REF}, keep_paths=False)
    path = metadata.save_png(tagged[0], tmp_path / "q.png")
    rec = metadata.read(path)
    assert rec["settings"]["deep_cache"] == 2
    assert "Deep cache: 2 (approximate)" in metadata.parameters_text(rec)
    off = image_variation(engine, REF, VariationSettings(steps=2, width=64, height=64))
    assert "deep_cache" not in off.info
    rec_off = metadata.read(metadata.save_png(metadata.tag(engine, off, "image_variation",
                                                           VariationSettings(steps=2, width=64, height=64),
                                                           {"reference": REF}, keep_paths=False)[0], tmp_path / "e.png"))
    assert "Deep cache" not in metadata.parameters_text(rec_off)


@pytest.mark.slow
def test_the_compile_path_compiles_both_forwards_and_matches_eager_quick_mode():
    import torch._dynamo

    torch._dynamo.reset()
    unet, cn = tiny_unet(1), tiny_controlnet(21)
    g = torch.Generator().manual_seed(3)
    cond, noise = torch.randn(1, 148, 64, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    controls = [ControlInput(cn, torch.rand(1, 3, 64, 64, generator=g), 0.7)]
    with torch.inference_mode():
        args = (unet, make_scheduler(), noise, cond, torch.zeros_like(cond))
        eager = denoise(*args, steps=4, guidance=2.0, controls=controls, deep_cache=2)
        path = FastPath(compile=True, backend="eager")
        compiled = denoise(*args, steps=4, guidance=2.0, controls=controls, deep_cache=2, fast=path)
    from prompt_free.deep_cache import unet_keeping_deep as full, unet_shallow as shallow

    assert full in path._compiled_fn and shallow in path._compiled_fn
    assert rel(compiled, eager) <= 1e-5
    torch._dynamo.reset()


def test_cli_deep_cache_option_is_the_library_call_and_is_redone_from_its_png(tmp_path, capsys):
    import numpy as np

    from prompt_free.tasks import VariationSettings, image_variation
    from tests.helpers.cli import TINY, pixels, run

    code, _, err = run(["generate", "--reference", REF, "--deep-cache", 2, *TINY, "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    png = tmp_path / "D" / "chelsea-s20.png"
    fresh = Engine.from_profile("tiny")
    want = image_variation(fresh, REF, VariationSettings(steps=2, width=64, height=64, deep_cache=2)).images[0]
    exact = image_variation(fresh, REF, VariationSettings(steps=2, width=64, height=64)).images[0]
    assert np.array_equal(pixels(png), np.asarray(want.convert("RGB")))
    assert not np.array_equal(pixels(png), np.asarray(exact.convert("RGB")))
    assert metadata.read(png)["settings"]["deep_cache"] == 2
    code, _, err = run(["generate", "--from-png", png, "--out", tmp_path / "D2"], capsys)
    assert code == 0, err
    assert np.array_equal(pixels(png), pixels(tmp_path / "D2" / png.name))


def test_cli_refuses_an_invalid_interval_in_one_line(tmp_path, capsys):
    from tests.helpers.cli import run

    code, _, err = run(["generate", "--reference", REF, "--profile", "tiny", "--deep-cache", 0, "--out", tmp_path / "o"],
                       capsys)
    assert code == 1 and "error: deep cache interval must be between 1 and 10, got 0" in err and "Traceback" not in err
