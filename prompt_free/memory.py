"""Residency for the engine: what is resident, how many bytes, where, what to evict, and the
eviction itself (``Budget``: the memory budget kept).

Every model the engine holds is one ``Resident``: its key (as in ``Engine.load_counts``), the
kind and name users know it by, the loaded object, its bytes and where it lives ("device", or
"ram" for the host-memory tier on CUDA). ``Residency`` keeps them in least-recently-used order
and, before a newcomer is placed, picks what to evict so that it fits the budget, skipping
everything a running request holds (its "pins"). Bytes are counted once: storage that a
resident shares with an earlier one (a detector and the network it wraps) belongs to the
earlier one, which then cannot leave without its dependants.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import torch

from .errors import InvalidSettingError, PromptFreeError

log = logging.getLogger(__name__)

DEVICE, RAM = "device", "ram"
REPORT_KINDS = ("base_model", "seecoder", "controlnet", "text_encoder", "image_encoder", "ip_adapter", "lora", "detector", "preview_decoder", "cuda_graphs", "other")
_KIND_OF_KEY = {
    "base_models": "base_model", "seecoders": "seecoder", "controlnets": "controlnet",
    "text_encoder": "text_encoder", "ip_image_encoder": "image_encoder", "ip_adapter": "ip_adapter",
    "detectors": "detector", "detector networks": "detector", "loras": "lora",
    "previews": "preview_decoder", "cuda_graphs": "cuda_graphs",
}
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class MemoryBudgetError(PromptFreeError):
    """A request needs more memory than the budget allows, even with everything else evicted."""


class DeviceMemoryError(PromptFreeError):
    """The device ran out of memory twice for one request (after freeing and evicting)."""


def parse_size(value, what: str = "memory budget") -> Optional[int]:
    """``8GB``, ``512MiB``, ``1.5 G``, ``123456789`` (bytes) or an int -> bytes; None/"" -> None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise InvalidSettingError(f"{what} must be a size such as 8GB, 512MiB or a number of bytes, got {value!r}")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not n > 0:
        raise InvalidSettingError(f"{what} must be positive, got {value!r}")
    return int(n)


def format_size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def report_kind(key: Tuple) -> str:
    return _KIND_OF_KEY.get(key[0], "other")


def report_name(key: Tuple) -> str:
    if key[0] in ("base_models", "seecoders", "controlnets", "detectors", "ip_adapter", "loras", "previews"):
        return str(key[1])
    if key[0] == "detector networks":
        return f"{key[1]} (network)"
    return " ".join(str(k) for k in key[1:] if k)


# ----------------------------------------------------------------------------- tensors of an object
def tensors(obj, _seen: Optional[Set[int]] = None, _depth: int = 0) -> Iterator[torch.Tensor]:
    """Every parameter, buffer and tensor an engine-held object owns (modules, dataclasses,
    dicts, lists and plain objects such as detector wrappers, a few levels deep)."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen or _depth > 4:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors(v, seen, _depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors(v, seen, _depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.metadata.get("owned", True):  # e.g. a back-reference to the engine is not
                yield from tensors(getattr(obj, f.name), seen, _depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__.split(".")[0] != "builtins":
        for v in vars(obj).values():
            yield from tensors(v, seen, _depth + 1)


def storages(obj) -> Dict[int, int]:
    """{storage address: bytes} of ``obj``'s tensors (shared storage counted once)."""
    out: Dict[int, int] = {}
    for t in tensors(obj):
        s = t.untyped_storage()
        if s.data_ptr():  # empty tensors have no storage of their own
            out[s.data_ptr()] = s.nbytes()
    return out


