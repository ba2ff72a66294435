"""The engine: one owner of models and device memory, shared by every task and tab.

It loads lazily, keeps SeeCoders and ControlNets on the device, keeps the most recently used
base models in an LRU (switching back costs no disk read), serialises device work so that
concurrent requests are safe, and runs the paper's sampler (``sampling.denoise``). Prompt-free
generation never needs the CLIP text encoder.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import deep_cache, layout, loading, memory, previews, settings
from .conditioning import Conditioning
from .errors import InvalidSettingError
from .cuda_graphs import StepGraphs
from .fast import FastPath
from .images import image_to_tensor, prepare_reference, tensor_to_images
from .loading import BaseModel, LoadedSeeCoder  # noqa: F401 - the engine's model types
from .lora import LoraPatch, LoraWeights
from .precision import DTYPES, name_of
from .precision import resolve as resolve_precision
from .memory import Residency, default_budget, default_ram_budget, parse_size
from .registry import Registry
from .sampling import Sampler, denoise, initial_noise, make_scheduler
from .settings import hub_offline

log = logging.getLogger(__name__)

TINY_BANNER = (
    "Real model weights were not found locally and could not be downloaded, "
    "so the app runs the tiny random-weight models. Outputs are NOT meaningful pictures. "
    "For real results, run where the Hugging Face Hub is reachable (weights download on first use), "
    "or fetch them once with `python -m prompt_free.download --profile real` (or point `path:` entries "
    "in checkpoints.yaml at local files), and start with `python app.py --profile real`."
)

TINY_CHOSEN_BANNER = (
    "The app runs the offline tiny profile (small random-weight models, chosen with --profile tiny or "
    "PFD_PROFILE=tiny). Outputs are NOT meaningful pictures. Start with `--profile real` for the real models."
)

FULL_RANDOM_BANNER = (
    "The app runs the full-random profile (SD-1.5-size models with random weights, for measurements). "
    "Outputs are NOT meaningful pictures. Start with `--profile real` for the real models."
)


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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the precision setting (``PFD_PRECISION``, its ``auto`` rule) on ``device``."""
    return DTYPES[resolve_precision(None, device.type)]


