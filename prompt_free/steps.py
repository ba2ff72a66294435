"""One step of the denoising loop, the part every way of running it shares.

``sampling.denoise`` is the one loop. At every step it asks a ``StepContext`` for the step's
context (what cross-attention attends to, already batched for guidance) and its strategy for the
guided noise prediction with that context. Strategies differ in how they compute the same step,
never in what the step is (``guided_eps``): ``EagerParts`` here (the models' and the scheduler's
own calls), ``fast.FastParts`` and ``fast.GraphParts`` (exact faster parts, one CUDA graph per
step shape), ``DeepCache`` (quick mode). This module imports none of them; they and
the loop import it, so the loop modules form no import cycle.
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import torch

# The step's stochastic parameter by diffusers class: 0 (deterministic) for DDIM and the others
# that take one; TCD's gamma at its authors' recommended 0.3 (its noise comes from the run's
# seeded generator, so a seed still gives one picture).
STEP_ETA = {"TCDScheduler": 0.3}

# (conditional context, unconditional context or None) acting at a step.
ContextPair = Tuple[torch.Tensor, Optional[torch.Tensor]]
# ``schedule(i, total) -> ContextPair``: which contexts act at step i of total.
ContextSchedule = Callable[[int, int], ContextPair]


def in_window(step: int, num_steps: int, start: float, end: float) -> bool:
    """Whether step ``step`` of ``num_steps`` acts in the window [start, end) of the run's
    fractions: its own span [step / n, (step + 1) / n) overlaps it (the ControlNets' windows and
    the reference window share this rule)."""
    return (step + 1) / num_steps > start and step / num_steps < end


def guidance_context(cond: torch.Tensor, uncond: Optional[torch.Tensor], B: int, device, dtype) -> torch.Tensor:
    """The UNet's context for a batch of ``B`` images: ``cond`` (1 or B rows, repeated per image)
    alone, or, with an unconditional context (guided runs), [uncond x B, cond]: the official order."""
    cond = cond.to(device, dtype)
    if cond.shape[0] != B:
        cond = cond.expand(B, -1, -1) if cond.shape[0] == 1 else cond.repeat_interleave(B // cond.shape[0], 0)
    if uncond is None:
        return cond
    return torch.cat([uncond.to(device, dtype).expand(B, -1, -1), cond])


class StepContext:
    """The context of every step of one run: ``at(i, total)`` is the (2B or B, N, C) tensor the
    UNet and the ControlNets attend to at step i, batched for guidance as ``guidance_context``.

    ``schedule`` (None: the pair ``cond``, ``uncond`` at every step) says which pair acts at a
    step: the one place a context that changes during the run (a reference window, a negative
    reference) is written, and then every strategy runs it. A pair is batched only when it is not
    the previous step's (compared by identity), so an unchanged context is the same tensor object
    at every step, made once: a strategy keeping a copy (the graphed step) copies on change only.
    A schedule with ``pairs`` (the pairs it picks from, e.g. ``conditioning.ReferenceWindow``) has
    them batched here, before the loop; each pair is batched once per run however often it
    returns, so a step only picks a ready tensor."""

    def __init__(self, cond: torch.Tensor, uncond: Optional[torch.Tensor], batch: int, guided: bool, device, dtype,
                 schedule: Optional[ContextSchedule] = None):
        self.guided, self.schedule = bool(guided), schedule
        self._batch, self._device, self._dtype = batch, device, dtype
        self._pair: ContextPair = (cond, uncond)
        self._context = self._batched(cond, uncond)  # before the loop: a missing uncond fails before any work
        # batched pairs by the identity of their tensors (kept alive here, so an id is never reused)
        self._made = {(id(cond), id(uncond)): (cond, uncond, self._context)}
        for pair in getattr(schedule, "pairs", ()):
            self._made_for(*pair)

    def _made_for(self, cond: torch.Tensor, uncond: Optional[torch.Tensor]) -> torch.Tensor:
        key = (id(cond), id(uncond))
        if key not in self._made:
            self._made[key] = (cond, uncond, self._batched(cond, uncond))
        return self._made[key][2]

    def _batched(self, cond: torch.Tensor, uncond: Optional[torch.Tensor]) -> torch.Tensor:
        if self.guided and uncond is None:
            raise ValueError("guidance != 1 needs an unconditional context")
        return guidance_context(cond, uncond if self.guided else None, self._batch, self._device, self._dtype)

    def at(self, i: int, total: int) -> torch.Tensor:
        if self.schedule is not None:
            cond, uncond = self.schedule(i, total)
            if cond is not self._pair[0] or uncond is not self._pair[1]:
                self._context = self._made_for(cond, uncond)
                self._pair = (cond, uncond)
        return self._context


def step_kwargs(scheduler, generator) -> dict:
    """The keyword arguments of ``scheduler.step`` for one run: its eta (``STEP_ETA``) and the
    run's generator, where the scheduler takes them."""
    params = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in params:
        kwargs["eta"] = STEP_ETA.get(type(scheduler).__name__, 0.0)
    if "generator" in params and generator is not None:
        kwargs["generator"] = generator
    return kwargs


