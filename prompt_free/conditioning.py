"""What a run is conditioned on: the one thing every task builds and the engine samples.

A task turns its inputs into a ``Conditioning``: the context (SeeCoder or text embeddings) and
its unconditional counterpart, the ControlNets with their hints and windows, and optional
hooks: a ``UNetPatch`` (e.g. IP-Adapter attention processors, installed on the shared UNet for
one run) and an ``Inpainting`` (extra UNet input channels, or latent blending after every
step). ``Engine.generate(base_model, conditioning, sampler)`` samples it; variants such as the
comparison columns or try-on are different conditionings, never different loops.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Protocol, Sequence, Tuple

import torch

from .sampling import ControlInput, Sampler, StepHook, make_scheduler
from .steps import ContextPair, ContextSchedule, StepContext, in_window


class UNetPatch(Protocol):
    """A temporary change of the shared UNet. The engine applies it under its run lock, for one
    run, and undoes it afterwards (also on error), so no other request ever sees it."""

    def applied(self, unet) -> contextlib.AbstractContextManager: ...


class Inpainting(Protocol):
    """How a run keeps the known part of an image: extra UNet input channels and/or a hook that
    edits the latents after every step. Both get the run's own initial noise."""

    def unet_channels(self, num_images: int) -> Optional[torch.Tensor]: ...

    def step_hook(self, noise: torch.Tensor, sampler: Sampler) -> Optional[StepHook]: ...


@dataclass
class Conditioning:
    """context: (1 or B, N, C); uncond: (1, N, C), unused when guidance == 1. ``schedule``:
    which (context, uncond) pair acts at each step, for contexts that change during the run
    (None: ``context`` and ``uncond`` throughout); the loop asks ``step_context`` every step, so
    every sampling path runs it."""

    context: torch.Tensor
    uncond: Optional[torch.Tensor]
    controls: Sequence[ControlInput] = ()
    unet_patch: Optional[UNetPatch] = None
    inpainting: Optional[Inpainting] = None
    schedule: Optional[ContextSchedule] = None

    def step_context(self, num_images: int, guided: bool, device, dtype) -> StepContext:
        """The context of every step of a run of ``num_images`` (guided: with the unconditional
        half), on the UNet's device and dtype (``sampling.denoise(step_context=)``)."""
        return StepContext(self.context, self.uncond, num_images, guided, device, dtype, self.schedule)


@dataclass(frozen=True)
class ReferenceWindow:
    """A ``Conditioning.schedule``: the pair ``inside`` at the steps within the fractions [start,
    end) of the run (``steps.in_window``, the ControlNets' rule), ``outside`` at the others. Both
    pairs are made before the run (``pairs``: ``StepContext`` batches them once), so a step only
    picks one; a change of pair is a full step in quick mode (``deep_cache``: the kept deep
    features were computed with the other context)."""

    start: float
    end: float
    inside: ContextPair
    outside: ContextPair

    @property
    def pairs(self) -> Tuple[ContextPair, ContextPair]:
        return self.inside, self.outside

    def __call__(self, i: int, total: int) -> ContextPair:
        return self.inside if in_window(i, total, self.start, self.end) else self.outside


# ----------------------------------------------------------------------------- UNet patches
@dataclass
class AttentionProcessors:
    """Attention processors (e.g. an IP-Adapter's) installed for one run, with the ``scale`` set
    on those that take one; the UNet's own processors are put back afterwards."""

    processors: Dict[str, torch.nn.Module]
    scale: Optional[float] = None

    @contextlib.contextmanager
    def applied(self, unet) -> Iterator[None]:
        if self.scale is not None:
            for p in self.processors.values():
                if hasattr(p, "to_k_ip"):  # IP-Adapter processors; the others take no scale
                    p.scale = [self.scale]
        saved = unet.attn_processors
        unet.set_attn_processor(dict(self.processors))
        try:
            with warnings.catch_warnings():
                # Our context carries the image tokens itself; diffusers warns about that every step.
                warnings.filterwarnings("ignore", message=".*passed a tensor as `encoder_hidden_states`.*")
                yield
        finally:
            unet.set_attn_processor(saved)


# ----------------------------------------------------------------------------- inpainting
@dataclass
class MaskedImageChannels:
    """9-channel inpainting UNets: [mask, masked-image latents] as extra input channels."""

    mask_latent: torch.Tensor  # (1, 1, h, w), 1 = change
    masked_image_latents: torch.Tensor  # (1, 4, h, w)

    def unet_channels(self, num_images: int) -> torch.Tensor:
        m = self.mask_latent.to(self.masked_image_latents)
        return torch.cat([m, self.masked_image_latents], dim=1).expand(num_images, -1, -1, -1)

    def step_hook(self, noise: torch.Tensor, sampler: Sampler) -> None:
        return None


@dataclass
class LatentBlend:
    """Standard UNets: after every step the latents outside the mask are replaced by the
    original's, noised with the run's own initial noise to where the sampler now is, and by the
    clean latents after the last step."""

    known_latents: torch.Tensor  # (1, 4, h, w) float32, the original image
    mask_latent: torch.Tensor  # (1, 1, h, w), 1 = change

    def unet_channels(self, num_images: int) -> None:
        return None

    def step_hook(self, noise: torch.Tensor, sampler: Sampler) -> StepHook:
        z0 = self.known_latents.expand(noise.shape[0], -1, -1, -1)
        m = self.mask_latent.to(z0)
        noise = noise.to(z0.device)
        # Its own scheduler instance: add_noise of some schedulers depends on their step state.
        sched = make_scheduler(sampler.scheduler)
        sched.set_timesteps(sampler.steps, device=z0.device)
        ts = sched.timesteps
        keep = 1.0 - m

        def after_step(i: int, t, latents: torch.Tensor) -> torch.Tensor:
            if i + 1 < len(ts):  # after step i the latents are at the next timestep of the schedule
                known = sched.add_noise(z0, noise, ts[i + 1 : i + 2])
            else:
                known = z0
            return m * latents + keep * known.to(latents.dtype)

        return after_step
