"""The denoising loop of Prompt-Free Diffusion, shared by every task and by ``sample_latents``.

Official semantics (spec section c): DDIM, 50 steps, eta 0, scaled-linear betas 0.00085..0.012
over 1000 steps, ``leading`` spacing with offset 1, final alpha = alphas_cumprod[0]; guidance
``e_u + g * (e_c - e_u)`` with the batch ordered [unconditional, conditional], and only the
conditional pass when g == 1; ControlNet residuals from the same latents and context, added to
both guidance halves. Other diffusers schedulers can be selected by name.

Step counts that do not divide 1000: the official sampler visits one step more than asked
(timesteps range(0, 1000, 1000 // steps) + 1); we follow diffusers and visit exactly the
number asked. At the default 50 steps the two agree.

One step, one loop: ``denoise`` asks the run's ``steps.StepContext`` for each step's context
and its strategy for the step: ``steps.EagerParts`` (the schedulers' and models' own calls),
``fast.FastParts`` / ``fast.GraphParts`` (``fast=``: exact faster parts, compiled or graphed on
CUDA) or ``deep_cache.DeepCache`` around either (quick mode). The step itself is
``steps.guided_eps``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import cancel, settings
from .deep_cache import DeepCache, check_supported
from .errors import ConfigError, InvalidSettingError
from .fast import FastPath
from .images import snap_size
from .steps import (  # noqa: F401 - the loop's helpers, importable from here as before
    STEP_ETA, ContextSchedule, EagerParts, StepContext, batched, guidance_context, guide, guided_eps, step_kwargs,
    in_window, step_outputs, summed_residuals, unet_input,
)

# The official sampler as a diffusers scheduler config.
OFFICIAL_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    timestep_spacing="leading",
    steps_offset=1,
    set_alpha_to_one=False,
    clip_sample=False,
    prediction_type="epsilon",
)

# Display name -> (diffusers class name, extra config). "DDIM" is the paper's sampler.
SCHEDULERS: Dict[str, tuple] = {
    "DDIM": ("DDIMScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),
    # For few-step LoRAs (checkpoints.yaml `loras:` entries name them with their steps and guidance):
    # LCM-LoRA's LCMScheduler, TCD-LoRA's TCDScheduler and Hyper-SD's DDIM with trailing spacing, each
    # on the same official betas, as their model cards build them (`from_config` of SD 1.5's scheduler).
    "LCM": ("LCMScheduler", {}),
    "TCD": ("TCDScheduler", {}),
    "DDIM trailing": ("DDIMScheduler", {"timestep_spacing": "trailing"}),
}
DEFAULT_SCHEDULER = "DDIM"
# Consistency schedulers pick their timesteps from the 50 of their distillation schedule
# (``original_inference_steps``): more steps than that are refused.
FEW_STEP_SCHEDULERS = ("LCM", "TCD")


def make_scheduler(name: str = DEFAULT_SCHEDULER):
    """A fresh scheduler (schedulers hold per-run state, so one per generation)."""
    import diffusers

    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler '{name}'; choose one of: {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {k: v for k, v in {**OFFICIAL_SCHEDULER_CONFIG, **extra}.items() if k in accepted}
    return cls(**config)


@dataclass(frozen=True)
class Sampler:
    """How to sample one run: size, seeds, steps, guidance, scheduler (defaults: the paper's)
    and the LoRAs applied to the base model for this run only (``loras``: (name, scale) pairs,
    at most ``settings.MAX_LORAS``; empty: the base model as it is). ``deep_cache`` > 1 is the
    approximate quick mode (``prompt_free.deep_cache``); 1, the default, is off.

    Image i of a run uses seed ``seed + i``. ``checked()`` validates every field against
    ``settings`` and floors the size to multiples of 64 (official)."""

    width: int = 512
    height: int = 512
    seed: int = 20
    num_images: int = 1
    steps: int = 50
    guidance: float = 2.0
    scheduler: str = DEFAULT_SCHEDULER
    loras: Tuple[Tuple[str, float], ...] = ()
    deep_cache: int = 1  # quick mode, approximate: deep features reused for N steps (1: off; prompt_free.deep_cache)

    def checked(self) -> "Sampler":
        if self.is_checked:
            return self
        steps = settings.STEPS.check(self.steps)
        num_images = settings.NUM_IMAGES.check(self.num_images)
        seed = settings.SEED.check(self.seed)
        guidance = float(settings.GUIDANCE.check(self.guidance))
        if self.scheduler not in SCHEDULERS:
            raise InvalidSettingError(f"unknown scheduler '{self.scheduler}'; choose one of: {', '.join(SCHEDULERS)}")
        if self.scheduler in FEW_STEP_SCHEDULERS:
            settings.FEW_STEPS.check(steps, f"steps with the {self.scheduler} sampler")
        width, height = snap_size(self.width, self.height)
        deep_cache = settings.DEEP_CACHE.check(self.deep_cache)
        out = Sampler(width, height, seed, num_images, steps, guidance, self.scheduler, checked_loras(self.loras),
                      deep_cache)
        object.__setattr__(out, "_checked", True)  # not a field: ``replace`` makes an unchecked copy
        return out

    @property
    def approximate(self) -> bool:
        """Quick mode: deep features reused between full steps (a different, close picture)."""
        return self.deep_cache > 1

    def loop_options(self) -> dict:
        """The keywords of ``denoise`` this sampler decides."""
        return dict(steps=self.steps, guidance=self.guidance, deep_cache=self.deep_cache)

    def check_unet(self, unet, base_model: str) -> None:
        """Refuse a UNet this sampler cannot run (quick mode needs the SD-1.x layout it reuses)."""
        if self.approximate:
            check_supported(unet, base_model)

    def sized(self, width: int, height: int, num_images: Optional[int] = None) -> "Sampler":
        """This checked sampler at the size (and image count) a task decided: only those are checked."""
        if not self.is_checked:
            return replace(self, width=width, height=height,
                           num_images=self.num_images if num_images is None else num_images).checked()
        width, height = snap_size(width, height)
        n = self.num_images if num_images in (None, self.num_images) else settings.NUM_IMAGES.check(num_images)
        out = replace(self, width=width, height=height, num_images=n)
        object.__setattr__(out, "_checked", True)
        return out

    @property
    def is_checked(self) -> bool:
        """Made by ``checked()``: a request checks its sampler once, where it is made, and the
        engine takes it as it is."""
        return self.__dict__.get("_checked", False)

    @property
    def seeds(self) -> List[int]:
        return [self.seed + i for i in range(self.num_images)]


def checked_loras(loras) -> Tuple[Tuple[str, float], ...]:
    """``loras`` as ((name, scale), ...): at most ``settings.MAX_LORAS``, each named once, each
    scale in ``settings.LORA_SCALE``. Whether the names exist is the registry's check."""
    try:
        pairs = [(name, scale) for name, scale in (loras or ())]
    except (TypeError, ValueError):
        raise InvalidSettingError(f"loras must be (name, scale) pairs, got {loras!r}") from None
    if len(pairs) > settings.MAX_LORAS:
        raise InvalidSettingError(f"at most {settings.MAX_LORAS} LoRAs can be applied at once, got {len(pairs)}")
    out = []
    for name, scale in pairs:
        if not isinstance(name, str) or not name:
            raise InvalidSettingError(f"a LoRA is chosen by its name in checkpoints.yaml, got {name!r}")
        if any(name == n for n, _ in out):
            raise InvalidSettingError(f"LoRA '{name}' is chosen twice; choose it once, with one scale")
        out.append((name, float(settings.LORA_SCALE.check(scale, f"the scale of LoRA '{name}'"))))
    return tuple(out)


def initial_noise(seeds: Sequence[int], shape: Tuple[int, int, int]) -> torch.Tensor:
    """The initial latents of a run, the only place they are made: (len(seeds), *shape), image i
    drawn from seed i on the CPU, so a seed gives the same picture on any device."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in seeds])


@dataclass(frozen=True)
class Start:
    """Start from an image instead of pure noise (img2img): ``latents`` (1, 4, h, w) float32, the
    image's scaled VAE latents at the run's size; ``strength`` in (0, 1]: the part of the
    schedule that is run (1 would be pure noise: a task makes no ``Start`` then, so today's
    loop runs unchanged). The run's own seeded initial noise is added to the latents at the
    first timestep run (``begin``)."""

    latents: torch.Tensor
    strength: float

    def begin(self, scheduler, steps: int, noise: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the timesteps to run, the noised latents), after ``scheduler.set_timesteps``."""
        # Adapted from diffusers 0.42.1, src/diffusers/pipelines/stable_diffusion/
        # pipeline_stable_diffusion_img2img.py: get_timesteps (skip the first 1 - strength of the
        # timesteps, set_begin_index for the schedulers that keep a step index) and
        # prepare_latents (scheduler.add_noise at the first timestep run, no init_noise_sigma).
        first = start_index(steps, self.strength) * scheduler.order
        ts = scheduler.timesteps[first:]
        if len(ts) == 0:
            raise InvalidSettingError(no_step_message(steps, self.strength))
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        z0 = self.latents.to(noise.device, torch.float32).expand(noise.shape[0], -1, -1, -1)
        return ts, scheduler.add_noise(z0, noise, ts[:1].repeat(noise.shape[0]))


def start_index(steps: int, strength: float) -> int:
    """The first of ``steps`` a run from an image at ``strength`` makes (diffusers' img2img rule:
    ``steps - min(int(steps * strength), steps)``)."""
    return max(steps - min(int(steps * strength), steps), 0)


def no_step_message(steps: int, strength: float) -> str:
    return (f"denoise strength {strength:g} with {steps} steps leaves no step to run (int({steps} x {strength:g}) = 0): "
            f"raise the denoise strength to at least {1 / steps:.3g} or use more steps")


@dataclass
class ControlInput:
    """One ControlNet in the loop: its model, hint in [0, 1] RGB (1 or B, 3, H, W), scale and
    the fraction of the steps [start, end) during which it acts."""

    controlnet: torch.nn.Module
    hint: torch.Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def active(self, step: int, num_steps: int) -> bool:
        return self.scale != 0 and in_window(step, num_steps, self.start, self.end)


StepHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
# ``preview(steps_done, total, latents)``: see ``denoise``.
PreviewHook = Callable[[int, int, torch.Tensor], None]


_step_kwargs = step_kwargs  # its former name


def report_progress(progress, i: int, n: int, note: Optional[str] = None) -> None:
    """Call ``progress(i, n)``, or ``progress(i, n, note)`` when there is a note (such as
    "compiling (once)") and the callback takes a third argument."""
    if progress is None:
        return
    if note is not None:
        try:
            inspect.signature(progress).bind(i, n, note)
        except (TypeError, ValueError):
            pass
        else:
            progress(i, n, note)
            return
    progress(i, n)


def denoise(
    unet,
    scheduler,
    noise: torch.Tensor,
    cond: torch.Tensor,
    uncond: Optional[torch.Tensor],
    *,
    steps: int,
    guidance: float,
    controls: Sequence[ControlInput] = (),
    generator: Optional[torch.Generator] = None,
    extra_unet_channels: Optional[torch.Tensor] = None,
    after_step: Optional[StepHook] = None,
    progress: Optional[Callable[..., None]] = None,
    timesteps: Optional[Sequence[int]] = None,
    fast=None,
    preview: Optional[PreviewHook] = None,
    deep_cache: int = 1,
    step_context: Optional[StepContext] = None,
    start: Optional[Start] = None,
) -> torch.Tensor:
    """Run the sampler from initial ``noise`` (scaled by the scheduler's init sigma) and return
    the final latents (before the VAE).

    cond: (B, N, C) context; uncond: (1 or B, N, C) unconditional context (unused when
    guidance == 1). ``step_context``: the context of each step (``steps.StepContext``, e.g.
    ``Conditioning.step_context``); None: ``cond`` / ``uncond`` at every step.
    ``extra_unet_channels`` (B, k, h, w) is concatenated to the UNet input (inpainting UNets).
    ``after_step(i, t, latents)`` may replace the latents after a step (latent blending for
    inpainting). ``timesteps`` overrides the scheduler's spacing. ``fast``: a
    ``prompt_free.fast.FastPath`` for its faster parts of the same loop (None: the eager parts).
    ``preview(steps_done, total, latents)`` is called after every ``settings.preview_interval``
    steps but the last (the final picture follows) with the step's predicted x0 where the
    scheduler returns one (DDIM, Euler), else the new latents (the multistep schedulers return
    no x0); the hook reads those tensors and must not change them, and without a hook the loop
    does no preview work. ``deep_cache`` N > 1: quick mode, approximate
    (``prompt_free.deep_cache``); 1 (off) is the exact loop. ``start``: begin from an image's
    latents part way into the schedule (img2img, ``Start``); None: from pure noise.
    """
    device, dtype = unet.device, unet.dtype
    guided = guidance != 1.0
    if step_context is None:
        step_context = StepContext(cond, uncond, noise.shape[0], guided, device, dtype)
    elif step_context.guided != guided:
        raise ValueError(f"the step context is {'' if step_context.guided else 'un'}guided, the run is not")
    ts, latents = _first_latents(scheduler, noise.to(device, torch.float32), steps, timesteps, start)
    n = len(ts)
    batch = 2 * noise.shape[0] if guided else noise.shape[0]
    extra = None if extra_unet_channels is None else batched(extra_unet_channels.to(device, dtype), batch)
    parts = _strategy(unet, scheduler, ts, controls, batch, step_kwargs(scheduler, generator), fast, deep_cache)
    if fast is not None and fast.new_shape((parts.compiled_unet_id, batch, tuple(noise.shape[1:]),
                                            tuple(id(c.controlnet) for c in controls),
                                            None if extra is None else extra.shape[1], deep_cache)):
        report_progress(progress, 0, n, fast.note)  # the first step compiles
    if deep_cache > 1:
        parts = DeepCache(deep_cache, parts, unet, ts, fast)
    every = settings.preview_interval(n) if preview is not None else 0
    g = guidance if guided else None
    cancel.steps_started()  # the limit of the work before the steps ends here (prompt_free.cancel)
    try:
        for i, t in enumerate(ts):
            cancel.check()  # a cancelled request stops here, between two steps (prompt_free.cancel)
            context = step_context.at(i, n)
            x = torch.cat([latents] * 2) if guided else latents
            x = parts.scale_input(x, i).to(dtype)
            active = tuple(k for k, control in enumerate(controls) if control.active(i, n))
            latents, x0 = parts.step(parts.guided_eps(x, extra, i, active, g, context), i, latents)
            if after_step is not None:
                latents = after_step(i, t, latents)
            if every and (i + 1) % every == 0 and i + 1 < n:
                preview(i + 1, n, latents if x0 is None else x0)
            if progress is not None:
                progress(i + 1, n)
    finally:
        parts.finish()
    return latents


def _first_latents(scheduler, noise: torch.Tensor, steps: int, timesteps, start: Optional[Start]):
    """(the timesteps the run makes, its first latents): the scheduler's spacing (or
    ``timesteps``) from pure noise, or from ``start``'s image part way in (every strategy then
    sees only the timesteps run: the controls' windows, quick mode, previews)."""
    if timesteps is not None:
        scheduler.set_timesteps(timesteps=list(timesteps), device=noise.device)
    else:
        scheduler.set_timesteps(steps, device=noise.device)
    if start is None:
        return scheduler.timesteps, noise * scheduler.init_noise_sigma
    planned = steps if timesteps is None else len(timesteps)  # diffusers' num_inference_steps
    return start.begin(scheduler, planned, noise)


def _strategy(unet, scheduler, ts, controls: Sequence[ControlInput], batch: int, kwargs: dict, fast, deep_cache: int):
    """The run's parts: the fast path's (graphs of the guided step only for the exact loop: quick
    mode reuses features) or the eager ones. Each hint is batched once, the same for both
    guidance halves."""
    device, dtype = unet.device, unet.dtype
    hints = [batched(c.hint.to(device, dtype), batch) for c in controls]
    if fast is not None:
        return fast.parts(unet, scheduler, ts, controls, hints, kwargs, graphable=deep_cache == 1)
    return EagerParts(unet, scheduler, ts, controls, hints, kwargs)


@torch.no_grad()
def sample_latents(unet, cond, *, uncond, latents, steps, guidance, controlnet=None, hint=None, fast: bool = False):
    """Final latents of the paper's sampler (DDIM as configured above) from initial ``latents``.

    The same loop the app's generation runs. ``cond``/``uncond`` (B, N, C); ``hint``
    (B, 3, H, W) in [0, 1] for ``controlnet`` (residuals at scale 1.0). ``fast``: the exact
    parts of the fast path (``prompt_free.fast``; never compiled here).
    """
    controls = []
    if controlnet is not None:
        if hint is None:
            raise ValueError("a controlnet needs a hint image")
        controls.append(ControlInput(controlnet, hint))
    path = FastPath(compile=False) if fast else None
    return denoise(
        unet, make_scheduler(DEFAULT_SCHEDULER), latents, cond, uncond,
        steps=steps, guidance=guidance, controls=controls, fast=path,
    )
