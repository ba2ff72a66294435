"""The graphed guided step (``prompt_free.cuda_graphs``): on the CPU the same step function runs
uncaptured over the same fixed tensors, so everything but the capture is checked here against
the eager loop, bit for bit; the capture itself is checked on CUDA (tests/unit/test_cuda_paths.py)."""

import pytest
import torch

from prompt_free import settings
from prompt_free.conditioning import Conditioning
from prompt_free.cuda_graphs import StepGraphs, weights_address
from prompt_free.engine import GRAPHS_KEY, Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.fast import FastPath, GraphParts
from prompt_free.images import image_to_tensor, load_image
from prompt_free.sampling import SCHEDULERS, ControlInput, Sampler, denoise, make_scheduler
from prompt_free.tiny import tiny_controlnet, tiny_unet

from tests.helpers.models import MAPS, FailingUNet
from tests.helpers.tensors import one_thread  # noqa: F401 - autouse

REF = "assets/examples/chelsea.jpg"

SIZE = 128


def _controls(engine):
    maps = [image_to_tensor(load_image(p).resize((SIZE, SIZE))) for p in MAPS]
    # The depth ControlNet acts in steps 1..4 of 6 only: three step shapes per run.
    return [ControlInput(engine.controlnet("openpose"), maps[0], 0.8, 0.0, 1.0),
            ControlInput(engine.controlnet("depth"), maps[1], 1.3, 0.2, 0.8)]


def _run(engine, base="Tiny SD", controls_of=_controls, seed=3, guidance=2.0, scheduler="DDIM", progress=None):
    ctx, unc = engine.encode_reference(REF, "SeeCoder")
    sampler = Sampler(width=SIZE, height=SIZE, steps=6, seed=seed, num_images=2, guidance=guidance, scheduler=scheduler)
    c = Conditioning(ctx, unc, controls_of(engine))
    return engine.generate(base, c, sampler, decode=False, progress=progress).latents


@pytest.fixture(scope="module")
def engines():
    eager = Engine.from_profile("tiny", device="cpu", fast=False)
    graphed = Engine.from_profile("tiny", device="cpu", fast=False)
    graphed.fast = FastPath(graphs=True)
    return eager, graphed


CASES = {"image_variation": dict(controls_of=lambda e: []), "two_controlnets": {}, "unguided": dict(guidance=1.0),
         **{name: dict(scheduler=name, guidance=3.5) for name in SCHEDULERS if name != "DDIM"}}


@pytest.mark.parametrize("case", list(CASES))
def test_graphed_step_gives_the_eager_latents_bit_for_bit(engines, case):
    """Every scheduler (PNDM keeps the noise predictions of earlier steps: the graph's fixed
    output must not be them; Euler a and TCD draw noise from the run's generator)."""
    eager, graphed = engines
    kwargs = CASES[case]
    before, steps = graphed.fast.graphs.replays, []
    assert torch.equal(_run(graphed, progress=lambda i, n, note=None: steps.append(i), **kwargs), _run(eager, **kwargs))
    assert graphed.fast.graphs.replays == before + len(steps) >= before + 6  # every step went through a graphed step


def test_steps_are_set_up_once_per_shape_and_replayed_for_new_seeds_scales_and_guidance(engines):
    eager, graphed = engines
    graphs = graphed.fast.graphs
    _run(graphed, seed=5)
    n = graphs.captures
    for seed, guidance in ((6, 2.0), (7, 4.5)):
        assert torch.equal(_run(graphed, seed=seed, guidance=guidance), _run(eager, seed=seed, guidance=guidance))
    assert graphs.captures == n  # the same shapes: replayed, none set up again


def test_base_model_switch_copies_into_the_same_slot_tensors(engines):
    """Another base model of the same architecture runs through the same slot (same addresses:
    captured graphs stay valid) and gives its own eager latents."""
    eager, graphed = engines
    other = "Tiny SD (other seed)"
    _run(graphed)
    slot = graphed.fast.graphs.slot
    addresses, n = weights_address(slot.module), graphed.fast.graphs.captures
    assert torch.equal(_run(graphed, base=other), _run(eager, base=other))
    assert graphed.fast.graphs.slot is slot and weights_address(slot.module) == addresses
    assert graphed.fast.graphs.captures == n  # no step set up anew for the switch
    assert torch.equal(_run(graphed), _run(eager))  # and back


