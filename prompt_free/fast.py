"""The fast path of the denoising loop (``Engine(fast=...)``, ``PFD_FAST``, ``--no-fast``).

``sampling.denoise`` is the one loop; this module gives it faster strategies for the same step
(``FastParts``, ``GraphParts``: ``steps.EagerParts`` with faster parts):

Exact (the same float operations as the eager parts, so bit for bit on the CPU):
  * ``DDIMSteps``: the paper's DDIM step (eta 0, epsilon prediction) with its coefficients
    computed once per run from the scheduler's float32 ``alphas_cumprod`` exactly as
    diffusers' ``DDIMScheduler.step`` computes them, kept on the device and looked up by the
    step's Python index. diffusers indexes a CPU tensor with the device timestep and compares
    it with 0 on the host: two to three host syncs per step on CUDA, none here.
  * ``ControlNetResiduals``: a ControlNet's residuals with the hint's embedding
    (``controlnet_cond_embedding``, the convolutions over the full-size control image)
    computed once per run instead of once per step; the rest is the ControlNet's own
    modules called in diffusers' order.

Compiled (CUDA only, ``fast=True`` / ``PFD_FAST=1``; not exact: other kernels):
  * ``channels_last`` weights and ``torch.compile`` (static shapes) of the UNet, the
    ControlNet residual function and the VAE decode; the timestep and the conditioning scale
    reach the graphs as tensors, so a slider change does not recompile. Kernels are cached on
    disk (``settings.compile_cache_dir()``), so a restart reuses them. The first step of a
    new shape reports "compiling (once)" through the progress callback.

  * SeeCoder's forward (``FastPath.encoder``), for references at ``COMMON_REFERENCE_SIZES``
    only (other sizes run eagerly: references come at their native size). Its shifted-window
    masks are cached per (size, device, dtype), 32 MiB at most, on every path (``seecoder.swin.window_mask``;
    exact, the same tensor).

Approximate, opt-in and labelled (quick mode, ``Sampler.approximate``: ``DeepCache``):
DeepCache-style reuse of the UNet's deep features for N - 1 steps after each full step, on the
eager loop and on this path (both its forwards go through ``FastPath.function``, so they are
compiled on the compile path).

Graphed (``graphs=``; on CUDA with the compile path unless ``PFD_CUDA_GRAPHS=0``, or alone with
``PFD_CUDA_GRAPHS=1``; ``prompt_free.cuda_graphs``): the guided step (ControlNets + UNet +
guidance) captured as one CUDA graph per shape and replayed, over a UNet weight slot that each
run's base model is copied into, so switching base models keeps the captured graphs.
"""

from __future__ import annotations

import functools
import logging
import os
import weakref
from typing import List, Optional, Sequence, Tuple

import torch

from . import settings
from .cuda_graphs import ControlSlot, GraphedStep, StepGraphs
from .steps import EagerParts

log = logging.getLogger(__name__)

COMPILING_NOTE = "compiling (once)"
# Reference sizes (width, height) whose SeeCoder encode is compiled on the compile path: the
# app's default and the usual square uploads. Other sizes run eagerly (references come at their
# native size, so compiling every size would compile nearly every request).
COMMON_REFERENCE_SIZES = frozenset({(512, 512), (768, 768), (1024, 1024)})


