"""The fast sampling path (prompt_free.fast): its exact parts give the eager loop's latents, the
hint embedding runs once per run, the setting is read from PFD_FAST, and the compile path's
bookkeeping (one "compiling (once)" note per new shape, no recompile on a scale change) works,
checked on the CPU with dynamo's eager backend (no inductor compile on a 2-core machine)."""

from __future__ import annotations

import pytest
import torch

from prompt_free import settings
from prompt_free.conditioning import Conditioning
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.fast import COMPILING_NOTE, DDIMSteps, FastPath
from prompt_free.sampling import ControlInput, Sampler, denoise, make_scheduler
from prompt_free.tiny import tiny_controlnet, tiny_unet
from tests.helpers.models import two_controlnets
from tests.helpers.tensors import one_thread, rel  # noqa: F401 (one_thread: an autouse fixture)

REL_TOL = 1e-5
REF = "assets/examples/chelsea.jpg"


@pytest.mark.parametrize("name, steps", [("DDIM", 50), ("DDIM", 7), ("DDIM trailing", 8)])  # trailing: Hyper-SD's
def test_ddim_steps_reproduce_diffusers_step_bit_for_bit(name, steps):
    sched = make_scheduler(name)
    sched.set_timesteps(steps)
    ours = DDIMSteps.for_scheduler(sched, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    y = x.clone()
    for i, t in enumerate(sched.timesteps):
        eps = torch.randn(2, 4, 8, 8, generator=g)
        x = sched.step(eps, t, x, eta=0.0, return_dict=False)[0]
        y = ours.step(eps, i, y)
        assert torch.equal(x, y), f"step {i} (t={int(t)})"


def test_ddim_steps_only_replace_the_ddim_they_reproduce():
    sched = make_scheduler("DPM++ 2M")
    sched.set_timesteps(10)
    assert DDIMSteps.for_scheduler(sched, torch.device("cpu")) is None
    ddim = make_scheduler("DDIM")
    ddim.register_to_config(clip_sample=True)
    ddim.set_timesteps(10)
    assert DDIMSteps.for_scheduler(ddim, torch.device("cpu")) is None


@pytest.fixture(scope="module")
def engines():
    return {fast: Engine.from_profile("tiny", device="cpu", fast=fast) for fast in (False, True)}


def _latents(engine, controls_of):
    ctx, unc = engine.encode_reference(REF, "SeeCoder")
    sampler = Sampler(width=128, height=128, steps=6, seed=3, num_images=2)
    return engine.generate("Tiny SD", Conditioning(ctx, unc, controls_of(engine)), sampler, decode=False).latents


@pytest.mark.parametrize("case", ["image_variation", "two_controlnets"])
def test_fast_final_latents_match_eager(engines, case):
    controls_of = (lambda e: []) if case == "image_variation" else two_controlnets
    eager = _latents(engines[False], controls_of)
    fast = _latents(engines[True], controls_of)
    assert engines[True].fast is not None and engines[False].fast is None
    assert rel(fast, eager) <= REL_TOL


def test_fast_with_another_scheduler_matches_eager():
    unet = tiny_unet(1)
    g = torch.Generator().manual_seed(1)
    noise, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 148, 64, generator=g)
    runs = [denoise(unet, make_scheduler("DPM++ 2M Karras"), noise, cond, torch.zeros_like(cond), steps=4,
                    guidance=2.0, fast=path) for path in (None, FastPath())]
    assert rel(runs[1], runs[0]) <= REL_TOL


def test_hint_embedding_runs_once_per_run_on_the_fast_path():
    unet, cn = tiny_unet(1), tiny_controlnet(21)
    calls = []
    cn.controlnet_cond_embedding.register_forward_hook(lambda *a: calls.append(1))
    g = torch.Generator().manual_seed(2)
    noise, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 148, 64, generator=g)
    hint = torch.rand(1, 3, 64, 64, generator=g)
    out = {}
    for path in (None, FastPath()):
        calls.clear()
        with torch.inference_mode():
            out[path is None] = denoise(unet, make_scheduler(), noise, cond, torch.zeros_like(cond), steps=5, guidance=2.0,
                                        controls=[ControlInput(cn, hint, 0.7)], fast=path)
        out[("calls", path is None)] = len(calls)
    assert out[("calls", True)] == 5 and out[("calls", False)] == 1
    assert rel(out[False], out[True]) <= REL_TOL


