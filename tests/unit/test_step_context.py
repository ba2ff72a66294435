"""The loop asks a ``StepContext`` for every step's context (prompt_free.steps), so a context that
changes during the run is written once and every strategy runs it: eager, fast, graphed and
quick mode. A schedule that keeps the same pair is today's loop bit for bit; one that switches
pairs mid-run gives a hand-written loop's latents; the graphed step copies its context only when
the object changes; quick mode runs a full step where the context changes."""

from __future__ import annotations

import pytest
import torch

from prompt_free.conditioning import Conditioning
from prompt_free.engine import Engine
from prompt_free.fast import FastPath
from prompt_free.sampling import ControlInput, Sampler, denoise, make_scheduler
from prompt_free.steps import StepContext
from prompt_free.tiny import tiny_controlnet, tiny_unet
from tests.helpers.tensors import one_thread, rel  # noqa: F401 (one_thread: an autouse fixture)

STEPS, SWITCH, GUIDANCE = 6, 3, 2.5


@pytest.fixture(scope="module")
def models():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(1, 148, 64, generator=g), torch.randn(1, 148, 64, generator=g)
    return dict(unet=tiny_unet(1), cn=tiny_controlnet(21), noise=torch.randn(1, 4, 8, 8, generator=g),
                hint=torch.rand(1, 3, 64, 64, generator=g), a=a, b=b, uncond=torch.zeros_like(a))


def _switching(m, at=SWITCH):
    """Context a for the first ``at`` steps, then b (the unconditional context stays)."""
    return lambda i, total: (m["a"] if i < at else m["b"], m["uncond"])


def _run(m, path=None, schedule=None, deep_cache=1, controls=True, mode=torch.inference_mode):
    controls = [ControlInput(m["cn"], m["hint"], 0.7)] if controls else []
    ctx = None
    if schedule is not None:
        ctx = StepContext(m["a"], m["uncond"], 1, True, m["unet"].device, m["unet"].dtype, schedule)
    with mode():
        return denoise(m["unet"], make_scheduler(), m["noise"], m["a"], m["uncond"], steps=STEPS, guidance=GUIDANCE,
                       controls=controls, fast=path, deep_cache=deep_cache, step_context=ctx)


def _by_hand(m, at=SWITCH):
    """The guided DDIM loop written out with the models' own calls, switching contexts at ``at``."""
    sched = make_scheduler()
    sched.set_timesteps(STEPS)
    x, hint = m["noise"].clone(), m["hint"].expand(2, -1, -1, -1)
    with torch.inference_mode():
        for i, t in enumerate(sched.timesteps):
            ctx = torch.cat([m["uncond"], m["a"] if i < at else m["b"]])
            xin = torch.cat([x, x])
            down, mid = m["cn"](xin, t, encoder_hidden_states=ctx, controlnet_cond=hint, conditioning_scale=0.7,
                                return_dict=False)
            eps = m["unet"](xin, t, encoder_hidden_states=ctx, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid, return_dict=False)[0].float()
            e_u, e_c = eps.chunk(2)
            x = sched.step(e_u + GUIDANCE * (e_c - e_u), t, x, eta=0.0, return_dict=False)[0]
    return x


PATHS = {"eager": lambda: None, "fast": lambda: FastPath(), "graphed": lambda: FastPath(graphs=True)}


@pytest.mark.parametrize("path", list(PATHS))
def test_a_schedule_of_the_same_pair_is_todays_loop_bit_for_bit(models, path):
    m = models
    same = lambda i, total: (m["a"], m["uncond"])  # noqa: E731
    fresh = lambda i, total: (m["a"].clone(), m["uncond"].clone())  # new objects, equal values: batched anew
    today = _run(m, PATHS[path]())
    assert torch.equal(_run(m, PATHS[path](), same), today)
    assert torch.equal(_run(m, PATHS[path](), fresh), today)


@pytest.mark.parametrize("path", list(PATHS))
def test_a_context_switched_mid_run_is_the_hand_written_loop(models, path):
    m = models
    want = _by_hand(m)
    got = _run(m, PATHS[path](), _switching(m))
    assert rel(got, want) <= 1e-5
    assert rel(got, _run(m, PATHS[path]())) > 1e-4  # the switch changed the result
    if path != "fast":
        assert torch.equal(got, _run(m, None, _switching(m)))  # graphed: the eager latents, bit for bit


def test_the_graphed_step_copies_its_context_only_when_the_object_changes(models):
    m = models
    path = FastPath(graphs=True)
    _run(m, path, controls=False, mode=torch.no_grad)  # one step shape: one graphed step (no_grad: versions count)
    (step,) = path.graphs._steps.values()
    assert step.context._version == 1  # copied once for the whole run
    _run(m, path, _switching(m), controls=False, mode=torch.no_grad)
    assert step.context._version == 3  # the next run: once at its start, once at the switch


def test_quick_mode_runs_a_full_step_where_the_context_changes(models):
    m = models
    deep = []
    hook = m["unet"].mid_block.register_forward_hook(lambda *a: deep.append(1))
    try:
        constant = _run(m, None, deep_cache=3)
        full_constant = len(deep)
        deep.clear()
        switched = _run(m, None, _switching(m, 4), deep_cache=3)
        full_switched = len(deep)
        deep.clear()
        fast_switched = _run(m, FastPath(), _switching(m, 4), deep_cache=3)
    finally:
        hook.remove()
    assert full_constant == 2 and full_switched == 3  # steps 0, 3 vs 0, 3, 4 (the switch: no reuse across it)
    assert len(deep) == full_switched  # the fast strategy decides the same steps
    assert rel(fast_switched, switched) <= 1e-5
    assert rel(switched, constant) > 1e-4
    assert rel(switched, _by_hand(m, 4)) <= 0.1  # approximate, and close to the exact switched run


def test_the_engine_runs_the_conditionings_schedule_on_every_path():
    results = {}
    for name, fast in (("eager", False), ("graphed", FastPath(graphs=True))):
        engine = Engine.from_profile("tiny", device="cpu", fast=False)
        engine.fast = fast or None
        g = torch.Generator().manual_seed(9)
        a, b = torch.randn(1, 148, 64, generator=g), torch.randn(1, 148, 64, generator=g)
        unc = torch.zeros_like(a)
        sampler = Sampler(width=64, height=64, steps=4, seed=2)
        plain = engine.generate("Tiny SD", Conditioning(a, unc), sampler, decode=False).latents
        same = engine.generate("Tiny SD", Conditioning(a, unc, schedule=lambda i, n: (a, unc)), sampler,
                               decode=False).latents
        switched = engine.generate("Tiny SD", Conditioning(a, unc, schedule=lambda i, n: (a if i < 2 else b, unc)),
                                   sampler, decode=False).latents
        assert torch.equal(same, plain) and not torch.equal(switched, plain)
        results[name] = switched
    assert torch.equal(results["graphed"], results["eager"])


def test_a_step_context_must_match_the_runs_guidance(models):
    m = models
    unguided = StepContext(m["a"], None, 1, False, m["unet"].device, m["unet"].dtype)
    with pytest.raises(ValueError, match="guided"):
        denoise(m["unet"], make_scheduler(), m["noise"], m["a"], m["uncond"], steps=2, guidance=2.0,
                step_context=unguided)
    with pytest.raises(ValueError, match="unconditional"):
        StepContext(m["a"], None, 1, True, m["unet"].device, m["unet"].dtype)
