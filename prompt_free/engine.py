"""The engine: the one owner of device work, shared by every task and tab.

Its jobs are split: ``model_cache.ModelCache`` loads and holds the models (lazily, once, per-key
locks), ``memory.Budget`` keeps them within the memory budget (eviction, the RAM tier), and the
engine runs device work: every forward pass under its run lock (``on_device``), reference
encoding, and ``generate``, the one call that samples (``sampling.denoise``). Prompt-free
generation never needs the CLIP text encoder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import cancel, layout, memory, previews, settings
from . import progress as progress_bars
from .conditioning import Conditioning
from .errors import InvalidSettingError
from .cuda_graphs import StepGraphs
from .fast import FastPath
from .images import image_to_tensor, prepare_reference, tensor_to_images
from .masks import fit_source_mask
from .loading import BaseModel, LoadedSeeCoder  # noqa: F401 - the engine's model types
from .lora import LoraPatch, LoraWeights
from .model_cache import FULL_RANDOM_BANNER, TINY_BANNER, TINY_CHOSEN_BANNER, ModelCache, profile_registry  # noqa: F401
from .precision import DTYPES, name_of
from .precision import resolve as resolve_precision
from .memory import Budget, Residency, default_budget, default_ram_budget, parse_size
from .registry import Registry
from .sampling import Sampler, Start, denoise, initial_noise, make_scheduler

log = logging.getLogger(__name__)

GRAPHS_KEY = ("cuda_graphs", "step graphs")  # the resident of ``FastPath.graphs`` (``_hold_graphs``)


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = max(1, int(size))

    def get_and_touch(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


@dataclass
class Generation:
    images: list
    latents: torch.Tensor
    seeds: List[int]
    width: int
    height: int
    timings: Dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineOptions:
    """How an engine runs (``Engine(registry, **options)``; None: the setting's environment
    variable or rule). ``memory_budget``: bytes or a size such as "8GB" for the models on the
    device (``PFD_MEMORY_BUDGET``, else the device's memory less a reserve on CUDA, a share of RAM
    on the CPU); ``ram_budget``: the host-memory tier on CUDA (``PFD_RAM_BUDGET``, else a share of
    RAM). ``max_base_models`` / ``max_controlnets``: how many stay loaded at most. ``fast``: the
    sampling path (``prompt_free.fast``): True = exact parts plus, on CUDA, channels_last +
    torch.compile; False = the eager loop; None = ``PFD_FAST`` (auto: the exact parts only).
    ``precision``: auto | fp32 | bf16 | fp16 (``PFD_PRECISION``; tiny profile: fp32; the rule is
    in ``prompt_free.precision``); ``dtype``, when given, wins over it. ``previews``: False turns
    live previews off (``PFD_PREVIEWS``). ``channels_last``: auto | on | off on the CPU
    (``PFD_CHANNELS_LAST``; tiny: contiguous; ``prompt_free.layout``). ``progress_bar``: a tqdm bar
    of the denoising steps on stderr for every run: True on, False off, None on when stderr is a
    terminal (``Engine.set_progress_bar_config``, ``prompt_free.progress``)."""

    device: object = None
    dtype: Optional[torch.dtype] = None
    max_base_models: int = 2
    max_controlnets: int = 4
    allow_download: bool = True
    banner: Optional[str] = None
    memory_budget: object = None
    ram_budget: object = None
    fast: Optional[bool] = None
    precision: Optional[str] = None
    previews: Optional[bool] = None
    channels_last: Optional[str] = None
    progress_bar: Optional[bool] = None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the precision setting (``PFD_PRECISION``, its ``auto`` rule) on ``device``."""
    return DTYPES[resolve_precision(None, device.type)]


