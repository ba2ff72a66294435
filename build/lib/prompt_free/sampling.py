"""The denoising loop of Prompt-Free Diffusion, shared by every task and by ``sample_latents``.

Official semantics (spec section c): DDIM, 50 steps, eta 0, scaled-linear betas 0.00085..0.012
over 1000 steps, ``leading`` spacing with offset 1, final alpha = alphas_cumprod[0]; guidance
``e_u + g * (e_c - e_u)`` with the batch ordered [unconditional, conditional], and only the
conditional pass when g == 1; ControlNet residuals from the same latents and context, added to
both guidance halves. Other diffusers schedulers can be selected by name.

Step counts that do not divide 1000: the official sampler visits one step more than asked
(timesteps range(0, 1000, 1000 // steps) + 1); we follow diffusers and visit exactly the
number asked. At the default 50 steps the two agree.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import cancel, settings
from .errors import ConfigError, InvalidSettingError

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
}
DEFAULT_SCHEDULER = "DDIM"


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
    """How to sample one run: size, seeds, steps, guidance and scheduler (defaults: the paper's).

    Image i of a run uses seed ``seed + i``. ``checked()`` validates every field against
    ``settings`` and floors the size to multiples of 64 (official)."""

    width: int = 512
    height: int = 512
    seed: int = 20
    num_images: int = 1
    steps: int = 50
    guidance: float = 2.0
    scheduler: str = DEFAULT_SCHEDULER

    def checked(self) -> "Sampler":
        from .images import snap_size

        steps = settings.STEPS.check(self.steps)
        num_images = settings.NUM_IMAGES.check(self.num_images)
        seed = settings.SEED.check(self.seed)
        guidance = float(settings.GUIDANCE.check(self.guidance))
        if self.scheduler not in SCHEDULERS:
            raise InvalidSettingError(f"unknown scheduler '{self.scheduler}'; choose one of: {', '.join(SCHEDULERS)}")
        width, height = snap_size(self.width, self.height)
        return Sampler(width, height, seed, num_images, steps, guidance, self.scheduler)

    @property
    def seeds(self) -> List[int]:
        return [self.seed + i for i in range(self.num_images)]


def initial_noise(seeds: Sequence[int], shape: Tuple[int, int, int]) -> torch.Tensor:
    """The initial latents of a run, the only place they are made: (len(seeds), *shape), image i
    drawn from seed i on the CPU, so a seed gives the same picture on any device."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in seeds])


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
        frac_lo, frac_hi = step / num_steps, (step + 1) / num_steps
        return self.scale != 0 and frac_hi > self.start and frac_lo < self.end


StepHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def _step_kwargs(scheduler, generator):
    params = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params and generator is not None:
        kwargs["generator"] = generator
    return kwargs


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
    progress: Optional[Callable[[int, int], None]] = None,
    timesteps: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Run the sampler from initial ``noise`` (scaled by the scheduler's init sigma) and return
    the final latents (before the VAE).

    cond: (B, N, C) context; uncond: (1 or B, N, C) unconditional context (unused when
    guidance == 1). ``extra_unet_channels`` (B, k, h, w) is concatenated to the UNet input
    (inpainting UNets). ``after_step(i, t, latents)`` may replace the latents after a step
    (latent blending for inpainting). ``timesteps`` overrides the scheduler's spacing.
    """
    device, dtype = unet.device, unet.dtype
    B = noise.shape[0]
    cond = cond.to(device, dtype)
    if cond.shape[0] != B:
        cond = cond.expand(B, -1, -1) if cond.shape[0] == 1 else cond.repeat_interleave(B // cond.shape[0], 0)
    guided = guidance != 1.0
    if guided:
        if uncond is None:
            raise ValueError("guidance != 1 needs an unconditional context")
        context = torch.cat([uncond.to(device, dtype).expand(B, -1, -1), cond])
    else:
        context = cond

    if timesteps is not None:
        scheduler.set_timesteps(timesteps=list(timesteps), device=device)
    else:
        scheduler.set_timesteps(steps, device=device)
    ts = scheduler.timesteps
    latents = noise.to(device, torch.float32) * scheduler.init_noise_sigma
    hints = [c.hint.to(device, dtype) for c in controls]
    step_kwargs = _step_kwargs(scheduler, generator)
    extra = None
    if extra_unet_channels is not None:
        extra = extra_unet_channels.to(device, dtype)
        extra = torch.cat([extra] * 2) if guided else extra

    for i, t in enumerate(ts):
        cancel.check()  # a cancelled request stops here, between two steps (prompt_free.cancel)
        x = torch.cat([latents] * 2) if guided else latents
        x = scheduler.scale_model_input(x, t).to(dtype)
        down_res = mid_res = None
        for control, hint in zip(controls, hints):
            if not control.active(i, len(ts)):
                continue
            hint_b = hint.expand(x.shape[0], -1, -1, -1) if hint.shape[0] == 1 else torch.cat([hint] * (x.shape[0] // hint.shape[0]))
            d, m = control.controlnet(
                x, t, encoder_hidden_states=context, controlnet_cond=hint_b,
                conditioning_scale=float(control.scale), return_dict=False,
            )
            if down_res is None:
                down_res, mid_res = list(d), m
            else:
                down_res = [a + b for a, b in zip(down_res, d)]
                mid_res = mid_res + m
        unet_in = torch.cat([x, extra], dim=1) if extra is not None else x
        eps = unet(
            unet_in, t, encoder_hidden_states=context,
            down_block_additional_residuals=down_res, mid_block_additional_residual=mid_res,
            return_dict=False,
        )[0].float()
        if guided:
            e_u, e_c = eps.chunk(2)
            eps = e_u + guidance * (e_c - e_u)
        latents = scheduler.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
        if after_step is not None:
            latents = after_step(i, t, latents)
        if progress is not None:
            progress(i + 1, len(ts))
    return latents


@torch.no_grad()
def sample_latents(unet, cond, *, uncond, latents, steps, guidance, controlnet=None, hint=None):
    """Final latents of the paper's sampler (DDIM as configured above) from initial ``latents``.

    The same loop the app's generation runs. ``cond``/``uncond`` (B, N, C); ``hint``
    (B, 3, H, W) in [0, 1] for ``controlnet`` (residuals at scale 1.0).
    """
    controls = []
    if controlnet is not None:
        if hint is None:
            raise ValueError("a controlnet needs a hint image")
        controls.append(ControlInput(controlnet, hint))
    return denoise(
        unet, make_scheduler(DEFAULT_SCHEDULER), latents, cond, uncond,
        steps=steps, guidance=guidance, controls=controls,
    )
