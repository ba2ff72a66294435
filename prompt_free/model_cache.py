"""The models an engine holds: which entry, which builder, loaded once, placed within the budget.

``ModelCache`` is the one way a model becomes resident (``resident``): a per-key lock makes two
requests for one model load it once while requests for other models go on (only device work is
serialised, by the engine); what a build places on the device is made room for first
(``place``), and what it holds is counted by ``memory.Residency`` and evicted by
``memory.Budget``. Builders (``prompt_free.loading``, detectors, text and image encoders) get the
engine, ``owner``, and place their modules with ``owner.place``.

``profile_registry`` picks the registry (and the banner saying what runs) of a profile.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Callable, Dict, Optional, Tuple

import torch

from . import cancel, layout, loading, memory
from .detectors import folders_key, resolve_name
from .detectors.detector import build as build_detector
from .loading import BaseModel, LoadedSeeCoder
from .lora import LoraWeights
from .registry import Registry
from .settings import hub_offline

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


def profile_registry(profile: str, checkpoints=None) -> Tuple[Registry, Optional[str]]:
    """(the registry of ``profile``, the banner to show or None). ``auto``: the real models when
    the default ones are available locally or the hub is reachable, else the tiny profile."""
    if profile == "auto":
        real = Registry.load(checkpoints, "real")
        if defaults_reachable(real):
            return real, None
        return Registry.load(checkpoints, "tiny"), TINY_BANNER
    registry = Registry.load(checkpoints, profile)
    return registry, FULL_RANDOM_BANNER if registry.is_full_random else TINY_CHOSEN_BANNER if registry.is_tiny else None


def defaults_reachable(registry: Registry, timeout: float = 3.0) -> bool:
    """Real weights usable: default models cached locally, or the hub answers quickly."""
    entries = [registry.entry("seecoders", registry.defaults["seecoder"]),
               registry.entry("base_models", registry.defaults["base_model"])]
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


class ModelCache:
    """The held models by key (``("base_models", name)`` ...): loaded lazily and once, counted
    (``load_counts``: (kind, name) -> times loaded from disk or built) and kept within the budget."""

    def __init__(self, owner, registry: Registry, budget: memory.Budget, dtype: torch.dtype, channels_last: bool):
        self.owner, self.registry, self.budget = owner, registry, budget
        self.device, self.dtype, self.channels_last = budget.device, dtype, channels_last
        self.load_counts: Counter = Counter()
        self.known_bytes: Dict[Tuple, int] = {}  # key -> bytes when it was last resident
        self._key_locks: Dict[Tuple, threading.Lock] = {}
        self._rebuilders: Dict[Tuple, Callable[[], object]] = {}  # key -> its builder (``adopt``)
        self._small_lock = threading.Lock()  # the dicts above; never held while loading
        self._staged = threading.local()  # .bytes: placed on the device by this thread's build

    # ------------------------------------------------------------------ entries
    def seecoder(self, name: str) -> LoadedSeeCoder:
        entry = self.registry.entry("seecoders", name)
        return self.resident(("seecoders", name), lambda: loading.build_seecoder(self.owner, entry))

    def base_model(self, name: str) -> BaseModel:
        entry = self.registry.entry("base_models", name)
        return self.resident(("base_models", name), lambda: loading.build_base_model(self.owner, entry))

    def controlnet(self, name: str):
        entry = self.registry.entry("controlnets", name)
        return self.resident(("controlnets", name), lambda: loading.build_controlnet(self.owner, entry))

    def lora(self, name: str) -> LoraWeights:
        entry = self.registry.entry("loras", name)
        return self.resident(("loras", name), lambda: loading.build_lora(self.owner, entry))

    def preview_decoder(self):
        name = self.registry.defaults.get("preview")
        if name is None:
            return None
        entry = self.registry.entry("previews", name)
        return self.resident(("previews", name), lambda: loading.build_preview_decoder(self.owner, entry))

    def detector(self, name: str, annotator_dir=None):
        name = resolve_name(name)
        return self.resident(("detectors", name, folders_key(annotator_dir)),
                             lambda: build_detector(self.owner, name, annotator_dir))

    # ------------------------------------------------------------------ residency
    def key_lock(self, key: Tuple) -> threading.Lock:
        with self._small_lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def resident(self, key: Tuple, build: Callable[[], object]):
        """The object held under ``key``, built by ``build`` (or the builder ``adopt`` set) the
        first time and after an eviction; brought back from the RAM tier on CUDA."""
        residency = self.budget.residency
        residency.pin(key)
        r = residency.get(key)
        if r is None:
            with self.key_lock(key):
                r = residency.get(key)
                if r is None:
                    r = self._load(key, build)
        if r.where == memory.RAM and self.device.type == "cuda":
            self.budget.bring_back(r, self.key_lock(r.key))
        return r.value

    def _load(self, key: Tuple, build: Callable[[], object]) -> memory.Resident:
        with self._small_lock:
            self.load_counts[key] += 1
            build = self._rebuilders.get(key, build)
            known = self.known_bytes.get(key, 0)
        # A model loaded before: make its room before building it (on the CPU the build itself
        # fills memory, so evicting only afterwards would hold both).
        if known:
            self.budget.make_room(known)
        outer = getattr(self._staged, "bytes", 0)  # a build may need other models
        self._staged.bytes = 0
        cancel.check()  # a cancelled request loads nothing more
        try:
            with cancel.paused():  # loading (a download, a first build) does not count towards the limit
                value = build()
        finally:
            self._staged.bytes = outer
        residency = self.budget.residency
        self.budget.make_room(sum(n for a, n in memory.storages(value).items() if not residency.owns(a)))
        r = residency.add(key, value, self.budget.where(value))
        with self._small_lock:
            self.known_bytes[key] = r.bytes
        self.budget.enforce_counts(key)
        return r

    def adopt(self, key: Tuple, value=None, *, rebuild: Optional[Callable[[], object]] = None) -> None:
        """Hold an object built elsewhere under ``key``. ``rebuild``: from now on, builds ``key``
        whenever it is loaded (after an eviction, and on first use when ``value`` is None)."""
        if rebuild is not None:
            with self._small_lock:
                self._rebuilders[key] = rebuild
        if value is not None:
            residency = self.budget.residency
            residency.remove(key)
            r = residency.add(key, value, self.budget.where(value))
            with self._small_lock:
                self.known_bytes[key] = r.bytes

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` on the device and dtype, in eval mode, without gradients; room is made
        within the budget first, so the device never holds more than the budget."""
        if self.device.type != "cpu":  # on the CPU the module is in memory already
            nbytes = sum(memory.storages(module).values())
            staged = getattr(self._staged, "bytes", 0)
            self.budget.make_room(staged + nbytes)
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