# ----------------------------------------------------------------------------- DDIM step
# Adapted from diffusers 0.42.1, src/diffusers/schedulers/scheduling_ddim.py: DDIMScheduler.step
# (eta 0, epsilon prediction, no clipping; the coefficients computed once per run).
class DDIMSteps:
    """DDIM (eta 0, epsilon prediction, no clipping) over a fixed list of timesteps.

    Per step i, four float32 coefficients, each computed with diffusers' own float32 tensor
    operations: sqrt(1 - a_t), sqrt(a_t), sqrt(1 - a_prev - 0) and sqrt(a_prev), so that
    ``step`` performs exactly ``(x - c0 * eps) / c1`` then ``c3 * x0 + c2 * eps`` as diffusers
    does."""

    def __init__(self, coefficients: torch.Tensor):
        self.coefficients = coefficients  # (steps, 4) float32 on the device

    @classmethod
    def for_scheduler(cls, scheduler, device, timesteps=None) -> Optional["DDIMSteps"]:
        """The exact replacement of ``scheduler.step`` (after ``set_timesteps``) over ``timesteps``
        (None: all of the scheduler's; a run from an image makes only the last ones), or None
        when the scheduler is not a DDIM this class reproduces (then its own step is used)."""
        if type(scheduler).__name__ != "DDIMScheduler":
            return None
        cfg = scheduler.config
        if cfg.prediction_type != "epsilon" or cfg.thresholding or cfg.clip_sample:
            return None
        n = scheduler.num_inference_steps
        ac = scheduler.alphas_cumprod  # float32 on the CPU, as diffusers keeps it
        rows = []
        for t in (scheduler.timesteps if timesteps is None else timesteps).tolist():  # once per run, before the loop
            prev = t - cfg.num_train_timesteps // n
            a_t = ac[t]
            a_prev = ac[prev] if prev >= 0 else scheduler.final_alpha_cumprod
            beta_t = 1 - a_t
            std = 0.0 * scheduler._get_variance(t, prev) ** 0.5  # eta 0, as diffusers computes it
            rows.append(torch.stack([beta_t ** 0.5, a_t ** 0.5, (1 - a_prev - std ** 2) ** 0.5, a_prev ** 0.5]))
        return cls(torch.stack(rows).to(device))

    def step(self, eps: torch.Tensor, i: int, latents: torch.Tensor) -> torch.Tensor:
        return self.step_and_x0(eps, i, latents)[0]

    def step_and_x0(self, eps: torch.Tensor, i: int, latents: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the next latents, the predicted x0 the step went through: what a preview shows)."""
        c = self.coefficients[i]
        x0 = (latents - c[0] * eps) / c[1]
        return c[3] * x0 + c[2] * eps, x0


# ----------------------------------------------------------------------------- ControlNet
def controlnet_supported(cn) -> bool:
    """A plain diffusers ControlNetModel of the SD-1.x kind (no class / addition embeddings,
    RGB hints, no pooled conditions): the ones ``controlnet_residuals`` reproduces. Others
    (wrappers such as the comparison's ``TextTokensOnly``) run their own forward."""
    try:
        from diffusers import ControlNetModel
    except ImportError:  # pragma: no cover - diffusers is a requirement
        return False
    if type(cn) is not ControlNetModel:
        return False
    cfg = cn.config
    return (cn.class_embedding is None and cfg.addition_embed_type is None and not cfg.global_pool_conditions
            and cfg.controlnet_conditioning_channel_order == "rgb")


# Adapted from diffusers 0.42.1, src/diffusers/models/controlnets/controlnet.py: ControlNetModel.forward
# (the SD-1.x branch only, with the hint embedding taken as an input so that it runs once per run).
def controlnet_residuals(cn, x, t, context, hint_embedding, scale):
    """(down residuals, mid residual) of ``cn`` for latents ``x`` at timestep ``t`` (0-dim
    tensor), given the hint already embedded by ``cn.controlnet_cond_embedding``."""
    timesteps = t[None].to(x.device).expand(x.shape[0])
    emb = cn.time_embedding(cn.time_proj(timesteps).to(dtype=x.dtype), None)
    h = cn.conv_in(x)
    h = h + hint_embedding
    features = [h]
    for block in cn.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=context,
                           attention_mask=None, cross_attention_kwargs=None)
        else:
            h, res = block(hidden_states=h, temb=emb)
        features.extend(res)
    if cn.mid_block is not None:
        if getattr(cn.mid_block, "has_cross_attention", False):
            h = cn.mid_block(h, emb, encoder_hidden_states=context, attention_mask=None, cross_attention_kwargs=None)
        else:
            h = cn.mid_block(h, emb)
    down = [zero_conv(f) for f, zero_conv in zip(features, cn.controlnet_down_blocks)]
    mid = cn.controlnet_mid_block(h)
    return [d * scale for d in down], mid * scale