class Engine:
    """The one owner of models, device memory and device work: loads the models of a registry
    lazily (and keeps them within a memory budget), encodes references, runs ``generate`` (the one
    call that samples). Tasks (``prompt_free.tasks``) take an engine; make one with
    ``Engine.from_profile("real" | "tiny" | "auto")``."""

    def __init__(
        self,
        registry: Registry,
        *,
        device=None,
        dtype: Optional[torch.dtype] = None,
        max_base_models: int = 2,
        max_controlnets: int = 4,
        allow_download: bool = True,
        banner: Optional[str] = None,
        memory_budget=None,
        ram_budget=None,
        fast: Optional[bool] = None,
        precision: Optional[str] = None,
        previews: Optional[bool] = None,
        channels_last: Optional[str] = None,
    ):
        """``memory_budget``: bytes or a size such as "8GB" for the models on the device (None:
        ``PFD_MEMORY_BUDGET``, else the device's memory less a reserve on CUDA, a share of RAM on
        the CPU). ``ram_budget``: the host-memory tier on CUDA (None: ``PFD_RAM_BUDGET``, else a
        share of RAM). ``max_base_models`` / ``max_controlnets``: how many stay loaded at most.
        ``fast``: the sampling path (``prompt_free.fast``): True = its exact parts plus, on CUDA,
        channels_last + torch.compile; False = the eager loop; None = ``PFD_FAST`` (default
        auto: the exact parts only, the eager result bit for bit on the CPU). ``precision``: auto |
        fp32 | bf16 | fp16 (None: ``PFD_PRECISION``; the tiny profile is then fp32); the rule of
        auto is in ``prompt_free.precision``. ``dtype``, when given, wins over it. ``previews``: False
        turns live previews off for every request (None: ``PFD_PREVIEWS``, default on). ``channels_last``:
        auto | on | off, the layout of the UNet, ControlNets and VAE on the CPU (None:
        ``PFD_CHANNELS_LAST``; the tiny profile is then contiguous; auto's rule is in
        ``prompt_free.layout``)."""
        self.registry = registry
        self.device = torch.device(device) if device is not None else default_device()
        tiny = registry.has_tiny_models  # fp32 and contiguous unless asked (pixel pins on every machine)
        if dtype is None:
            dtype = DTYPES[resolve_precision(precision, self.device.type, tiny=tiny)]
        self.dtype = dtype
        self.precision = name_of(dtype)  # recorded with every picture (prompt_free.metadata)
        self.channels_last = layout.resolve(channels_last, self.device.type, self.precision, tiny=tiny)
        self.allow_download = allow_download
        self.fast = FastPath.from_setting(fast, self.device)
        self.previews = settings.previews() if previews is None else bool(previews)
        self._preview_failed = False  # a preview decoder that failed to load is reported once
        self.banner = banner
        self.max_counts = {"base_models": max(1, int(max_base_models)), "controlnets": max(1, int(max_controlnets))}
        budget = parse_size(memory_budget) or parse_size(settings.memory_budget(), "PFD_MEMORY_BUDGET")
        ram = parse_size(ram_budget, "RAM budget") or parse_size(settings.ram_budget(), "PFD_RAM_BUDGET")
        self.memory = Residency(budget or default_budget(self.device),
                                (ram or default_ram_budget()) if self.device.type == "cuda" else 0)
        self._key_locks: Dict[Tuple, threading.Lock] = {}
        self._staged = threading.local()  # .bytes: placed on the device by this thread's build
        self._encodings = _LRU(8)  # (seecoder, image digest) -> context
        self._small_lock = threading.Lock()  # the dicts above and load_counts; never held while loading
        self._run_lock = threading.RLock()  # device work, one request at a time
        self.load_counts: Counter = Counter()  # (kind, name) -> times loaded from disk/built
        self._rebuilders: Dict[Tuple, Callable[[], object]] = {}  # key -> its builder (``adopt``)
        self._known_bytes: Dict[Tuple, int] = {}  # key -> bytes when it was last resident

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(cls, profile: Optional[str] = None, checkpoints=None, **kwargs) -> "Engine":
        """``profile``: real | tiny | full-random | auto (default; env ``PFD_PROFILE``).
        ``full-random``: SD-1.5-size models with random weights built on the device (benchmarks). ``auto`` uses the real
        models when the default ones are available locally or the hub is reachable, else the
        tiny profile with a banner. ``kwargs`` go to ``Engine`` (``memory_budget=`` ...)."""
        profile = (profile or settings.profile()).lower()
        if profile == "auto":
            real = Registry.load(checkpoints, "real")
            if _defaults_reachable(real):
                return cls(real, **kwargs)
            return cls(Registry.load(checkpoints, "tiny"), banner=TINY_BANNER, **kwargs)
        registry = Registry.load(checkpoints, profile)
        banner = FULL_RANDOM_BANNER if registry.is_full_random else TINY_CHOSEN_BANNER if registry.is_tiny else None
        return cls(registry, banner=banner, **kwargs)

    @property
    def profile(self) -> str:
        return self.registry.profile

    @property
    def defaults(self) -> Dict[str, str]:
        return self.registry.defaults

    # ------------------------------------------------------------------ models
    def seecoder(self, name: str) -> LoadedSeeCoder:
        entry = self.registry.entry("seecoders", name)
        return self._resident(("seecoders", name), lambda: loading.build_seecoder(self, entry))

    def base_model(self, name: str) -> BaseModel:
        entry = self.registry.entry("base_models", name)
        return self._resident(("base_models", name), lambda: loading.build_base_model(self, entry))

    def controlnet(self, name: str):
        entry = self.registry.entry("controlnets", name)
        return self._resident(("controlnets", name), lambda: loading.build_controlnet(self, entry))

    def lora(self, name: str) -> LoraWeights:
        """The LoRA ``name`` (``loras:`` of checkpoints.yaml), read once and held like a model;
        it changes a base model only for the runs that ask for it (``Sampler.loras``)."""
        entry = self.registry.entry("loras", name)
        return self._resident(("loras", name), lambda: loading.build_lora(self, entry))

    def preview_decoder(self):
        """The tiny autoencoder of the profile's ``previews:`` entry (``defaults: preview``), loaded
        the first time a preview is needed and held like a model; None when the profile has none."""
        name = self.registry.defaults.get("preview")
        if name is None:
            return None
        entry = self.registry.entry("previews", name)
        return self._resident(("previews", name), lambda: loading.build_preview_decoder(self, entry))

    def cached(self, key: Tuple, build: Callable[[], object]):
        """Engine-held objects of other kinds (detectors, text encoders, IP-Adapter parts ...):
        built once by ``build``, accounted and evicted like the models."""
        return self._resident(key, build)

    def detector(self, name: str, annotator_dir=None):
        """The control-map detector ``name`` (``prompt_free.detectors``), built once and held here
        with the networks it shares; the key names the weight folders searched (``annotator_dir``,
        ``$PFD_ANNOTATOR_DIR``), so changing them builds anew."""
        from .detectors import folders_key, resolve_name
        from .detectors.detector import build

        name = resolve_name(name)
        return self.cached(("detectors", name, folders_key(annotator_dir)), lambda: build(self, name, annotator_dir))

    def adopt(self, key: Tuple, value=None, *, rebuild: Optional[Callable[[], object]] = None) -> None:
        """Hold an object built elsewhere under ``key`` (benchmarks put full-size random models
        under the tiny profile's names this way). ``rebuild``: from now on, builds ``key``
        whenever it is loaded (instead of the registry's entry): after an eviction, and on first
        use when ``value`` is None. It should place what it builds with ``place``."""
        if rebuild is not None:
            with self._small_lock:
                self._rebuilders[key] = rebuild
        if value is not None:
            self.memory.remove(key)
            r = self.memory.add(key, value, self._where(value))
            with self._small_lock:
                self._known_bytes[key] = r.bytes

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` on the engine's device and dtype, in eval mode, without gradients. Room is
        made within the memory budget first (least recently used models that no running request
        holds leave), so the device never holds more than the budget."""
        if self.device.type != "cpu":  # on the CPU the module is in memory already
            nbytes = sum(memory.storages(module).values())
            staged = getattr(self._staged, "bytes", 0)
            self._make_room(staged + nbytes)
            self._staged.bytes = staged + nbytes
        module = module.to(self.device)
        if any(p.is_floating_point() and p.dtype != self.dtype for p in module.parameters()):
            keep_fp32 = getattr(module, "_keep_in_fp32_modules", None)
            # diffusers' ModelMixin.to warns about fp32-kept modules even when a model has none
            module = module.to(self.dtype) if keep_fp32 else torch.nn.Module.to(module, self.dtype)
        if self.channels_last and layout.is_convolutional(module):
            layout.lay_out(module)
        module.eval().requires_grad_(False)
        return module

    # ------------------------------------------------------------------ residency
    @contextlib.contextmanager
    def request(self):
        """One request: every model it uses stays resident until it ends (others may evict only
        what no running request holds). Nested calls join the outer request."""
        opened = self.memory.begin_request()
        try:
            yield self
        finally:
            if opened:
                self.memory.end_request()

    def memory_report(self) -> List[Dict[str, object]]:
        """One entry per model as users know it: ``{"kind", "name", "where", "bytes"}``, where
        is "device" or "ram" (the host-memory tier on CUDA), least recently used first."""
        return [{"kind": r.kind, "name": memory.report_name(r.key), "where": r.where, "bytes": r.bytes}
                for r in self.memory.items()]

    def _key_lock(self, key: Tuple) -> threading.Lock:
        with self._small_lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _resident(self, key: Tuple, build: Callable[[], object]):
        """The one way a model becomes resident. Loads run outside any global lock: a per-key
        lock makes two requests for one model load it once, while requests on other models go
        on (only device work is serialised)."""
        self.memory.pin(key)
        r = self.memory.get(key)
        if r is None:
            with self._key_lock(key):
                r = self.memory.get(key)
                if r is None:
                    with self._small_lock:
                        self.load_counts[key] += 1
                        build = self._rebuilders.get(key, build)
                        known = self._known_bytes.get(key, 0)
                    # A model loaded before: make its room before building it (on the CPU the
                    # build itself fills memory, so evicting only afterwards would hold both).
                    if known:
                        self._make_room(known)
                    outer = getattr(self._staged, "bytes", 0)  # a build may need other models
                    self._staged.bytes = 0
                    try:
                        value = build()
                    finally:
                        self._staged.bytes = outer
                    new = sum(n for a, n in memory.storages(value).items() if not self.memory.owns(a))
                    self._make_room(new)
                    r = self.memory.add(key, value, self._where(value))
                    with self._small_lock:
                        self._known_bytes[key] = r.bytes
                    self._enforce_counts(key)
        if r.where == memory.RAM and self.device.type == "cuda":
            self._bring_back(r)
        return r.value

    def _where(self, value) -> str:
        on_device = any(t.device.type == self.device.type for t in memory.tensors(value))
        return memory.DEVICE if self.device.type == "cpu" or on_device else memory.RAM

    def _enforce_counts(self, key: Tuple) -> None:
        limit = self.max_counts.get(key[0])
        if limit is None:
            return
        same = [r for r in self.memory.evictable(keep={key}) if r.key[0] == key[0]]
        count = sum(1 for r in self.memory.items() if r.key[0] == key[0] and r.where == memory.DEVICE)
        for victim in same[: max(0, count - limit)]:
            self._evict(victim)

    def _make_room(self, need: int, *, wait_s: float = 120.0) -> None:
        """Evict least recently used, unheld models until ``need`` more bytes fit the budget.
        When only other running requests' models are in the way, wait for them to finish."""
        budget = self.memory.budget
        deadline = time.monotonic() + wait_s
        while True:
            with self.memory.lock:
                used = self.memory.used(memory.DEVICE)
                if used + need <= budget:
                    return
                victims = self.memory.evictable()
                if not victims:
                    own = sum(r.bytes for r in self.memory.items() if r.key in self.memory.own_pins())
                    if own + need > budget or time.monotonic() > deadline:
                        raise memory.MemoryBudgetError(self._budget_message(need, own))
                    self.memory.released.wait(timeout=1.0)
                    continue
                victim = victims[0]
            self._evict(victim)

    def _budget_message(self, need: int, own: int) -> str:
        held = [f"{memory.report_name(r.key)} ({memory.format_size(r.bytes)})" for r in self.memory.items()
                if r.where == memory.DEVICE]
        return (
            f"this request needs {memory.format_size(own + need)} of model memory on the device "
            f"({memory.format_size(need)} more now), but the memory budget is {memory.format_size(self.memory.budget)}"
            f" (loaded: {', '.join(held) or 'nothing'}). Raise it with --memory-budget / PFD_MEMORY_BUDGET, or use "
            "fewer or smaller models in one request."
        )

    def _evict(self, victim) -> None:
        """Move ``victim`` (and what shares its memory) to the RAM tier on CUDA, or drop it."""
        removed = self.memory.remove(victim.key)
        keep = self.device.type == "cuda" and self.memory.ram_budget > 0
        # Moving a module must not happen under another request's forward pass; dropping may.
        with self._run_lock if keep else contextlib.nullcontext():
            for r in removed:
                log.info("memory: %s %s (%s) leaves the device", r.kind, memory.report_name(r.key),
                         memory.format_size(r.bytes))
                if isinstance(r.value, StepGraphs):  # captured steps are remade, never moved
                    r.value.release()
                elif keep and r.where == memory.DEVICE and r.bytes <= self.memory.ram_budget:
                    memory.move(r.value, torch.device("cpu"), pin=True)
                    self.memory.add(r.key, r.value, memory.RAM)
            del removed
            self._trim_ram()
            self._free()

    def _trim_ram(self) -> None:
        while self.memory.used(memory.RAM) > self.memory.ram_budget:
            victims = self.memory.evictable(memory.RAM)
            if not victims:
                return
            self.memory.remove(victims[0].key)

    def _bring_back(self, r) -> None:
        with self._key_lock(r.key):
            if r.where != memory.RAM:
                return
            self._make_room(r.bytes)
            with self._run_lock:
                memory.move(r.value, self.device, pin=False)
                r.where = memory.DEVICE

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def on_device(self, fn: Callable, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` as device work: under the run lock (one request at a time
        on the device) and in inference mode. Every forward pass of a model the engine holds
        (SeeCoder, text and image encoders, UNet, ControlNets, VAE) goes through here."""
        with self._run_lock, torch.inference_mode():
            return fn(*args, **kwargs)

    # ------------------------------------------------------------------ work
    def encode_reference(self, image, seecoder_name: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reference image -> (context (1, 148, C), unconditional context (1, 148, C))."""
        sc = self.seecoder(seecoder_name)
        img = prepare_reference(image)
        digest = hashlib.sha1(img.tobytes() + repr(img.size).encode()).hexdigest()
        key = (seecoder_name, digest)
        with self._small_lock:
            hit = self._encodings.get_and_touch(key)
        if hit is None:
            x = image_to_tensor(img).to(self.device, self.dtype)
            encode = self.fast.encoder(sc.model, x) if self.fast is not None else sc.model  # compiled at common sizes
            hit = self.on_device(lambda: encode(x))
            with self._small_lock:
                self._encodings.put(key, hit)
        return hit, sc.unconditional

    def generate(
        self,
        base_model: str,
        conditioning: Conditioning,
        sampler: Sampler,
        *,
        progress: Optional[Callable[[int, int], None]] = None,
        decode: bool = True,
        preview: Optional[previews.PreviewCallback] = None,
    ) -> Generation:
        """The one call that samples: ``conditioning`` with ``sampler`` on ``base_model``.

        Makes the initial noise (``sampling.initial_noise``: image i from seed ``seed + i``, on
        the CPU), binds the conditioning's inpainting hooks to it, applies its UNet patch for
        this run only, fuses ``sampler.loras`` into the UNet for this run only (``lora.LoraPatch``;
        a LoRA that does not fit the base model is a ``LoraMismatchError`` before any work), runs
        the loop and decodes, all under the run lock. Out of device memory,
        it frees and evicts what the run does not need and tries once more; a second failure is
        a ``DeviceMemoryError`` with the sizes involved, and the engine keeps serving.

        ``preview``: called with a ``previews.Preview`` every few steps (None: the callback of
        ``previews.showing``, if any; none with ``decode=False``, a latents-only run). Previews
        never change the pictures; a preview decoder that cannot be loaded is logged once and
        the run goes on without previews."""
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
            if sampler.deep_cache > 1:
                deep_cache.check_supported(base.unet, f"'{base_model}'")
            f = base.vae_scale_factor
            noise = initial_noise(sampler.seeds, (4, sampler.height // f, sampler.width // f))
            reserve = memory.activation_reserve(sampler, torch.finfo(self.dtype).bits // 8) if self.device.type == "cuda" else 0
            if loras and self.device.type == "cuda":
                reserve += loras.patched_bytes(base.unet)
            fast, graphed = self._run_path(conditioning, sampler, loras)
            if graphed and self.device.type == "cuda":
                reserve += fast.graphs.slot_bytes_needed(base.unet)  # a new UNet weight slot
            for attempt in (1, 2):
                self._make_room(reserve)
                failed = None
                try:
                    return self._sample(base, conditioning, sampler, noise, progress, decode, loras, show, fast, graphed)
                except Exception as e:  # noqa: BLE001 - only out-of-memory is handled here
                    if not memory.is_out_of_memory(e):
                        raise
                    failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                # Outside the except block: its traceback no longer holds the run's tensors.
                if graphed and attempt == 1:
                    with self._run_lock:  # the captures' pool is working memory too
                        fast.graphs.drop_steps()
                self._free()
                if attempt == 1:
                    log.warning("out of device memory while sampling (%s); freeing memory and retrying once", failed)
                    for victim in self.memory.evictable():
                        self._evict(victim)
            used = self.memory.used(memory.DEVICE)
            log.error("out of device memory twice while sampling %d image(s) at %dx%d (%s)",
                      sampler.num_images, sampler.width, sampler.height, failed)
            raise memory.DeviceMemoryError(
                f"out of device memory while sampling {sampler.num_images} image(s) at {sampler.width}x{sampler.height}, "
                f"also after freeing memory and evicting the other models (models on the device: "
                f"{memory.format_size(used)} of a {memory.format_size(self.memory.budget)} budget; estimated working "
                f"memory {memory.format_size(reserve)}). Try a smaller size or fewer images, or lower --memory-budget "
                "to leave more room for the work itself."
            )

    def _run_path(self, c: Conditioning, sampler: Sampler, loras: LoraPatch) -> Tuple[Optional[FastPath], bool]:
        """(the sampling path of this run, whether it replays captured steps)."""
        fast = self.fast
        if fast is not None and (c.unet_patch is not None or (loras and fast.compile)):
            # A patched UNet is neither the module that was compiled nor the graphs' weight slot;
            # fused LoRA weights are untested compiled (the slot copies them like any weights).
            fast = fast.without_compile(keep_graphs=c.unet_patch is None)
        return fast, fast is not None and sampler.deep_cache == 1 and fast.graphs_apply(c.controls)

    def _sample(self, base: BaseModel, c: Conditioning, sampler: Sampler, noise: torch.Tensor, progress, decode: bool,
                loras: LoraPatch, show=None, fast: Optional[FastPath] = None, graphed: bool = False):
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
            t0 = time.perf_counter()
            with fused, patch:
                latents = denoise(
                    base.unet, make_scheduler(sampler.scheduler), noise, c.context, c.uncond,
                    steps=sampler.steps, guidance=sampler.guidance, controls=c.controls,
                    generator=torch.Generator().manual_seed(sampler.seed), progress=progress,
                    extra_unet_channels=extra, after_step=after_step, fast=fast, preview=show,
                    deep_cache=sampler.deep_cache,
                    step_context=c.step_context(sampler.num_images, sampler.guidance != 1.0, base.unet.device,
                                                base.unet.dtype),
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
        (``_evict``) drops them; the next graphed run makes them anew. Under the run lock."""
        self.memory.pin(GRAPHS_KEY)
        graphs.prepare(unet)
        self.memory.remove(GRAPHS_KEY)
        self.memory.add(GRAPHS_KEY, graphs)

    def _preview_hook(self, callback: Optional[previews.PreviewCallback]):
        """``sampling.denoise``'s preview hook for ``callback``: the latents decoded by the preview
        decoder (loaded now, within the request) into a ``Preview``; None when previews are off,
        the profile has no decoder, or it failed to load (logged once)."""
        if callback is None or not self.previews or self._preview_failed:
            return None
        try:
            decoder = self.preview_decoder()
        except Exception as e:  # noqa: BLE001 - a preview must never fail the request
            self._preview_failed = True
            log.warning("live previews are off: the preview decoder could not be loaded (%s: %s)",
                        type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
            return None
        if decoder is None:
            return None
        failed = []

        def show(step: int, total: int, latents: torch.Tensor) -> None:
            if failed:
                return
            try:  # inside the loop: under the run lock, in inference mode; reads ``latents`` only
                x = decoder.decode(latents.to(self.device, decoder.dtype) / decoder.config.scaling_factor).sample
                callback(previews.Preview(tensor_to_images((x.float() + 1) / 2), step, total))
            except Exception as e:  # noqa: BLE001 - a preview must never fail the request
                failed.append(e)
                log.warning("live previews stopped for this run (%s: %s)", type(e).__name__, str(e)[:300])

        return show

    def decode(self, base: BaseModel, latents: torch.Tensor) -> list:
        """Final latents -> PIL images, one at a time (bounds VAE memory at large sizes)."""
        vae = base.vae

        def run():
            decode = self.fast.decoder(vae) if self.fast is not None else vae.decode  # under the run lock
            out = []
            for z in latents.split(1):
                x = decode(z.to(self.device, vae.dtype) / vae.config.scaling_factor).sample
                out.extend(tensor_to_images((x.float() + 1) / 2))
            return out

        return self.on_device(run)

    def encode_latents(self, base: BaseModel, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> scaled VAE latents (mean of the posterior)."""
        vae = base.vae
        z = self.on_device(lambda: vae.encode(image.to(self.device, vae.dtype) * 2 - 1).latent_dist.mean)
        return z.float() * vae.config.scaling_factor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _defaults_reachable(registry: Registry, timeout: float = 3.0) -> bool:
    """Real weights usable: default models cached locally, or the hub answers quickly."""
    entries = [registry.entry("seecoders", registry.defaults["seecoder"]), registry.entry("base_models", registry.defaults["base_model"])]
    if all(registry.available_locally(e) for e in entries):
        return True
    if hub_offline():
        return False
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        src = entries[0].sources[0]
        if src.repo is None or not src.file:
            return False
        get_hf_file_metadata(hf_hub_url(src.repo, src.file, subfolder=src.subfolder), timeout=timeout)
        return True
    except Exception:
        return False