def test_fast_setting_from_argument_and_environment(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("PFD_FAST", raising=False)
    assert settings.fast_mode() == "auto"
    auto = FastPath.from_setting(None, cpu)
    assert auto is not None and not auto.compile  # exact parts by default
    assert FastPath.from_setting(False, cpu) is None
    assert not FastPath.from_setting(True, cpu).compile  # compile is for CUDA only
    monkeypatch.setenv("PFD_FAST", "0")
    assert FastPath.from_setting(None, cpu) is None
    assert FastPath.from_setting(True, cpu) is not None  # the argument wins
    monkeypatch.setenv("PFD_FAST", "1")
    assert settings.fast_mode() == "on"
    monkeypatch.setenv("PFD_FAST", "sometimes")
    with pytest.raises(InvalidSettingError, match="PFD_FAST"):
        settings.check_environment()


@pytest.mark.slow
def test_compile_path_notes_new_shapes_once_and_does_not_recompile_for_a_new_scale():
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    unet, cn = tiny_unet(1), tiny_controlnet(21)
    path = FastPath(compile=True, backend="eager")
    g = torch.Generator().manual_seed(3)
    cond = torch.randn(1, 148, 64, generator=g)
    hint = torch.rand(1, 3, 64, 64, generator=g)

    def run(scale, side=8):
        notes = []
        noise = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(4))
        with torch.inference_mode():
            out = denoise(unet, make_scheduler(), noise, cond, torch.zeros_like(cond), steps=2, guidance=2.0,
                          controls=[ControlInput(cn, hint if side == 8 else torch.rand(1, 3, side * 8, side * 8), scale)],
                          fast=path, progress=lambda i, n, note=None: notes.append(note))
        return out, [n for n in notes if n]

    first, notes = run(0.7)
    assert notes == [COMPILING_NOTE]
    frames = counters["stats"]["unique_graphs"]
    again, notes = run(1.1)
    assert notes == [] and counters["stats"]["unique_graphs"] == frames  # a new scale reuses the graphs
    _, notes = run(0.7, side=16)
    assert notes == [COMPILING_NOTE]  # a new size compiles once
    with torch.inference_mode():
        eager = denoise(unet, make_scheduler(), torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)),
                        cond, torch.zeros_like(cond), steps=2, guidance=2.0, controls=[ControlInput(cn, hint, 0.7)])
    assert rel(first, eager) <= REL_TOL
    torch._dynamo.reset()


def test_app_arguments_choose_the_sampling_path():
    from app import parse_args

    assert parse_args([]).fast is None  # PFD_FAST decides (default: the exact parts)
    assert parse_args(["--no-fast"]).fast is False
    assert parse_args(["--fast"]).fast is True
    assert parse_args(["--profile", "full-random"]).profile == "full-random"
    with pytest.raises(SystemExit):
        parse_args(["--fast", "--no-fast"])


def test_compile_path_keeps_no_evicted_model_alive():
    import gc
    import weakref

    from prompt_free.tiny import tiny_vae

    path = FastPath(compile=True, backend="eager")
    unet, cn, vae = tiny_unet(1), tiny_controlnet(21), tiny_vae(3)
    refs = [weakref.ref(m) for m in (unet, cn, vae)]
    cond = torch.randn(1, 148, 64)
    with torch.inference_mode():
        z = denoise(unet, make_scheduler(), torch.randn(1, 4, 8, 8), cond, torch.zeros_like(cond), steps=2, guidance=2.0,
                    controls=[ControlInput(cn, torch.rand(1, 3, 64, 64), 0.5)], fast=path)
        path.decoder(vae)(z)
    del unet, cn, vae, z
    gc.collect()
    assert all(r() is None for r in refs)  # the engine's eviction really frees a compiled model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (fp16 parity of the fast path)")
@pytest.mark.parametrize("fast", [None, True], ids=["exact-parts", "compiled+graphs"])
def test_fp16_fast_path_on_cuda_matches_eager_fp16(fast, monkeypatch):
    monkeypatch.delenv("PFD_FAST", raising=False)
    monkeypatch.delenv("PFD_CUDA_GRAPHS", raising=False)
    eager = Engine.from_profile("tiny", device="cuda", fast=False, precision="fp16")
    quick = Engine.from_profile("tiny", device="cuda", fast=fast, precision="fp16")
    assert quick.fast is not None and quick.fast.compile == bool(fast) and (quick.fast.graphs is not None) == bool(fast)
    for controls_of in ((lambda e: []), two_controlnets):
        a, b = _latents(eager, controls_of), _latents(quick, controls_of)
        assert rel(b.float(), a.float()) <= 1e-2