# ----------------------------------------------------------------------------- the path
def _forward(module, *args, **kwargs):
    return module(*args, **kwargs)


def _decode(vae, z):
    return vae.decode(z)


def _encode(seecoder, image):
    return seecoder(image)


class FastPath:
    """The engine's fast-path state: whether to compile, the compiled functions (which take the
    model as an argument: nothing here keeps an evicted model alive) and the shapes already
    compiled (for the "compiling (once)" note)."""

    note = COMPILING_NOTE

    def __init__(self, compile: bool = False, backend: str = "inductor", graphs=False):
        """``graphs``: True (a new ``StepGraphs``) or a ``StepGraphs`` to share: the guided step
        as one CUDA graph per shape (captured on CUDA; on the CPU run uncaptured, for tests)."""
        self.compile = bool(compile)
        self.backend = backend
        self.graphs: Optional[StepGraphs] = graphs if isinstance(graphs, StepGraphs) else StepGraphs() if graphs else None
        self._laid_out: "weakref.WeakSet" = weakref.WeakSet()  # modules made channels_last (no strong refs)
        self._compiled_fn = {}  # module-level function -> its compiled version (holds no model)
        self._shapes = set()
        if self.compile:
            _prepare_compile_cache()

    @classmethod
    def from_setting(cls, fast: Optional[bool], device: torch.device) -> Optional["FastPath"]:
        """``fast``: True (exact parts + compile on CUDA), False (None: the eager loop), None
        (``PFD_FAST``: auto = exact parts only)."""
        mode = ("on" if fast else "off") if fast is not None else settings.fast_mode()
        if mode == "off":
            return None
        cuda = device.type == "cuda"
        graphs = settings.cuda_graphs()
        return cls(compile=mode == "on" and cuda,
                   graphs=cuda and (graphs == "on" or (graphs == "auto" and mode == "on")))

    def without_compile(self, keep_graphs: bool) -> "FastPath":
        """This path's exact parts for one run that the compiled modules do not fit (a patched
        UNet, fused LoRA weights); its graphs (the same captured steps) when ``keep_graphs``."""
        return FastPath(compile=False, graphs=self.graphs if keep_graphs else False)

    @property
    def label(self) -> str:
        parts = ["exact parts"] + (["compile"] if self.compile else []) + (["CUDA graphs"] if self.graphs is not None else [])
        return f"fast ({' + '.join(parts)})"

    # -- compiled modules. The compiled functions take the model as an argument, so this object
    # never keeps a model alive after the engine evicts it.
    def _laid_out_once(self, m: torch.nn.Module) -> None:
        if m not in self._laid_out:
            m.to(memory_format=torch.channels_last)
            self._laid_out.add(m)

    def lay_out(self, m: torch.nn.Module) -> None:
        """``m``'s weights channels_last on the compile path (once), for functions that take it."""
        if self.compile:
            self._laid_out_once(m)

    def module(self, m: torch.nn.Module):
        """``m``'s forward, compiled (channels_last weights) on the compile path, else ``m``."""
        if not self.compile:
            return m
        self._laid_out_once(m)
        return functools.partial(self.function(_forward), m)

    def function(self, fn):
        if not self.compile:
            return fn
        found = self._compiled_fn.get(fn)
        if found is None:
            found = self._compiled_fn[fn] = torch.compile(fn, backend=self.backend, dynamic=False)
        return found

    def encoder(self, seecoder, image: torch.Tensor):
        """SeeCoder's forward for ``image`` (B, 3, H, W): compiled (static shapes) on the compile
        path when (W, H) is one of ``COMMON_REFERENCE_SIZES``, else the model itself. No
        channels_last here: after the patch embedding Swin works on token tensors."""
        if not self.compile or (image.shape[-1], image.shape[-2]) not in COMMON_REFERENCE_SIZES:
            return seecoder
        return functools.partial(self.function(_encode), seecoder)

    def decoder(self, vae):
        """The VAE's decode, compiled on the compile path."""
        if not self.compile:
            return vae.decode
        self._laid_out_once(vae)
        return functools.partial(self.function(_decode), vae)

    def new_shape(self, key: Tuple) -> bool:
        """True the first time ``key`` (models, batch, size, ControlNets) is seen by a compiling
        path: its first step compiles."""
        if not self.compile or key in self._shapes:
            return False
        self._shapes.add(key)
        return True

    def graphs_apply(self, controls) -> bool:
        """Whether a run with ``controls`` (``sampling.ControlInput``) replays captured steps:
        graphs on and working, and every ControlNet one ``controlnet_residuals`` reproduces."""
        return (self.graphs is not None and self.graphs.failed is None
                and all(controlnet_supported(c.controlnet) for c in controls))

    def parts(self, unet, scheduler, ts, controls, hints: Sequence[torch.Tensor], step_kwargs, graphable: bool = True):
        """The per-run strategy: ``GraphParts`` when graphs are on and apply (``graphable``: the
        exact loop, every ControlNet one ``controlnet_residuals`` reproduces), else ``FastParts``."""
        if graphable and self.graphs_apply(controls):
            return GraphParts(self, unet, scheduler, ts, controls, hints, step_kwargs)
        return FastParts(self, unet, scheduler, ts, controls, hints, step_kwargs)