class Engine:
    """The one owner of models, device memory and device work: holds the models of a registry
    (``models``, within the budget ``budget``), encodes references, runs ``generate`` (the one
    call that samples). Tasks (``prompt_free.tasks``) take an engine; make one with
    ``Engine.from_profile("real" | "tiny" | "auto")``."""

    def __init__(self, registry: Registry, options: Optional[EngineOptions] = None, **kwargs):
        """``options`` or its fields as keywords (``EngineOptions``: device, dtype, precision,
        memory_budget, fast ...)."""
        o = replace(options or EngineOptions(), **kwargs)
        self.registry, self.options = registry, o
        self.device = torch.device(o.device) if o.device is not None else default_device()
        tiny = registry.has_tiny_models  # fp32 and contiguous unless asked (pixel pins on every machine)
        self.dtype = o.dtype if o.dtype is not None else DTYPES[resolve_precision(o.precision, self.device.type, tiny=tiny)]
        self.precision = name_of(self.dtype)  # recorded with every picture (prompt_free.metadata)
        self.channels_last = layout.resolve(o.channels_last, self.device.type, self.precision, tiny=tiny)
        self.allow_download, self.banner = o.allow_download, o.banner
        self.fast = FastPath.from_setting(o.fast, self.device)
        self.previews = settings.previews() if o.previews is None else bool(o.previews)
        self._preview_failed = False  # a preview decoder that failed to load is reported once
        self._progress_bar_config = {"disable": None if o.progress_bar is None else not o.progress_bar}
        budget = parse_size(o.memory_budget) or parse_size(settings.memory_budget(), "PFD_MEMORY_BUDGET")
        ram = parse_size(o.ram_budget, "RAM budget") or parse_size(settings.ram_budget(), "PFD_RAM_BUDGET")
        self.memory = Residency(budget or default_budget(self.device),
                                (ram or default_ram_budget()) if self.device.type == "cuda" else 0)
        self._run_lock = threading.RLock()  # device work, one request at a time
        self.budget = Budget(self.memory, self.device, self._run_lock,
                             {"base_models": max(1, int(o.max_base_models)),
                              "controlnets": max(1, int(o.max_controlnets))})
        self.models = ModelCache(self, registry, self.budget, self.dtype, self.channels_last)
        self._encodings = _LRU(8)  # (seecoder, image digest) -> context
        self._encodings_lock = threading.Lock()

    @classmethod
    def from_profile(cls, profile: Optional[str] = None, checkpoints=None, **kwargs) -> "Engine":
        """``profile``: real | tiny | full-random | auto (default; env ``PFD_PROFILE``).
        ``full-random``: SD-1.5-size models with random weights built on the device (benchmarks).
        ``auto`` uses the real models when the default ones are available locally or the hub is
        reachable, else the tiny profile with a banner. ``kwargs``: ``EngineOptions`` fields."""
        registry, banner = profile_registry((profile or settings.profile()).lower(), checkpoints)
        return cls(registry, **({"banner": banner} if banner else {}), **kwargs)

    @property
    def profile(self) -> str:
        return self.registry.profile

    @property
    def defaults(self) -> Dict[str, str]:
        return self.registry.defaults

    # ------------------------------------------------------------------ models (``ModelCache``)
    @property
    def load_counts(self):
        """(kind, name) -> times loaded from disk or built."""
        return self.models.load_counts

    @property
    def max_counts(self) -> Dict[str, int]:
        """How many base models / ControlNets stay on the device at most (may be raised)."""
        return self.budget.max_counts

    @property
    def _known_bytes(self) -> Dict[Tuple, int]:
        return self.models.known_bytes

    def seecoder(self, name: str) -> LoadedSeeCoder:
        return self.models.seecoder(name)

    def base_model(self, name: str) -> BaseModel:
        return self.models.base_model(name)

    def controlnet(self, name: str):
        return self.models.controlnet(name)

    def lora(self, name: str) -> LoraWeights:
        """The LoRA ``name``, held like a model; it changes a base model only for the runs that
        ask for it (``Sampler.loras``)."""
        return self.models.lora(name)

    def preview_decoder(self):
        """The profile's ``previews:`` tiny autoencoder (held like a model), or None."""
        return self.models.preview_decoder()

    def detector(self, name: str, annotator_dir=None):
        """The control-map detector ``name``, built once; the key names the weight folders searched."""
        return self.models.detector(name, annotator_dir)

    def cached(self, key: Tuple, build: Callable[[], object]):
        """Engine-held objects of other kinds (text encoders, IP-Adapter parts ...): built once
        by ``build``, accounted and evicted like the models."""
        return self.models.resident(key, build)

    def adopt(self, key: Tuple, value=None, *, rebuild: Optional[Callable[[], object]] = None) -> None:
        """Hold an object built elsewhere under ``key`` (``ModelCache.adopt``)."""
        self.models.adopt(key, value, rebuild=rebuild)

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` on the engine's device and dtype within the budget (``ModelCache.place``)."""
        return self.models.place(module)

    # ------------------------------------------------------------------ residency (``Budget``)
    @contextlib.contextmanager
    def request(self):
        """One request: every model it uses stays resident until it ends (others may evict only
        what no running request holds). Nested calls join the outer request."""
        with self.budget.request():
            yield self

    def memory_report(self) -> List[Dict[str, object]]:
        """One entry per model as users know it: ``{"kind", "name", "where", "bytes"}``, where
        is "device" or "ram" (the host-memory tier on CUDA), least recently used first."""
        return [{"kind": r.kind, "name": memory.report_name(r.key), "where": r.where, "bytes": r.bytes}
                for r in self.memory.items()]

    # ------------------------------------------------------------------ progress bars
    def set_progress_bar_config(self, **kwargs) -> None:
        """tqdm's options for the step bar of later runs, as diffusers' pipelines take them
        (``disable=True``: off; ``False``: always; ``None``, the default: when stderr is a terminal;
        ``file``, ``desc``, ``leave`` ...); they replace those set before (unknown: an error)."""
        self._progress_bar_config.update(progress_bars.checked_config(kwargs))

    @property
    def progress_bar_config(self) -> Dict[str, object]:
        """A copy of the step bars' tqdm options (``set_progress_bar_config``)."""
        return dict(self._progress_bar_config)

    # ------------------------------------------------------------------ device work
    def on_device(self, fn: Callable, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` as device work: under the run lock (one request at a time
        on the device) and in inference mode: every forward pass of the engine's models; a cancelled
        (or, before its steps, over-long) request stops here (``prompt_free.cancel``)."""
        cancel.check()
        with self._run_lock, torch.inference_mode():
            return fn(*args, **kwargs)

    def encode_reference(self, image, seecoder_name: str, mask=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reference image -> (context (1, 148, C), unconditional context (1, 148, C)). ``mask``: a
        source mask, bool (H, W), True = use (fitted to the prepared reference), or None; one that
        keeps every pixel is no mask (the same encode and cache entry); the cache key holds it."""
        sc = self.seecoder(seecoder_name)
        img = prepare_reference(image)
        keep = _source_mask(mask, img.size)
        key = _encoding_key(seecoder_name, img, keep)
        with self._encodings_lock:
            hit = self._encodings.get_and_touch(key)
        if hit is None:
            x = image_to_tensor(img).to(self.device, self.dtype)
            m = None if keep is None else torch.from_numpy(keep)[None].to(self.device)
            # compiled at common sizes; a masked encode runs the model itself (rare: no graph per mask)
            model = sc.model if self.fast is not None else cancel.reachable(sc.model)
            encode = self.fast.encoder(sc.model, x) if self.fast is not None and m is None else model
            hit = self.on_device(lambda: encode(x) if m is None else encode(x, m))
            with self._encodings_lock:
                self._encodings.put(key, hit)
        return hit, sc.unconditional

    def generate(self, base_model: str, conditioning: Conditioning, sampler: Sampler, *,
                 progress: Optional[Callable[[int, int], None]] = None, decode: bool = True,
                 preview: Optional[previews.PreviewCallback] = None, start: Optional[Start] = None) -> Generation:
        """The one call that samples: ``conditioning`` with ``sampler`` on ``base_model``.

        ``sampler`` is checked here unless it was made by ``Sampler.checked()`` (a task checks
        once). Makes the initial noise (``sampling.initial_noise``), binds the conditioning's
        inpainting hooks to it, applies its UNet patch and fuses ``sampler.loras`` for this run
        only (a LoRA that does not fit is a ``LoraMismatchError`` before any work), runs the loop
        and decodes, under the run lock. Out of device memory it frees, evicts and tries once
        more (``Budget.run_with_retry``); a second failure is a ``DeviceMemoryError``.

        ``preview``: called with a ``previews.Preview`` every few steps (None: the callback of
        ``previews.showing``, if any; none with ``decode=False``). Previews never change the
        pictures; a preview decoder that cannot be loaded is logged once and the run goes on.

        ``start``: begin from an image's latents part way into the schedule (img2img,
        ``sampling.Start``; its latents at the run's latent size); None: from pure noise."""
        sampler = sampler.checked()
        with self.request():
            base = self.base_model(base_model)
            self.memory.pin_values([getattr(ci.controlnet, "controlnet", ci.controlnet) for ci in conditioning.controls])
            if conditioning.context.shape[-1] != base.unet.config.cross_attention_dim:
                raise InvalidSettingError(
                    f"the conditioning is {conditioning.context.shape[-1]} wide but base model '{base_model}' expects "
                    f"{base.unet.config.cross_attention_dim} (is it an SD 1.x model?)"
                )
            loras = LoraPatch([(self.lora(name), scale) for name, scale in sampler.loras])
            loras.check(base.unet, base_model)
            show = self._preview_hook(preview if preview is not None else previews.current()) if decode else None
            sampler.check_unet(base.unet, f"'{base_model}'")
            f = base.vae_scale_factor
            noise = initial_noise(sampler.seeds, (4, sampler.height // f, sampler.width // f))
            _check_start(start, noise, conditioning)
            fast, graphed = self._run_path(conditioning, sampler, loras)
            return self.budget.run_with_retry(
                lambda: self._sample(base, conditioning, sampler, noise, progress, decode, loras, show, fast, graphed, start),
                self._reserve(base, sampler, loras, fast.graphs if graphed else None),
                f"sampling {sampler.num_images} image(s) at {sampler.width}x{sampler.height}",
                fast.graphs.drop_steps if graphed else None)  # the captures' pool is working memory too

    def _reserve(self, base: BaseModel, sampler: Sampler, loras: LoraPatch, graphs: Optional[StepGraphs]) -> int:
        """Working memory a run needs on CUDA besides the held weights."""
        if self.device.type != "cuda":
            return 0
        reserve = memory.activation_reserve(sampler, torch.finfo(self.dtype).bits // 8)
        if loras:
            reserve += loras.patched_bytes(base.unet)
        if graphs is not None:
            reserve += graphs.slot_bytes_needed(base.unet)  # a new UNet weight slot
        return reserve

    def _run_path(self, c: Conditioning, sampler: Sampler, loras: LoraPatch) -> Tuple[Optional[FastPath], bool]:
        """(the sampling path of this run, whether it replays captured steps)."""
        fast = self.fast
        if fast is not None and (c.unet_patch is not None or (loras and fast.compile)):
            # A patched UNet is neither the module that was compiled nor the graphs' weight slot;
            # fused LoRA weights are untested compiled (the slot copies them like any weights).
            fast = fast.without_compile(keep_graphs=c.unet_patch is None)
        return fast, fast is not None and not sampler.approximate and fast.graphs_apply(c.controls)

    def _sample(self, base: BaseModel, c: Conditioning, sampler: Sampler, noise: torch.Tensor, progress, decode: bool,
                loras: LoraPatch, show=None, fast: Optional[FastPath] = None, graphed: bool = False,
                start: Optional[Start] = None):
        timings = {}
        with self._run_lock, torch.inference_mode():
            extra = after_step = None
            if c.inpainting is not None:
                extra = c.inpainting.unet_channels(sampler.num_images)
                after_step = c.inpainting.step_hook(noise.to(self.device), sampler)
            patch = c.unet_patch.applied(base.unet) if c.unet_patch is not None else contextlib.nullcontext()
            # The LoRAs are fused into the shared UNet for this run only and taken out on the way
            # out of the block, also on error and on cancel (``Cancelled`` from the loop).
            fused = loras.applied(base.unet) if loras else contextlib.nullcontext()
            if graphed:
                self._hold_graphs(fast.graphs, base.unet)
            unet = base.unet
            t0 = time.perf_counter()
            with fused, patch, progress_bars.step_bar(self._progress_bar_config, progress) as on_step:
                latents = denoise(
                    unet, make_scheduler(sampler.scheduler), noise, c.context, c.uncond,
                    **sampler.loop_options(), controls=c.controls,
                    generator=torch.Generator().manual_seed(sampler.seed), progress=on_step,
                    extra_unet_channels=extra, after_step=after_step, fast=fast, preview=show,
                    step_context=c.step_context(sampler.num_images, sampler.guidance != 1.0, unet.device, unet.dtype),
                    start=start,
                )
            if graphed:
                self._hold_graphs(fast.graphs, base.unet)  # counts the new steps' fixed tensors too
            _sync(self.device)
            timings["denoise"] = time.perf_counter() - t0
            images = []
            if decode:
                t0 = time.perf_counter()
                images = self.decode(base, latents)
                _sync(self.device)
                timings["decode"] = time.perf_counter() - t0
        return Generation(images, latents, sampler.seeds, sampler.width, sampler.height, timings)

    def _hold_graphs(self, graphs: StepGraphs, unet) -> None:
        """Account for the captured steps and their UNet weight slot like a model, held by this
        request (``generate`` made room for a new slot within the memory budget). Evicting them
        drops them (``StepGraphs.remade_on_eviction``); the next graphed run makes them anew."""
        self.memory.pin(GRAPHS_KEY)
        graphs.prepare(unet)
        self.memory.remove(GRAPHS_KEY)
        self.memory.add(GRAPHS_KEY, graphs)

    def _preview_hook(self, callback: Optional[previews.PreviewCallback]):
        """``sampling.denoise``'s preview hook for ``callback`` (``previews.decoding_hook``, the
        decoder loaded now, within the request); None when previews are off, the profile has no
        decoder, or it failed to load (logged once)."""
        if callback is None or not self.previews or self._preview_failed:
            return None
        try:
            decoder = self.preview_decoder()
        except Exception as e:  # noqa: BLE001 - a preview must never fail the request
            self._preview_failed = True
            log.warning("live previews are off: the preview decoder could not be loaded (%s: %s)",
                        type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
            return None
        return None if decoder is None else previews.decoding_hook(decoder, callback, self.device)

    def decode(self, base: BaseModel, latents: torch.Tensor) -> list:
        """Final latents -> PIL images, one at a time (bounds VAE memory at large sizes)."""
        vae = base.vae

        def run():
            decode = self.fast.decoder(vae) if self.fast is not None else cancel.reachable(vae).decode
            out = []
            for z in latents.split(1):
                cancel.check()  # Stop reaches the decode between two pictures
                x = decode(z.to(self.device, vae.dtype) / vae.config.scaling_factor).sample
                out.extend(tensor_to_images((x.float() + 1) / 2))
            return out

        return self.on_device(run)

    def encode_latents(self, base: BaseModel, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> scaled VAE latents (mean of the posterior)."""
        vae = base.vae
        z = self.on_device(lambda: vae.encode(image.to(self.device, vae.dtype) * 2 - 1).latent_dist.mean)
        return z.float() * vae.config.scaling_factor


def _encoding_key(seecoder_name: str, img, keep) -> Tuple:
    """The encodings cache's key: the SeeCoder, the prepared reference's pixels and the source mask."""
    key = (seecoder_name, hashlib.sha1(img.tobytes() + repr(img.size).encode()).hexdigest())
    return key if keep is None else key + (hashlib.sha1(np.packbits(keep).tobytes()).hexdigest(),)


def _check_start(start: Optional[Start], noise: torch.Tensor, c: Conditioning) -> None:
    """A run from an image: its latents at the run's latent size; not with inpainting (its hooks
    follow the whole schedule from pure noise)."""
    if start is None:
        return
    if tuple(start.latents.shape[1:]) != tuple(noise.shape[1:]) or start.latents.shape[0] != 1:
        raise ValueError(f"the start latents are {tuple(start.latents.shape)}, the run's are (1, {', '.join(map(str, noise.shape[1:]))})")
    if c.inpainting is not None:
        raise ValueError("a run from an image (start) cannot inpaint: inpainting starts from its own latents")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _source_mask(mask, size) -> "Optional[np.ndarray]":
    """A source mask as a bool array at the prepared reference's ``size``; None for none or one
    that keeps every pixel (so that path is the unmasked encode itself). Empty: refused."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InvalidSettingError(f"a reference mask must be a 2-D (H, W) array, got shape {m.shape}")
    m = fit_source_mask(m.astype(bool), size)
    if not m.any():
        raise InvalidSettingError("the reference mask (reference_mask) is empty: it leaves nothing of the reference to use")
    return None if m.all() else np.ascontiguousarray(m)