def modules_of(obj) -> List[torch.nn.Module]:
    """The top-level modules of an engine-held object (what a tier move moves)."""
    if isinstance(obj, torch.nn.Module):
        return [obj]
    if isinstance(obj, dict):
        return [m for v in obj.values() for m in modules_of(v)]
    if isinstance(obj, (list, tuple)):
        return [m for v in obj for m in modules_of(v)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [m for f in dataclasses.fields(obj) if f.metadata.get("owned", True)
                for m in modules_of(getattr(obj, f.name))]
    return []


# ----------------------------------------------------------------------------- the resident set
@dataclass
class Resident:
    key: Tuple
    value: Any
    bytes: int
    where: str = DEVICE
    storage: Set[int] = field(default_factory=set)  # addresses it owns (for dependants)
    dependants: Set[Tuple] = field(default_factory=set)  # residents that share its storage

    @property
    def kind(self) -> str:
        return report_kind(self.key)


class Residency:
    """Residents in LRU order, the pins of running requests, and eviction to fit a budget.
    Thread-safe; never loads or moves anything itself (the engine does, outside its lock)."""

    def __init__(self, budget: Optional[int], ram_budget: Optional[int] = None):
        self.budget = budget
        self.ram_budget = ram_budget
        self._items: "OrderedDict[Tuple, Resident]" = OrderedDict()
        self._owner: Dict[int, Tuple] = {}  # storage address -> key of its owner
        self._pins: Dict[int, Set[Tuple]] = {}  # thread id -> keys its request holds
        self.lock = threading.RLock()
        self.released = threading.Condition(self.lock)  # a request ended: pins changed

    # ---- pins
    def pin(self, key: Tuple) -> None:
        with self.lock:
            pins = self._pins.get(threading.get_ident())
            if pins is not None:
                pins.add(key)

    def pin_values(self, values) -> None:
        """Pin the residents that are these very objects (e.g. the ControlNets of a run)."""
        ids = {id(v) for v in values}
        with self.lock:
            for r in self._items.values():
                if id(r.value) in ids:
                    self.pin(r.key)

    def begin_request(self) -> bool:
        """Start pinning for this thread; False when a request is already open (nested)."""
        with self.lock:
            if threading.get_ident() in self._pins:
                return False
            self._pins[threading.get_ident()] = set()
            return True

    def end_request(self) -> None:
        with self.lock:
            self._pins.pop(threading.get_ident(), None)
            self.released.notify_all()

    def pinned(self, *, others_only: bool = False) -> Set[Tuple]:
        with self.lock:
            me = threading.get_ident()
            keys = {k for tid, ks in self._pins.items() if not (others_only and tid == me) for k in ks}
            return self._with_owners(keys)

    def own_pins(self) -> Set[Tuple]:
        with self.lock:
            return self._with_owners(set(self._pins.get(threading.get_ident(), ())))

    def _with_owners(self, keys: Set[Tuple]) -> Set[Tuple]:
        # A pinned dependant keeps the residents whose storage it uses.
        out = set(keys)
        for r in self._items.values():
            if r.dependants & keys:
                out.add(r.key)
        return out

    # ---- residents
    def get(self, key: Tuple) -> Optional[Resident]:
        with self.lock:
            r = self._items.get(key)
            if r is not None:
                self._items.move_to_end(key)
            return r

    def add(self, key: Tuple, value: Any, where: str = DEVICE) -> Resident:
        with self.lock:
            sizes = storages(value)
            own = {a for a in sizes if a not in self._owner}
            for a in set(sizes) - own:
                self._items[self._owner[a]].dependants.add(key)
            for a in own:
                self._owner[a] = key
            r = Resident(key, value, sum(sizes[a] for a in own), where, own)
            self._items[key] = r
            return r

    def remove(self, key: Tuple) -> List[Resident]:
        """Forget ``key`` and its dependants; returns what was removed."""
        with self.lock:
            r = self._items.pop(key, None)
            if r is None:
                return []
            out = [r]
            for a in r.storage:
                self._owner.pop(a, None)
            for other in self._items.values():
                other.dependants.discard(key)
            for d in list(r.dependants):
                out += self.remove(d)
            return out

    def owns(self, address: int) -> bool:
        with self.lock:
            return address in self._owner

    def items(self) -> List[Resident]:
        with self.lock:
            return list(self._items.values())

    def used(self, where: str = DEVICE) -> int:
        with self.lock:
            return sum(r.bytes for r in self._items.values() if r.where == where)

    def evictable(self, where: str = DEVICE, keep: Set[Tuple] = frozenset()) -> List[Resident]:
        """Residents in ``where`` that no running request holds, least recently used first."""
        pinned = self.pinned() | set(keep)
        with self.lock:
            return [r for r in self._items.values() if r.where == where and r.key not in pinned]


def move(value, device: torch.device, *, pin: bool) -> None:
    """Move an engine-held object's modules and tensor fields to ``device`` in place. To the
    CPU with ``pin``: page-locked host memory, so the way back is a non-blocking copy."""
    for module in modules_of(value):
        module.to(device, non_blocking=True)
        if pin and device.type == "cpu" and torch.cuda.is_available():
            for t in list(module.parameters()) + list(module.buffers()):
                t.data = t.data.pin_memory()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            t = getattr(value, f.name)
            if isinstance(t, torch.Tensor):
                t = t.to(device, non_blocking=True)
                setattr(value, f.name, t.pin_memory() if pin and device.type == "cpu" and torch.cuda.is_available() else t)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def default_budget(device: torch.device) -> int:
    """On CUDA the device's memory less a reserve (activations are reserved per request on top);
    on the CPU three quarters of the physical RAM."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return max(total - 2**30, total // 2)
    return physical_ram() * 3 // 4


def default_ram_budget() -> int:
    """The host-memory tier on CUDA: half of the physical RAM."""
    return physical_ram() // 2


def physical_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def is_out_of_memory(e: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError that says out of memory (some kernels)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (oom and isinstance(e, oom)) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def activation_reserve(sampler, dtype_bytes: int) -> int:
    """Working memory one run needs on the device besides the weights (CUDA only), growing with
    the request: ~0.01 MiB per latent pixel and dtype byte for each UNet batch row (two rows per
    image with guidance, SDPA attention), plus the VAE decoder's activations for one image."""
    latent_pixels = (sampler.height // 8) * (sampler.width // 8)
    rows = sampler.num_images * (2 if sampler.guidance != 1 else 1)
    unet = rows * latent_pixels * dtype_bytes * 0.01 * 2**20
    vae = latent_pixels * 64 * dtype_bytes * 1100
    return int(unet + vae)


# ----------------------------------------------------------------------------- the budget kept
class Budget:
    """Keeps an engine's held models within its memory budget: makes room for a newcomer by
    evicting the least recently used models no running request holds (to the RAM tier on CUDA,
    else dropped), waits when only other requests' models are in the way, brings a model back
    from the RAM tier, keeps at most ``max_counts[kind]`` of a kind on the device, and runs a
    sampling run with one retry after running out of memory. ``Residency`` is the accounting;
    this class moves and frees. Moving a module happens under ``run_lock`` (the engine's device
    work lock), never under another request's forward pass."""

    def __init__(self, residency: Residency, device: torch.device, run_lock, max_counts: Dict[str, int]):
        self.residency, self.device, self.run_lock, self.max_counts = residency, device, run_lock, max_counts

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """One request: every model it uses stays resident until it ends. Nested calls join the outer request."""
        opened = self.residency.begin_request()
        try:
            yield
        finally:
            if opened:
                self.residency.end_request()

    def where(self, value) -> str:
        on_device = any(t.device.type == self.device.type for t in tensors(value))
        return DEVICE if self.device.type == "cpu" or on_device else RAM

    def make_room(self, need: int, *, wait_s: float = 120.0) -> None:
        """Evict least recently used, unheld models until ``need`` more bytes fit the budget.
        When only other running requests' models are in the way, wait for them to finish."""
        r = self.residency
        deadline = time.monotonic() + wait_s
        while True:
            with r.lock:
                if r.used(DEVICE) + need <= r.budget:
                    return
                victims = r.evictable()
                if not victims:
                    own = sum(x.bytes for x in r.items() if x.key in r.own_pins())
                    if own + need > r.budget or time.monotonic() > deadline:
                        raise MemoryBudgetError(self._budget_message(need, own))
                    r.released.wait(timeout=1.0)
                    continue
                victim = victims[0]
            self.evict(victim)

    def _budget_message(self, need: int, own: int) -> str:
        held = [f"{report_name(r.key)} ({format_size(r.bytes)})" for r in self.residency.items() if r.where == DEVICE]
        return (
            f"this request needs {format_size(own + need)} of model memory on the device "
            f"({format_size(need)} more now), but the memory budget is {format_size(self.residency.budget)}"
            f" (loaded: {', '.join(held) or 'nothing'}). Raise it with --memory-budget / PFD_MEMORY_BUDGET, or use "
            "fewer or smaller models in one request."
        )

    def evict(self, victim: Resident) -> None:
        """Move ``victim`` (and what shares its memory) to the RAM tier on CUDA, or drop it. A
        resident that says ``remade_on_eviction`` (captured CUDA graphs) is released instead."""
        removed = self.residency.remove(victim.key)
        keep = self.device.type == "cuda" and self.residency.ram_budget > 0
        with self.run_lock if keep else contextlib.nullcontext():
            for r in removed:
                log.info("memory: %s %s (%s) leaves the device", r.kind, report_name(r.key), format_size(r.bytes))
                if getattr(r.value, "remade_on_eviction", False):
                    r.value.release()
                elif keep and r.where == DEVICE and r.bytes <= self.residency.ram_budget:
                    move(r.value, torch.device("cpu"), pin=True)
                    self.residency.add(r.key, r.value, RAM)
            del removed
            self._trim_ram()
            self.free()

    def evict_unheld(self) -> None:
        for victim in self.residency.evictable():
            self.evict(victim)

    def _trim_ram(self) -> None:
        while self.residency.used(RAM) > self.residency.ram_budget:
            victims = self.residency.evictable(RAM)
            if not victims:
                return
            self.residency.remove(victims[0].key)

    def bring_back(self, r: Resident, key_lock) -> None:
        """``r`` from the RAM tier to the device (under its key's lock), room made first."""
        with key_lock:
            if r.where != RAM:
                return
            self.make_room(r.bytes)
            with self.run_lock:
                move(r.value, self.device, pin=False)
                r.where = DEVICE

    def enforce_counts(self, key: Tuple) -> None:
        limit = self.max_counts.get(key[0])
        if limit is None:
            return
        same = [r for r in self.residency.evictable(keep={key}) if r.key[0] == key[0]]
        count = sum(1 for r in self.residency.items() if r.key[0] == key[0] and r.where == DEVICE)
        for victim in same[: max(0, count - limit)]:
            self.evict(victim)

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def run_with_retry(self, fn: Callable[[], Any], reserve: int, what: str, on_retry: Optional[Callable] = None):
        """``fn()`` with ``reserve`` bytes of working memory made room for. Out of device memory,
        it frees (``on_retry`` under the run lock, e.g. dropping captured steps), evicts what
        no request holds and tries once more; a second failure is a ``DeviceMemoryError`` about
        ``what`` (e.g. "sampling 2 image(s) at 512x512")."""
        failed = None
        for attempt in (1, 2):
            self.make_room(reserve)
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(e):
                    raise
                failed = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            # Outside the except block: its traceback no longer holds the run's tensors.
            if on_retry is not None and attempt == 1:
                with self.run_lock:
                    on_retry()
            self.free()
            if attempt == 1:
                log.warning("out of device memory while %s (%s); freeing memory and retrying once", what, failed)
                self.evict_unheld()
        used = self.residency.used(DEVICE)
        log.error("out of device memory twice while %s (%s)", what, failed)
        raise DeviceMemoryError(
            f"out of device memory while {what}, also after freeing memory and evicting the other models (models on "
            f"the device: {format_size(used)} of a {format_size(self.residency.budget)} budget; estimated working "
            f"memory {format_size(reserve)}). Try a smaller size or fewer images, or lower --memory-budget "
            "to leave more room for the work itself."
        )