class FastParts(EagerParts):
    """The fast strategy: DDIM's step with its coefficients on the device (``DDIMSteps``), each
    supported ControlNet's hint embedded once per run (``controlnet_residuals``), and the
    compiled forwards on the compile path."""

    def __init__(self, fast: FastPath, unet, scheduler, ts, controls, hints, step_kwargs):
        super().__init__(unet, scheduler, ts, controls, hints, step_kwargs)
        self.fast = fast
        self.ddim = DDIMSteps.for_scheduler(scheduler, ts.device, ts)
        self.unet = self._unet_forward(fast, unet)
        device = ts.device
        self._controls: List[tuple] = []
        for control, hint in zip(controls, hints):
            cn = control.controlnet
            if controlnet_supported(cn):
                embedding = cn.controlnet_cond_embedding(hint)  # once per run
                scale = (torch.tensor(float(control.scale), device=device, dtype=torch.float32)
                         if fast.compile else float(control.scale))
                self._controls.append((True, cn, embedding, scale))
            else:
                self._controls.append((False, cn, hint, float(control.scale)))
        self._residuals = fast.function(controlnet_residuals)

    def _unet_forward(self, fast: FastPath, unet):
        self.compiled_unet_id = id(unet)  # the module whose forward is compiled (for "compiling (once)")
        return fast.module(unet)

    def scale_input(self, x, i: int):
        if self.ddim is not None:  # DDIM's scale_model_input is the identity
            return x
        return super().scale_input(x, i)

    def control(self, k: int, x, i: int, context):
        ours, cn, cond, scale = self._controls[k]
        t = self.ts[i]
        if ours:
            return self._residuals(cn, x, t, context, cond, scale)
        return cn(x, t, encoder_hidden_states=context, controlnet_cond=cond, conditioning_scale=scale,
                  return_dict=False)

    def step(self, eps, i: int, latents):
        """(next latents, the step's predicted x0 or None), as ``EagerParts.step``."""
        if self.ddim is not None:
            return self.ddim.step_and_x0(eps, i, latents)
        return super().step(eps, i, latents)