def step_outputs(out) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A diffusers scheduler step's tuple as (next latents, predicted x0 or None): DDIM and the
    Euler schedulers return their x0 second; the multistep ones (DPM++, UniPC, PNDM) return none."""
    return out[0], (out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None)


def summed_residuals(pairs) -> Tuple[Optional[List[torch.Tensor]], Optional[torch.Tensor]]:
    """The ControlNets' (down residuals, mid residual) pairs added up; (None, None) for none."""
    down = mid = None
    for d, m in pairs:
        if down is None:
            down, mid = list(d), m
        else:
            down = [a + b for a, b in zip(down, d)]
            mid = mid + m
    return down, mid


def unet_input(x: torch.Tensor, extra: Optional[torch.Tensor]) -> torch.Tensor:
    """The UNet's input: the latents, and the inpainting channels after them when there are any."""
    return torch.cat([x, extra], dim=1) if extra is not None else x


def guide(eps: torch.Tensor, guidance) -> torch.Tensor:
    """Classifier-free guidance over the batch [unconditional, conditional] (None: unguided)."""
    if guidance is None:
        return eps
    e_u, e_c = eps.chunk(2)
    return e_u + guidance * (e_c - e_u)


def guided_eps(residuals: Callable[[int], tuple], unet: Callable, x: torch.Tensor, extra: Optional[torch.Tensor],
               active: Iterable[int], guidance) -> torch.Tensor:
    """The guided noise prediction of one step, the one definition every strategy runs: the
    acting ControlNets' residuals (``residuals(k)`` -> (down, mid)) summed and added to both
    guidance halves, the UNet (``unet(unet_in, down, mid)`` -> eps) on the latents and the
    inpainting channels, then the guidance (a float, a 0-dim tensor, or None: unguided)."""
    down, mid = summed_residuals(residuals(k) for k in active)
    return guide(unet(unet_input(x, extra), down, mid).float(), guidance)


def batched(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``x`` (1 or k rows) repeated to ``batch`` rows: one row is expanded (no copy), k rows are
    tiled (both guidance halves get the same per-image rows)."""
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 else torch.cat([x] * (batch // x.shape[0]))


class EagerParts:
    """The eager strategy: the scheduler's own ``scale_model_input`` and ``step``, each
    ControlNet's and the UNet's own forward. The context comes with every call (``StepContext``);
    ``fast.FastParts`` overrides the parts it makes faster."""

    def __init__(self, unet, scheduler, ts, controls: Sequence, hints: Sequence[torch.Tensor], step_kwargs: dict):
        self.unet, self.scheduler, self.ts = unet, scheduler, ts
        self.controls, self.hints, self.step_kwargs = controls, hints, step_kwargs

    def scale_input(self, x, i: int):
        return self.scheduler.scale_model_input(x, self.ts[i])

    def control(self, k: int, x, i: int, context):
        return self.controls[k].controlnet(
            x, self.ts[i], encoder_hidden_states=context, controlnet_cond=self.hints[k],
            conditioning_scale=float(self.controls[k].scale), return_dict=False,
        )

    def eps(self, unet_in, i: int, down, mid, context):
        return self.unet(
            unet_in, self.ts[i], encoder_hidden_states=context,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
            return_dict=False,
        )[0]

    def guided_eps(self, x, extra, i: int, active: Tuple[int, ...], guidance: Optional[float], context):
        """The guided noise prediction of step ``i`` with ``context`` (``StepContext.at``)."""
        return guided_eps(lambda k: self.control(k, x, i, context),
                          lambda unet_in, down, mid: self.eps(unet_in, i, down, mid, context),
                          x, extra, active, guidance)

    def step(self, eps, i: int, latents):
        """(next latents, the step's predicted x0 or None: what a preview shows)."""
        return step_outputs(self.scheduler.step(eps, self.ts[i], latents, **self.step_kwargs, return_dict=False))

    def finish(self) -> None:
        """The run is over (also on error or cancel)."""