def test_graphs_are_accounted_like_a_model_and_eviction_drops_them():
    engine = Engine.from_profile("tiny", device="cpu", fast=False)
    engine.fast = FastPath(graphs=True)
    _run(engine)
    report = {(e["kind"], e["name"]): e for e in engine.memory_report()}
    unet_bytes = sum(t.numel() * t.element_size() for t in engine.fast.graphs.slot.module.state_dict().values())
    assert report[("cuda_graphs", "step graphs")]["bytes"] >= unet_bytes
    resident = engine.memory.get(GRAPHS_KEY)
    engine.budget.evict(resident)
    assert engine.fast.graphs.slot is None and len(engine.fast.graphs) == 0
    assert ("cuda_graphs", "step graphs") not in {(e["kind"], e["name"]) for e in engine.memory_report()}
    _run(engine)  # made anew
    assert engine.fast.graphs.slot is not None and engine.memory.get(GRAPHS_KEY) is not None


def test_graphed_steps_hold_no_model_between_runs(engines):
    _, graphed = engines
    _run(graphed)
    steps = list(graphed.fast.graphs._steps.values())
    assert steps and all(s.unet is None and s.residuals is None and all(c.controlnet is None for c in s.controls)
                         for s in steps)


def test_a_controlnet_at_new_addresses_is_set_up_anew():
    """A graph reads weights where they were at capture: a ControlNet with other weights (or moved)
    gets its own step, and the result is that ControlNet's eager result."""
    unet = tiny_unet(1)
    g = torch.Generator().manual_seed(2)
    noise, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 148, 64, generator=g)
    hint = torch.rand(1, 3, 64, 64, generator=g)
    path = FastPath(graphs=True)
    with torch.inference_mode():
        for seed in (21, 22):
            cn = tiny_controlnet(seed)
            runs = [denoise(unet, make_scheduler(), noise, cond, torch.zeros_like(cond), steps=4, guidance=2.0,
                            controls=[ControlInput(cn, hint, 0.7)], fast=p) for p in (None, path)]
            assert torch.equal(runs[1], runs[0])
    assert path.graphs.captures == 2


def test_quick_mode_and_wrapped_controlnets_run_without_graphs():
    unet = tiny_unet(1)
    path = FastPath(graphs=True)
    ts = make_scheduler()
    ts.set_timesteps(4)
    common = (unet, ts, ts.timesteps, [], [], {})
    assert isinstance(path.parts(*common), GraphParts)
    assert not isinstance(path.parts(*common, graphable=False), GraphParts)
    wrapped = ControlInput(torch.nn.Identity(), torch.zeros(1, 3, 64, 64))
    assert not path.graphs_apply([wrapped])


def test_graphs_setting(monkeypatch):
    cuda = torch.device("cuda")
    for raw, fast, expected in (("auto", True, True), ("auto", None, False), ("0", True, False), ("1", None, True),
                                ("1", False, False)):
        monkeypatch.setenv("PFD_CUDA_GRAPHS", raw)
        monkeypatch.delenv("PFD_FAST", raising=False)
        path = FastPath.from_setting(fast, cuda) if fast is not False else None
        got = path is not None and path.graphs is not None
        assert got == expected, (raw, fast)
    monkeypatch.setenv("PFD_CUDA_GRAPHS", "1")
    assert FastPath.from_setting(True, torch.device("cpu")).graphs is None  # never on the CPU by setting
    monkeypatch.setenv("PFD_CUDA_GRAPHS", "sometimes")
    with pytest.raises(InvalidSettingError, match="PFD_CUDA_GRAPHS"):
        settings.cuda_graphs()
    with pytest.raises(InvalidSettingError, match="PFD_CUDA_GRAPHS"):  # at start, also with --no-fast
        settings.check_environment()


def test_a_patched_unet_runs_without_graphs_and_loras_keep_them(engines):
    _, graphed = engines
    c = Conditioning(torch.zeros(1, 148, 64), torch.zeros(1, 148, 64), [], unet_patch=object())
    fast, graphed_run = graphed._run_path(c, Sampler(), loras=())
    assert not graphed_run and fast.graphs is None
    fast, graphed_run = graphed._run_path(Conditioning(torch.zeros(1, 148, 64), torch.zeros(1, 148, 64), []),
                                          Sampler(), loras=("a LoRA",))
    assert graphed_run and fast.graphs is graphed.fast.graphs


