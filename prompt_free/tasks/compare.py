"""Dual-ControlNet comparison: Prompt-Free side by side with the alternatives, in one run.

Every column gets the same reference image, structure image, structure ControlNet, base
model, seed, size, steps, guidance and sampler; only the way the reference's content reaches
the UNet differs:

1. ``prompt_free``: SeeCoder embedding of the reference (the paper's method), structure
   ControlNet. Exactly the Reference+ControlNet task (``tasks.control.reference_control``).
2. ``dual_controlnet``: the CLIP text encoder with an optional prompt (empty by default) and
   negative prompt (CFG: unconditional = negative prompt), plus a *content* ControlNet
   (``defaults.content_controlnet``, shuffle) fed the shuffled reference, plus the same
   structure ControlNet.
3. ``ip_adapter`` (only when an ``ip_adapters:`` entry is configured): CLIP text as in 2 plus
   IP-Adapter image tokens (diffusers' IP-Adapter attention processors and image projection,
   CLIP image encoder), plus the structure ControlNet.

The columns share the base UNet, the VAE and the structure ControlNet (the engine's objects;
nothing is copied). The text encoder, the content ControlNet and the IP-Adapter parts load
only when a column that needs them runs, through the engine's cache. A switched-off column
does no work at all. Each column reports its wall time and, on CUDA, its peak GPU memory.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from ..errors import CheckpointError, ConfigError, InputImageError, InvalidSettingError, ModelUnavailableError
from ..images import image_to_tensor, load_image, prepare_reference, side_by_side, snap_size
from ..settings import hub_offline
from .common import SamplerSettings, TaskResult, resolve_defaults
from .control import MODE_AS_IS, ControlSettings, ControlSpec, follow_size, reference_control

PROMPT_FREE = "prompt_free"
DUAL_CONTROLNET = "dual_controlnet"
IP_ADAPTER = "ip_adapter"
METHODS = (PROMPT_FREE, DUAL_CONTROLNET, IP_ADAPTER)
METHOD_LABELS = {
    PROMPT_FREE: "Prompt-Free (SeeCoder)",
    DUAL_CONTROLNET: "Dual-ControlNet (shuffle + text)",
    IP_ADAPTER: "IP-Adapter (+ text)",
}
MAX_CONTENT_SCALE = 2.0
MAX_IP_SCALE = 2.0
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

ColumnProgress = Optional[Callable[[int, int], None]]
_NUMPY_RNG_LOCK = threading.Lock()


@dataclass
class CompareSettings(SamplerSettings):
    """Settings shared by every column, plus the baselines' own.

    width/height None: follow the structure image (as the Reference+ControlNet task).
    ``num_images`` is ignored: each column makes one image.
    """

    width: Optional[int] = None
    height: Optional[int] = None
    methods: Tuple[str, ...] = (PROMPT_FREE, DUAL_CONTROLNET)
    control_scale: float = 1.0  # structure ControlNet, every column
    content_controlnet: Optional[str] = None  # None: defaults.content_controlnet
    content_scale: float = 1.0
    prompt: str = ""  # text columns only
    negative_prompt: str = ""
    ip_adapter: Optional[str] = None  # None: the first configured
    ip_adapter_scale: float = 1.0
    annotator_dir: Optional[str] = None


@dataclass
class ColumnResult:
    method: str
    label: str
    image: Image.Image
    conditioning: str  # what carries the reference's content
    controlnets: List[str]  # "structure: openpose", "content: shuffle"
    text_encoder: bool
    image_encoder: bool
    timings: Dict[str, float] = field(default_factory=dict)  # "wall" and its parts
    peak_memory: Optional[int] = None  # bytes (CUDA only; None on CPU)
    extras: List[Image.Image] = field(default_factory=list)  # column-specific maps (shuffled reference)


@dataclass
class CompareResult(TaskResult):
    """``images``: one per switched-on column, in METHODS order; ``extras``: the structure map."""

    columns: Dict[str, ColumnResult] = field(default_factory=dict)
    side_by_side: Optional[Image.Image] = None


# ----------------------------------------------------------------------------- helpers (also for the UI)
def ip_adapter_names(engine) -> List[str]:
    return engine.registry.names("ip_adapters")


def available_methods(engine) -> List[str]:
    """Methods this profile can run (IP-Adapter only with an ``ip_adapters`` entry)."""
    return [m for m in METHODS if m != IP_ADAPTER or ip_adapter_names(engine)]


def content_controlnet_name(engine, name: Optional[str] = None) -> str:
    name = name or engine.defaults.get("content_controlnet")
    if not name:
        raise ConfigError("the Dual-ControlNet column needs a content ControlNet: set defaults.content_controlnet "
                          "(e.g. shuffle) in checkpoints.yaml")
    engine.registry.entry("controlnets", name)
    return name


def differences(result: CompareResult) -> List[Dict[str, str]]:
    """One row per column: what differs between the methods (for a table under the images)."""
    rows = []
    for c in result.columns.values():
        rows.append({
            "method": c.label,
            "conditioning": c.conditioning,
            "controlnets": ", ".join(c.controlnets),
            "text encoder": "yes (CLIP)" if c.text_encoder else "no",
            "image encoder": "yes (CLIP vision)" if c.image_encoder else ("SeeCoder" if c.method == PROMPT_FREE else "no"),
        })
    return rows


def normalise_methods(methods) -> Tuple[str, ...]:
    if isinstance(methods, str):
        methods = [methods]
    out = []
    for m in methods or ():
        key = str(m).strip().lower().replace("-", "_").replace(" ", "_")
        key = {"prompt_free_diffusion": PROMPT_FREE, "pfd": PROMPT_FREE, "dual": DUAL_CONTROLNET,
               "ip": IP_ADAPTER, "ipadapter": IP_ADAPTER}.get(key, key)
        if key not in METHODS:
            raise InvalidSettingError(f"unknown comparison method {m!r}; choose from: {', '.join(METHODS)}")
        if key not in out:
            out.append(key)
    if not out:
        raise InvalidSettingError("all comparison columns are switched off: switch on at least one method")
    return tuple(m for m in METHODS if m in out)


def _number(v, what: str, lo: float, hi: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InvalidSettingError(f"{what} must be a number, got {v!r}") from None
    if not (lo <= f <= hi):
        raise InvalidSettingError(f"{what} must be between {lo:g} and {hi:g}, got {v!r}")
    return f


@contextlib.contextmanager
def _metered(engine, record: Dict[str, Any]):
    """Wall time of a column and, on CUDA, its peak allocated memory (peak reset first)."""
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(engine.device)
        torch.cuda.reset_peak_memory_stats(engine.device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if cuda:
            torch.cuda.synchronize(engine.device)
            record["peak_memory"] = int(torch.cuda.max_memory_allocated(engine.device))
        record["wall"] = time.perf_counter() - t0


@contextlib.contextmanager
def _numpy_seeded(seed: int):
    """controlnet_aux's shuffle draws from numpy's global RNG: seed it for one call and put the
    caller's state back, so the same seed gives the same shuffled map."""
    with _NUMPY_RNG_LOCK:
        state = np.random.get_state()
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