class GraphParts(FastParts):
    """``FastParts`` whose guided step (ControlNets + UNet + guidance) is one captured CUDA graph
    per shape (``prompt_free.cuda_graphs``), run over the UNet weight slot that this run's UNet
    is copied into. On the CPU the same step runs uncaptured (what the tests check).

    The step's context is one of the graph's fixed inputs: it is copied in when the context
    object differs from the one the graphed step holds (once per run for a constant context)."""

    def __init__(self, fast: FastPath, unet, scheduler, ts, controls, hints, step_kwargs):
        self.graphs = fast.graphs
        super().__init__(fast, unet, scheduler, ts, controls, hints, step_kwargs)
        self._control_ids = [self.graphs.model_id(cn) for _, cn, _, _ in self._controls]
        self._keys = {}  # (active ControlNets, guided) -> the step's key, for the context's shape
        self._context = self._context_key = None  # the step's context and its (shape, dtype)
        self._extra = self._guidance = None

    def _unet_forward(self, fast: FastPath, unet):
        """The slot's forward, holding this run's weights (the base UNet itself is not laid out)."""
        slot = self.graphs.new_run(unet)
        self.compiled_unet_id = id(slot)  # a base-model switch compiles nothing new
        return fast.module(slot)

    def guided_eps(self, x, extra, i: int, active: Tuple[int, ...], guidance: Optional[float], context):
        if context is not self._context:
            self._context = context
            shape = (tuple(context.shape), context.dtype)
            if shape != self._context_key:  # another context length: other step shapes
                self._keys.clear()
                self._context_key = shape
        key = self._keys.get((active, guidance is not None))
        if key is None:
            key = self._keys[(active, guidance is not None)] = (id(self.graphs.slot), *self._context_key) + (
                tuple(self._control_ids[k] for k in active), tuple(x.shape), x.dtype,
                None if extra is None else tuple(extra.shape), guidance is not None)
        self._extra, self._guidance = extra, guidance
        return self.graphs.step(key, self, active, x, i)

    # -- what ``StepGraphs.step`` asks of a run
    def make_step(self, active, x) -> GraphedStep:
        """The fixed tensors of a new step shape (allocated outside any capture)."""
        device = x.device
        controls = [ControlSlot(None, torch.empty_like(self._controls[k][2]),
                                torch.zeros((), device=device, dtype=torch.float32)) for k in active]
        guidance = None if self._guidance is None else torch.zeros((), device=device, dtype=torch.float32)
        extra = None if self._extra is None else torch.empty_like(self._extra, memory_format=torch.contiguous_format)
        out_shape = (x.shape[0] // 2 if guidance is not None else x.shape[0], *x.shape[1:])
        return GraphedStep(x=torch.empty_like(x), t=torch.empty_like(self.ts[0]), context=torch.empty_like(self._context),
                           guidance=guidance, extra=extra, controls=controls,
                           out=torch.empty(out_shape, device=device, dtype=torch.float32))

    def load_run(self, s: GraphedStep, active) -> None:
        """This run's models and per-run inputs into ``s``: hint embeddings, scales, guidance."""
        s.unet, s.residuals, s.context_of = self.unet, self._residuals, None
        if s.extra is not None:
            s.extra.copy_(self._extra)
        if s.guidance is not None:
            s.guidance.fill_(self._guidance)
        for c, k in zip(s.controls, active):
            _, cn, embedding, scale = self._controls[k]
            c.controlnet = cn
            c.embedding.copy_(embedding)
            c.scale.copy_(scale) if isinstance(scale, torch.Tensor) else c.scale.fill_(scale)

    def load_step(self, s: GraphedStep, x, i: int) -> None:
        if s.context_of is not self._context:  # a new run or a changed context (device-to-device)
            s.context.copy_(self._context)
            s.context_of = self._context
        s.x.copy_(x)
        s.t.copy_(self.ts[i])  # a device-to-device copy: no host sync

    def finish(self) -> None:
        self.graphs.end_run()


def _prepare_compile_cache() -> None:
    """Point inductor's on-disk caches at the project's folder (before the first compile) and
    allow one compiled graph per model and shape (several ControlNets share one function)."""
    folder = settings.compile_cache_dir()
    os.makedirs(folder, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", folder)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    import torch._dynamo
    import torch._inductor.config as inductor_config  # read at import: set the config itself too

    for name in ("fx_graph_cache", "autograd_cache"):
        if hasattr(inductor_config, name):
            setattr(inductor_config, name, True)
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))