def test_compile_path_with_graphs_matches_eager_and_fills_the_laid_out_slot():
    """On the compile path (dynamo's eager backend here) the slot is laid out channels_last once,
    after it was filled; later runs fill the laid-out tensors (a stale copy would keep the first
    model's weights) and each model gives its eager latents within 1e-5 relative. Only the first
    run says "compiling (once)": the compiled module is the slot, whatever the base model."""
    from tests.helpers.tensors import rel

    from prompt_free.fast import COMPILING_NOTE

    eager = Engine.from_profile("tiny", device="cpu", fast=False)
    compiled = Engine.from_profile("tiny", device="cpu", fast=False)
    compiled.fast = FastPath(compile=True, backend="eager", graphs=True)
    notes = []
    for base in ("Tiny SD", "Tiny SD (other seed)", "Tiny SD"):
        seen = []
        got = _run(compiled, base=base, progress=lambda i, n, note=None: seen.append(note))
        assert rel(got, _run(eager, base=base)) <= 1e-5
        notes.append([n for n in seen if n])
    assert notes == [[COMPILING_NOTE], [], []]
    slot = compiled.fast.graphs.slot.module
    assert slot.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_lora_run_replays_the_graphs_with_its_fused_weights_and_the_next_run_has_none(tmp_path):
    """LoRAs are fused into the base UNet for one run and the slot copies whatever the UNet holds:
    a LoRA run gives the eager LoRA picture, and the run after it today's picture (no stale slot)."""
    import numpy as np

    from prompt_free.registry import Registry
    from prompt_free.tasks import VariationSettings, image_variation
    from tests.helpers.lora_files import lora_layers, tiny_data_with_loras, write_kohya

    data = tiny_data_with_loras({"Kohya": write_kohya(tmp_path / "kohya.safetensors", lora_layers(seed=1), alpha=2.0)})
    eager, graphed = (Engine(Registry.from_dict(data, profile="tiny-lora"), device="cpu", fast=False) for _ in range(2))
    graphed.fast = FastPath(graphs=True)

    def pixels(engine, loras):
        s = VariationSettings(width=64, height=64, steps=3, seed=3, loras=loras)
        return np.asarray(image_variation(engine, REF, s).images[0])

    runs = [(), (("Kohya", 1.0),), ()]
    got = [pixels(graphed, loras) for loras in runs]
    assert all(np.array_equal(g, pixels(eager, loras)) for g, loras in zip(got, runs))
    assert not np.array_equal(got[0], got[1]) and graphed.fast.graphs.replays == 9


def test_out_of_memory_drops_the_captured_steps_and_the_retry_gives_the_same_latents():
    engine = Engine.from_profile("tiny", device="cpu", fast=False)
    engine.fast = FastPath(graphs=True)
    want = _run(engine)
    graphs = engine.fast.graphs
    n = graphs.captures
    failing = FailingUNet(graphs.slot.module, times=1)  # the module the graphed steps run
    try:
        got = _run(engine)
    finally:
        failing.remove()
    assert failing.left == 0 and torch.equal(got, want)
    assert graphs.captures > n  # the steps were dropped and set up again for the retry


def test_inpainting_channels_and_a_latent_hook_are_graphed_bit_for_bit():
    """An inpainting UNet's extra input channels are a per-run input of the graph; the latent
    blending hook runs between steps, outside it. Then a normal UNet takes a new slot."""
    unet = tiny_unet(12, inpainting=True)
    g = torch.Generator().manual_seed(5)
    noise, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(1, 148, 64, generator=g)
    extra = torch.rand(2, 5, 8, 8, generator=g)
    keep = torch.rand(1, 4, 8, 8, generator=g)
    hook = lambda i, t, latents: 0.5 * latents + 0.5 * keep  # noqa: E731
    path = FastPath(graphs=True)
    with torch.inference_mode():
        runs = [denoise(unet, make_scheduler(), noise, cond, torch.zeros_like(cond), steps=4, guidance=2.0,
                        extra_unet_channels=extra, after_step=hook, fast=p) for p in (None, path)]
        assert torch.equal(runs[1], runs[0])
        inpainting_slot = path.graphs.slot
        plain = tiny_unet(1)
        runs = [denoise(plain, make_scheduler(), noise, cond, torch.zeros_like(cond), steps=4, guidance=2.0, fast=p)
                for p in (None, path)]
    assert torch.equal(runs[1], runs[0]) and path.graphs.slot is not inpainting_slot