# ----------------------------------------------------------------------------- the structure map
def _structure_map(engine, spec: ControlSpec, size: Tuple[int, int], annotator_dir) -> Image.Image:
    """The structure ControlNet's hint, exactly as the Reference+ControlNet task makes it."""
    from .control import prepare_control_map

    return prepare_control_map(engine, spec, size, annotator_dir, what="structure image")


def _content_map(engine, reference: Image.Image, controlnet: str, size: Tuple[int, int], seed: int, annotator_dir) -> Image.Image:
    """The content ControlNet's hint: the reference at the output size, through the entry's
    preprocessor (shuffle), with numpy's RNG seeded from the generation seed."""
    from . import control

    preprocessor = control.default_preprocessor(engine, controlnet)
    resized = reference if reference.size == size else reference.resize(size, Image.BICUBIC)
    if preprocessor == "none":
        return resized
    with _numpy_seeded(seed):
        out = engine.detector(preprocessor, annotator_dir)(resized, resolution=control.detect_resolution(size))
    out = out.convert("RGB")
    return out if out.size == size else out.resize(size, Image.BICUBIC)


# ----------------------------------------------------------------------------- IP-Adapter
@dataclass
class LoadedIPAdapter:
    name: str
    processors: Dict[str, torch.nn.Module]  # UNet attention processor name -> processor
    image_proj: torch.nn.Module
    image_encoder: torch.nn.Module
    num_tokens: int


def _place(engine, module: torch.nn.Module) -> torch.nn.Module:
    module = module.to(engine.device, engine.dtype).eval()
    module.requires_grad_(False)
    return module


def _read_ip_adapter_file(path: Path) -> Dict[str, Dict[str, torch.Tensor]]:
    """{"image_proj": {...}, "ip_adapter": {...}} from a .safetensors (prefixed keys) or a
    weights-only pickle (nested dicts, the original .bin layout)."""
    from ..weights import PICKLE_SUFFIXES, read_state_dict

    if path.suffix.lower() in PICKLE_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"IP-Adapter file '{path}' could not be read: {str(e).splitlines()[0][:160]}") from None
        if isinstance(obj, dict) and isinstance(obj.get("image_proj"), dict) and isinstance(obj.get("ip_adapter"), dict):
            return {"image_proj": dict(obj["image_proj"]), "ip_adapter": dict(obj["ip_adapter"])}
        flat = obj if isinstance(obj, dict) else {}
    else:
        flat = read_state_dict(path)
    out: Dict[str, Dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for k, v in flat.items():
        head, _, rest = str(k).partition(".")
        if head in out and rest and isinstance(v, torch.Tensor):
            out[head][rest] = v
    if not out["image_proj"] or not out["ip_adapter"]:
        raise CheckpointError(f"'{path}' is not an IP-Adapter file: it needs 'image_proj.*' and 'ip_adapter.*' weights")
    return out


def _image_encoder_source(engine, entry):
    from ..registry import Source

    spec = entry.option("image_encoder")  # parsed to sources by the registry
    if spec is not None:
        return spec[0]
    # diffusers' convention: an `image_encoder` folder beside the weights
    src = entry.sources[0]
    if src.path is not None:
        folder = src.path.parent if src.path.is_file() or src.path.suffix else src.path
        return Source(path=folder / "image_encoder")
    sub = f"{src.subfolder}/image_encoder" if src.subfolder else "image_encoder"
    return Source(repo=src.repo, subfolder=sub, revision=src.revision)


def _load_image_encoder(engine, entry):
    from transformers import CLIPVisionModelWithProjection

    src = _image_encoder_source(engine, entry)
    location = str(src.path) if src.path is not None else src.repo
    key = ("ip_image_encoder", location, src.subfolder, src.revision)

    def build():
        if src.path is not None and not src.path.exists():
            raise ModelUnavailableError(f"{entry.label}: image encoder folder '{src.path}' does not exist")
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(
                location, subfolder=src.subfolder or "", revision=src.revision,
                local_files_only=not engine.allow_download or hub_offline(),
            )
        except (OSError, EnvironmentError, ValueError) as e:
            raise ModelUnavailableError(
                f"{entry.label}: its CLIP image encoder ('{location}'{' ' + src.subfolder if src.subfolder else ''}) is not "
                f"available ({str(e).splitlines()[0][:160]}). Download it where the Hugging Face Hub is reachable, "
                "give an `image_encoder:` source in checkpoints.yaml, or switch the IP-Adapter column off."
            ) from None
        return _place(engine, model)

    return engine.cached(key, build)


def load_ip_adapter(engine, name: str, base) -> LoadedIPAdapter:
    """An IP-Adapter's attention processors (for ``base``'s UNet layout), image projection and
    CLIP image encoder, cached by the engine. The UNet itself is not modified here."""
    entry = engine.registry.entry("ip_adapters", name)
    unet = base.unet

    def build():
        path = engine.registry.resolve_file(entry.sources, entry.label, engine.allow_download)
        sd = _read_ip_adapter_file(Path(path))
        if "proj.weight" not in sd["image_proj"]:
            raise CheckpointError(
                f"{entry.label}: only the plain IP-Adapter (image_proj.proj, 4 image tokens, e.g. ip-adapter_sd15) "
                "is supported in the comparison"
            )
        cross = unet.config.cross_attention_dim
        proj_out = sd["image_proj"]["proj.weight"].shape[0]
        if proj_out % 4 or proj_out // 4 != cross:
            raise CheckpointError(
                f"{entry.label}: made for {proj_out // 4}-wide cross-attention, but base model '{base.name}' uses {cross}"
            )
        try:
            processors = unet._convert_ip_adapter_attn_to_diffusers([sd], low_cpu_mem_usage=False)
            image_proj = unet._convert_ip_adapter_image_proj_to_diffusers(sd["image_proj"], low_cpu_mem_usage=False)
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{entry.label}: weights do not match base model '{base.name}' ({str(e).splitlines()[0][:160]})") from None
        processors = {k: (_place(engine, p) if isinstance(p, torch.nn.Module) else p) for k, p in processors.items()}
        return LoadedIPAdapter(name, processors, _place(engine, image_proj), None, image_proj.num_image_text_embeds)

    loaded = engine.cached(("ip_adapter", name, base.name), build)
    encoder = _load_image_encoder(engine, entry)
    return replace(loaded, image_encoder=encoder)


def clip_image_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """CLIP image preprocessing: shortest side to ``size`` (bicubic), centre crop, normalise."""
    w, h = image.size
    s = size / min(w, h)
    img = image.convert("RGB").resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = image_to_tensor(img)
    mean = torch.tensor(CLIP_IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class _WithoutImageTokens:
    """A ControlNet fed the text tokens only (the IP-Adapter's image tokens at the end of the
    context are cut off), as diffusers' ControlNet pipelines do. Holds the shared ControlNet
    itself, no copy."""

    def __init__(self, controlnet, num_tokens: int):
        self.controlnet = controlnet
        self.num_tokens = num_tokens

    def __call__(self, x, t, *, encoder_hidden_states, **kwargs):
        return self.controlnet(x, t, encoder_hidden_states=encoder_hidden_states[:, : -self.num_tokens], **kwargs)


def _generate_with_processors(engine, base, processors, cond, uncond, *, width, height, seed, steps, guidance,
                              scheduler, controls, progress):
    """``engine.generate`` with ``processors`` installed on the shared UNet for this run only
    (the engine swaps them under its run lock and restores the UNet's own afterwards)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*passed a tensor as `encoder_hidden_states`.*")
        gen = engine.generate(
            base.name, cond, uncond, width=width, height=height, seed=seed, num_images=1, steps=steps,
            guidance=guidance, scheduler=scheduler, controls=controls, progress=progress,
            attn_processors=processors,
        )
    return gen.images, gen.timings


# ----------------------------------------------------------------------------- the task
def compare(
    engine,
    reference,
    structure,
    controlnet: Optional[str] = None,
    *,
    mode: str = MODE_AS_IS,
    preprocessor: Optional[str] = None,
    settings: Optional[CompareSettings] = None,
    progress: ColumnProgress = None,
) -> CompareResult:
    """Run the switched-on methods with the same inputs and settings.

    reference: the content/style image. structure: the structure ControlNet's image, a picture
    (``mode="preprocess"``, detector ``preprocessor`` or the entry's default) or a ready map
    (``mode="use as-is"``). controlnet: structure ControlNet name (None: the profile default).
    """
    from ..engine import validate_settings
    from ..sampling import ControlInput
    from . import control
    from ..text import check_prompt

    s = resolve_defaults(engine, settings or CompareSettings())
    methods = normalise_methods(s.methods)
    # ---- cheap checks first: nothing is loaded before every input is known to be usable
    steps, guidance, _, seed = validate_settings(s.steps, s.guidance, 1, s.seed, s.scheduler)
    engine.registry.entry("seecoders", s.seecoder)
    engine.registry.entry("base_models", s.base_model)
    controlnet = controlnet or engine.defaults.get("controlnet")
    if not controlnet:
        raise ConfigError("no ControlNet is configured in checkpoints.yaml (controlnets:)")
    engine.registry.entry("controlnets", controlnet)
    control_scale = _number(s.control_scale, "structure ControlNet scale", 0.0, control.MAX_SCALE)
    content_name = content_scale = None
    if DUAL_CONTROLNET in methods:
        content_name = content_controlnet_name(engine, s.content_controlnet)
        content_scale = _number(s.content_scale, "content ControlNet scale", 0.0, MAX_CONTENT_SCALE)
    ip_name = ip_scale = None
    if IP_ADAPTER in methods:
        names = ip_adapter_names(engine)
        if not names:
            raise InvalidSettingError(
                "the IP-Adapter column needs an IP-Adapter under `ip_adapters:` in checkpoints.yaml and none is "
                "configured: switch that column off, or add one (e.g. h94/IP-Adapter models/ip-adapter_sd15.safetensors)"
            )
        ip_name = s.ip_adapter or names[0]
        engine.registry.entry("ip_adapters", ip_name)
        ip_scale = _number(s.ip_adapter_scale, "IP-Adapter scale", 0.0, MAX_IP_SCALE)
    prompt = check_prompt(s.prompt, "prompt")
    negative = check_prompt(s.negative_prompt, "negative prompt")
    if reference is None:
        raise InputImageError("no reference image given: please upload the image whose content every column should use")
    if structure is None:
        raise InputImageError(
            "no structure image given: upload a picture (preprocess) or a ready control map (use as-is) for the "
            f"structure ControlNet '{controlnet}'"
        )
    mode = control.normalise_mode(mode)
    ref = prepare_reference(reference)
    structure_img = load_image(structure, "structure image")
    if s.width is None or s.height is None:
        width, height = follow_size(structure_img)
        width, height = s.width or width, s.height or height
    else:
        width, height = s.width, s.height
    width, height = snap_size(width, height)
    spec = ControlSpec(controlnet, structure_img, mode, preprocessor, control_scale)

    # ---- shared by every column: base model (UNet, VAE), structure ControlNet and its map
    t0 = time.perf_counter()
    structure_map = _structure_map(engine, spec, (width, height), s.annotator_dir)
    base = engine.base_model(s.base_model)
    structure_cn = engine.controlnet(controlnet)
    structure_hint = image_to_tensor(structure_map)
    shared_s = time.perf_counter() - t0

    def column_progress(k: int):
        if progress is None:
            return None
        return lambda i, n: progress(k * n + i, len(methods) * n)

    sampler = dict(width=width, height=height, seed=seed, steps=steps, guidance=guidance, scheduler=s.scheduler)
    columns: Dict[str, ColumnResult] = {}
    for k, method in enumerate(methods):
        record: Dict[str, Any] = {}
        timings: Dict[str, float] = {}
        extras: List[Image.Image] = []
        with _metered(engine, record):
            if method == PROMPT_FREE:
                # Exactly the Reference+ControlNet task, on the structure map made above.
                res = reference_control(
                    engine, ref,
                    [ControlSpec(controlnet, structure_map, MODE_AS_IS, None, control_scale, check_map=False)],
                    ControlSettings(base_model=s.base_model, seecoder=s.seecoder, guidance=guidance, steps=steps,
                                    width=width, height=height, seed=seed, num_images=1, scheduler=s.scheduler,
                                    annotator_dir=s.annotator_dir),
                    progress=column_progress(k),
                )
                image = res.images[0]
                timings.update({k2: v for k2, v in res.info.get("timings", {}).items() if k2 != "preprocess"})
                col = ColumnResult(method, METHOD_LABELS[method], image,
                                   f"SeeCoder embedding of the reference image ({s.seecoder})",
                                   [f"structure: {controlnet}"], text_encoder=False, image_encoder=False)
            else:
                from ..text import text_encoder

                t1 = time.perf_counter()
                te = text_encoder(engine, s.base_model)
                timings["load"] = time.perf_counter() - t1
                t1 = time.perf_counter()
                cond, uncond = te.encode(prompt), te.encode(negative)
                timings["text"] = time.perf_counter() - t1
                prompt_note = f"prompt '{prompt}'" if prompt else "empty prompt"
                if method == DUAL_CONTROLNET:
                    t1 = time.perf_counter()
                    content_cn = engine.controlnet(content_name)
                    timings["load"] += time.perf_counter() - t1
                    t1 = time.perf_counter()
                    content_map = _content_map(engine, ref, content_name, (width, height), seed, s.annotator_dir)
                    timings["preprocess"] = time.perf_counter() - t1
                    extras.append(content_map)
                    gen = engine.generate(
                        s.base_model, cond, uncond, **sampler, num_images=1, progress=column_progress(k),
                        controls=[ControlInput(content_cn, image_to_tensor(content_map), content_scale),
                                  ControlInput(structure_cn, structure_hint, control_scale)],
                    )
                    image = gen.images[0]
                    timings.update(gen.timings)
                    col = ColumnResult(method, METHOD_LABELS[method], image,
                                       f"CLIP text ({prompt_note}) + shuffled reference through the content ControlNet",
                                       [f"content: {content_name}", f"structure: {controlnet}"],
                                       text_encoder=True, image_encoder=False)
                else:
                    t1 = time.perf_counter()
                    ip = load_ip_adapter(engine, ip_name, base)
                    timings["load"] += time.perf_counter() - t1
                    t1 = time.perf_counter()
                    enc = ip.image_encoder
                    with torch.inference_mode():
                        pixels = clip_image_tensor(ref, int(enc.config.image_size)).to(engine.device, enc.dtype)
                        embeds = enc(pixel_values=pixels).image_embeds
                        ip_cond = ip.image_proj(embeds)
                        ip_uncond = ip.image_proj(torch.zeros_like(embeds))
                        cond_ip = torch.cat([cond.to(ip_cond.dtype), ip_cond], dim=1)
                        uncond_ip = torch.cat([uncond.to(ip_uncond.dtype), ip_uncond], dim=1)
                    for p in ip.processors.values():
                        if hasattr(p, "to_k_ip"):
                            p.scale = [ip_scale]
                    timings["image_encode"] = time.perf_counter() - t1
                    images, gen_timings = _generate_with_processors(
                        engine, base, ip.processors, cond_ip, uncond_ip, **sampler, progress=column_progress(k),
                        controls=[ControlInput(_WithoutImageTokens(structure_cn, ip.num_tokens), structure_hint, control_scale)],
                    )
                    image = images[0]
                    timings.update(gen_timings)
                    col = ColumnResult(method, METHOD_LABELS[method], image,
                                       f"CLIP text ({prompt_note}) + {ip.num_tokens} IP-Adapter image tokens ({ip_name}, scale {ip_scale:g})",
                                       [f"structure: {controlnet}"], text_encoder=True, image_encoder=True)
        col.timings = {"wall": record["wall"], **timings}
        col.peak_memory = record.get("peak_memory")
        col.extras = extras
        columns[method] = col

    images = [c.image for c in columns.values()]
    info = {
        "seed": seed, "seeds": [seed], "width": width, "height": height, "steps": steps, "guidance": guidance,
        "scheduler": s.scheduler, "base_model": s.base_model, "seecoder": s.seecoder,
        "controlnet": controlnet, "mode": mode, "preprocessor": preprocessor, "control_scale": control_scale,
        "content_controlnet": content_name, "ip_adapter": ip_name, "prompt": prompt, "negative_prompt": negative,
        "methods": list(methods), "device": str(engine.device),
        "timings": {"shared": shared_s, **{m: c.timings["wall"] for m, c in columns.items()}},
    }
    result = CompareResult(images, [structure_map], info, columns=columns, side_by_side=side_by_side(images))
    return result


__all__ = [
    "METHODS", "METHOD_LABELS", "PROMPT_FREE", "DUAL_CONTROLNET", "IP_ADAPTER",
    "CompareSettings", "CompareResult", "ColumnResult", "compare", "available_methods", "differences",
    "ip_adapter_names", "load_ip_adapter", "normalise_methods",
]
