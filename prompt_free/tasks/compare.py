"""Dual-ControlNet comparison: Prompt-Free side by side with the alternatives, in one run.

Every column gets the same reference image, structure image, structure ControlNet, base
model, seed, size, steps, guidance and sampler; only the way the reference's content reaches
the UNet differs:

1. ``prompt_free``: SeeCoder embedding of the reference (the paper's method), structure
   ControlNet: the conditioning of the Reference+ControlNet task, same picture.
2. ``dual_controlnet``: the CLIP text encoder with an optional prompt (empty by default) and
   negative prompt (CFG: unconditional = negative prompt), plus a *content* ControlNet
   (``defaults.content_controlnet``, shuffle) fed the shuffled reference, plus the same
   structure ControlNet.
3. ``ip_adapter`` (only when an ``ip_adapters:`` entry is configured): CLIP text as in 2 plus
   IP-Adapter image tokens (diffusers' IP-Adapter attention processors and image projection,
   CLIP image encoder), plus the structure ControlNet.
4. ``prompt_free_text`` (optional, needs a prompt): column 1 with the prompt's CLIP tokens
   concatenated before the SeeCoder tokens (``tasks.text_image``, mode ``concat``, weight
   ``prompt_weight``): the Reference + ControlNet task with that prompt, same picture. Its
   unconditional text part is the empty prompt, as in that task (the negative prompt belongs
   to the text baselines).

The reference's strength applies to the Prompt-Free columns (1 and 4); both are built by the
reference builder (``tasks.reference``), as in the Reference + ControlNet task.

Each column is a small strategy that builds a ``Conditioning``; every column then runs
through the same ``Engine.generate`` call. The columns share the base UNet, the VAE and the
structure ControlNet (the engine's objects; nothing is copied). The text encoder, the content ControlNet and the IP-Adapter parts load
only when a column that needs them runs, through the engine's cache. A switched-off column
does no work at all. Each column reports its wall time and, on CUDA, its peak GPU memory.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .. import previews
from .. import settings as limits
from ..conditioning import AttentionProcessors, Conditioning
from ..errors import ConfigError, InputImageError, InvalidSettingError
from ..images import image_to_tensor, prepare_reference, side_by_side
from ..ip_adapter import TextTokensOnly, image_tokens, load_ip_adapter
from ..sampling import ControlInput, Sampler, Start
from ..blocks import ALL
from ..text import check_prompt, text_encoder
from .common import TaskResult, begin, check_work, holds_models, lora_info, sampler_for, timed
from .reference import CONCAT, ReferenceOptions, build
from .start import check_steps, start_from, start_info, wanted
from .control import ControlSettings
from .controls import (
    MODE_AS_IS,
    ControlSpec,
    check_maps,
    check_specs,
    control_map,
    default_preprocessor,
    normalise_mode,
    open_images,
    output_size,
    run_detector,
)

PROMPT_FREE = "prompt_free"
DUAL_CONTROLNET = "dual_controlnet"
IP_ADAPTER = "ip_adapter"
PROMPT_FREE_TEXT = "prompt_free_text"
METHODS = (PROMPT_FREE, DUAL_CONTROLNET, IP_ADAPTER)  # the comparison's own columns
OPTIONAL_METHODS = (PROMPT_FREE_TEXT,)  # extra columns, off unless asked for (they need a prompt)
ALL_METHODS = METHODS + OPTIONAL_METHODS  # column order
COLUMN_CONTROLNETS = {PROMPT_FREE: 1, DUAL_CONTROLNET: 2, IP_ADAPTER: 1, PROMPT_FREE_TEXT: 1}  # for the work limit
METHOD_LABELS = {
    PROMPT_FREE: "Prompt-Free (SeeCoder)",
    DUAL_CONTROLNET: "Dual-ControlNet (shuffle + text)",
    IP_ADAPTER: "IP-Adapter (+ text)",
    PROMPT_FREE_TEXT: "Prompt-Free + text (concat)",
}

ColumnProgress = Optional[Callable[[int, int], None]]
_NUMPY_RNG_LOCK = threading.Lock()


@dataclass
class CompareSettings(ControlSettings):
    """Settings shared by every column, plus the baselines' own.

    width/height None: follow the structure image (as the Reference+ControlNet task).
    ``num_images`` is ignored: each column makes one image. ``prompt`` feeds the text columns
    (2, 3 and 4); ``prompt_weight`` is column 4's text weight; ``prompt_mode`` and ``blocks``
    must stay "concat" and "all" (column 4 is the concat recipe on every block).
    """

    methods: Tuple[str, ...] = (PROMPT_FREE, DUAL_CONTROLNET)
    control_scale: float = 1.0  # structure ControlNet, every column
    content_controlnet: Optional[str] = None  # None: defaults.content_controlnet
    content_scale: float = 1.0
    prompt: str = ""  # text columns only
    negative_prompt: str = ""
    ip_adapter: Optional[str] = None  # None: the first configured
    ip_adapter_scale: float = 1.0


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
    """``images``: one per switched-on column, in ALL_METHODS order; ``extras``: the structure map."""

    columns: Dict[str, ColumnResult] = field(default_factory=dict)
    side_by_side: Optional[Image.Image] = None


# ----------------------------------------------------------------------------- helpers (also for the UI)
def ip_adapter_names(engine) -> List[str]:
    return engine.registry.names("ip_adapters")


def available_methods(engine) -> List[str]:
    """The comparison methods this profile can run (IP-Adapter only with an ``ip_adapters`` entry); the
    optional ``PROMPT_FREE_TEXT`` column runs on every profile."""
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
            "image encoder": "yes (CLIP vision)" if c.image_encoder else ("SeeCoder" if c.method in (PROMPT_FREE, PROMPT_FREE_TEXT) else "no"),
        })
    return rows


def normalise_methods(methods) -> Tuple[str, ...]:
    if isinstance(methods, str):
        methods = [methods]
    out = []
    for m in methods or ():
        key = str(m).strip().lower().replace("-", "_").replace(" ", "_")
        key = {"prompt_free_diffusion": PROMPT_FREE, "pfd": PROMPT_FREE, "dual": DUAL_CONTROLNET,
               "ip": IP_ADAPTER, "ipadapter": IP_ADAPTER, "prompt_free_+_text": PROMPT_FREE_TEXT,
               "prompt_free_+_text_(concat)": PROMPT_FREE_TEXT}.get(key, key)
        if key not in ALL_METHODS:
            raise InvalidSettingError(f"unknown comparison method {m!r}; choose from: {', '.join(ALL_METHODS)}")
        if key not in out:
            out.append(key)
    if not out:
        raise InvalidSettingError("all comparison columns are switched off: switch on at least one method")
    return tuple(m for m in ALL_METHODS if m in out)


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


# ----------------------------------------------------------------------------- the columns
@dataclass
class _Run:
    """What every column shares: checked settings, the reference, the structure ControlNet."""

    engine: Any
    s: CompareSettings
    sampler: Sampler
    reference: Image.Image
    controlnet: str
    structure: ControlInput
    prompt: str
    negative: str
    content_controlnet: Optional[str]
    ip_adapter: Optional[str]
    options: ReferenceOptions  # the reference's: column 4's as they are, column 1's without the text
    start: Optional[Start] = None  # every column starts from the same image (denoise_strength < 1)

    def text(self, timings: Dict[str, float]) -> Tuple[torch.Tensor, torch.Tensor]:
        """CLIP text contexts of the prompt and the negative prompt (the text columns)."""
        with timed(timings, "load"):
            te = text_encoder(self.engine, self.s.base_model)
        with timed(timings, "text"):
            return te.encode(self.prompt), te.encode(self.negative)

    @property
    def prompt_note(self) -> str:
        return f"prompt '{self.prompt}'" if self.prompt else "empty prompt"

    @property
    def seecoder_note(self) -> str:
        return ", ".join([self.s.seecoder, *self.options.notes()])


@dataclass
class _Column:
    conditioning: Conditioning
    described: str  # what carries the reference's content
    controlnets: List[str]
    text_encoder: bool = False
    image_encoder: bool = False
    extras: List[Image.Image] = field(default_factory=list)


def _prompt_free(run: _Run, timings: Dict[str, float]) -> _Column:
    built = build(run.engine, run.s, [run.reference], run.options.image_only(), controls=[run.structure],
                  timings=timings, size=(run.sampler.width, run.sampler.height))
    return _Column(built.conditioning, f"SeeCoder embedding of the reference image ({run.seecoder_note})",
                   [f"structure: {run.controlnet}"])


def _prompt_free_text(run: _Run, timings: Dict[str, float]) -> _Column:
    built = build(run.engine, run.s, [run.reference], run.options, controls=[run.structure], timings=timings,
                  size=(run.sampler.width, run.sampler.height))
    weight = f", weight {run.options.weight:g}" if run.options.weight != 1.0 else ""
    weight += f", balance {run.options.balance:g}" if run.options.balance is not None else ""
    return _Column(built.conditioning,
                   f"CLIP text ({run.prompt_note}{weight}) + SeeCoder embedding ({run.seecoder_note}), "
                   "tokens concatenated", [f"structure: {run.controlnet}"], text_encoder=True)


def _dual_controlnet(run: _Run, timings: Dict[str, float]) -> _Column:
    cond, uncond = run.text(timings)
    name = run.content_controlnet
    with timed(timings, "load"):
        content_cn = run.engine.controlnet(name)
    with timed(timings, "preprocess"):
        content = _content_map(run.engine, run.reference, name, (run.sampler.width, run.sampler.height),
                               run.sampler.seed, run.s.annotator_dir)
    controls = [ControlInput(content_cn, image_to_tensor(content), float(run.s.content_scale)), run.structure]
    return _Column(Conditioning(cond, uncond, controls),
                   f"CLIP text ({run.prompt_note}) + shuffled reference through the content ControlNet",
                   [f"content: {name}", f"structure: {run.controlnet}"], text_encoder=True, extras=[content])


def _ip_adapter(run: _Run, timings: Dict[str, float]) -> _Column:
    cond, uncond = run.text(timings)
    with timed(timings, "load"):
        ip = load_ip_adapter(run.engine, run.ip_adapter, run.engine.base_model(run.s.base_model))
    with timed(timings, "image_encode"):
        cond_ip, uncond_ip = image_tokens(run.engine, ip, run.reference, cond, uncond)
    # The structure ControlNet sees the text tokens only, as diffusers' ControlNet pipelines do.
    structure = ControlInput(TextTokensOnly(run.structure.controlnet, ip.num_tokens), run.structure.hint,
                             run.structure.scale)
    scale = float(run.s.ip_adapter_scale)
    return _Column(Conditioning(cond_ip, uncond_ip, [structure], unet_patch=AttentionProcessors(ip.processors, scale)),
                   f"CLIP text ({run.prompt_note}) + {ip.num_tokens} IP-Adapter image tokens ({run.ip_adapter}, "
                   f"scale {scale:g})", [f"structure: {run.controlnet}"], text_encoder=True, image_encoder=True)


STRATEGIES: Dict[str, Callable[[_Run, Dict[str, float]], _Column]] = {
    PROMPT_FREE: _prompt_free, DUAL_CONTROLNET: _dual_controlnet, IP_ADAPTER: _ip_adapter,
    PROMPT_FREE_TEXT: _prompt_free_text,
}


def _content_map(engine, reference: Image.Image, controlnet: str, size: Tuple[int, int], seed: int, annotator_dir) -> Image.Image:
    """The content ControlNet's hint: the reference at the output size, through the entry's
    preprocessor (shuffle), with numpy's RNG seeded from the generation seed."""
    preprocessor = default_preprocessor(engine, controlnet)
    resized = reference if reference.size == size else reference.resize(size, Image.BICUBIC)
    if preprocessor == "none":
        return resized
    with _numpy_seeded(seed):
        return run_detector(engine, preprocessor, resized, size, annotator_dir)


# ----------------------------------------------------------------------------- the task
@dataclass
class _Checked:
    content: Optional[str] = None  # content ControlNet (Dual-ControlNet column)
    ip: Optional[str] = None  # IP-Adapter (IP-Adapter column)
    prompt: str = ""
    negative: str = ""
    options: Optional[ReferenceOptions] = None  # the Prompt-Free columns'


def _check(engine, s: CompareSettings, methods) -> _Checked:
    """Every name and range of the run, before anything is loaded or opened."""
    out = _Checked()
    limits.CONTROL_SCALE.check(s.control_scale, "structure ControlNet scale")
    if DUAL_CONTROLNET in methods:
        out.content = content_controlnet_name(engine, s.content_controlnet)
        limits.CONTENT_SCALE.check(s.content_scale)
    if IP_ADAPTER in methods:
        names = ip_adapter_names(engine)
        if not names:
            raise InvalidSettingError(
                "the IP-Adapter column needs an IP-Adapter under `ip_adapters:` in checkpoints.yaml and none is "
                "configured: switch that column off, or add one (e.g. h94/IP-Adapter models/ip-adapter_sd15.safetensors)"
            )
        out.ip = s.ip_adapter or names[0]
        engine.registry.entry("ip_adapters", out.ip)
        limits.IP_ADAPTER_SCALE.check(s.ip_adapter_scale)
    out.prompt = check_prompt(s.prompt, "prompt")
    out.negative = check_prompt(s.negative_prompt, "negative prompt")
    out.options = ReferenceOptions.of(s)
    if out.options.mode != CONCAT or out.options.blocks != ALL:
        raise InvalidSettingError("the comparison's Prompt-Free + text column is the concat recipe on all blocks: "
                                  "leave prompt_mode 'concat' and blocks 'all' (use the Image Variation or "
                                  "Reference + ControlNet tab for the other modes)")
    if PROMPT_FREE_TEXT in methods:
        if not out.prompt.strip():
            raise InvalidSettingError(f"the '{METHOD_LABELS[PROMPT_FREE_TEXT]}' column needs a prompt: enter one, "
                                      "or switch that column off")
    elif out.options.balance is not None:  # the balance acts on that column only
        raise InvalidSettingError(f"balance applies to the '{METHOD_LABELS[PROMPT_FREE_TEXT]}' column: switch it on, "
                                  "or leave balance empty")
    return out


@holds_models
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
    init_image=None,
) -> CompareResult:
    """Run the switched-on methods with the same inputs and settings.

    reference: the content/style image. structure: the structure ControlNet's image, a picture
    (``mode="preprocess"``, detector ``preprocessor`` or the entry's default) or a ready map
    (``mode="use as-is"``). controlnet: structure ControlNet name (None: the profile default).
    init_image: what every column starts from at a ``denoise_strength`` below 1 (default the reference).
    """
    s = begin(engine, settings or CompareSettings())
    methods = normalise_methods(s.methods)
    controlnet = controlnet or engine.defaults.get("controlnet")
    if not controlnet:
        raise ConfigError("no ControlNet is configured in checkpoints.yaml (controlnets:)")
    engine.registry.entry("controlnets", controlnet)
    checked = _check(engine, s, methods)
    if reference is None:
        raise InputImageError("no reference image given: please upload the image whose content every column should use")
    if structure is None:
        raise InputImageError(
            "no structure image given: upload a picture (preprocess) or a ready control map (use as-is) for the "
            f"structure ControlNet '{controlnet}'"
        )
    mode = normalise_mode(mode)
    ref = prepare_reference(reference)
    (p,) = check_specs(engine, [ControlSpec(controlnet, structure, mode, preprocessor, s.control_scale)],
                       what="structure image")
    open_images([p])
    width, height, _ = output_size(s.width, s.height, p.image)
    sampler = sampler_for(s, width, height, num_images=1)
    check_work([(sampler, COLUMN_CONTROLNETS[m]) for m in methods])
    check_steps(s, sampler)

    # ---- shared by every column: base model (UNet, VAE), structure ControlNet and its map
    t0 = time.perf_counter()
    check_maps([p], (sampler.width, sampler.height))
    structure_map = control_map(engine, p, (sampler.width, sampler.height), s.annotator_dir)
    engine.base_model(s.base_model)
    structure_in = ControlInput(engine.controlnet(controlnet), image_to_tensor(structure_map), p.spec.scale)
    if PROMPT_FREE_TEXT in methods:  # a prompt too long for CLIP is refused before any column runs
        text_encoder(engine, s.base_model).check_length(checked.prompt.strip())
    start = start_from(engine, s, sampler, init_image if init_image is not None else reference)
    shared_s = time.perf_counter() - t0
    run = _Run(engine, s, sampler, ref, controlnet, structure_in, checked.prompt, checked.negative,
               checked.content, checked.ip, checked.options, start)
    columns = {m: _run_column(run, m, k, len(methods), progress) for k, m in enumerate(methods)}

    images = [c.image for c in columns.values()]
    info = {
        "seed": sampler.seed, "seeds": [sampler.seed], "width": sampler.width, "height": sampler.height,
        "steps": sampler.steps, "guidance": sampler.guidance, "scheduler": sampler.scheduler,
        "base_model": s.base_model, "seecoder": s.seecoder, "controlnet": controlnet, "mode": mode,
        "preprocessor": preprocessor, "control_scale": p.spec.scale, "content_controlnet": checked.content,
        "ip_adapter": checked.ip, "prompt": checked.prompt, "negative_prompt": checked.negative,
        **checked.options.image_only().info(),
        **({"denoise_strength": s.denoise_strength, **start_info(s, init_image)} if wanted(s) else {}),
        "methods": list(methods), "device": str(engine.device),
        "timings": {"shared": shared_s, **{m: c.timings["wall"] for m, c in columns.items()}},
        **lora_info(sampler),
    }
    return CompareResult(images, [structure_map], info, columns=columns, side_by_side=side_by_side(images))


def _run_column(run: _Run, method: str, k: int, n_columns: int, progress: ColumnProgress) -> ColumnResult:
    """One column: its strategy's conditioning through the engine's one generate call."""
    column_progress = None
    if progress is not None:
        column_progress = lambda i, n: progress(k * n + i, n_columns * n)  # noqa: E731
    record: Dict[str, Any] = {}
    timings: Dict[str, float] = {}
    with _metered(run.engine, record):
        col = STRATEGIES[method](run, timings)
        gen = run.engine.generate(run.s.base_model, col.conditioning, run.sampler, progress=column_progress,
                                  preview=previews.labelled(previews.current(), method), start=run.start)  # the column's previews
    timings.update(gen.timings)
    return ColumnResult(method, METHOD_LABELS[method], gen.images[0], col.described, col.controlnets,
                        text_encoder=col.text_encoder, image_encoder=col.image_encoder,
                        timings={"wall": record["wall"], **timings}, peak_memory=record.get("peak_memory"),
                        extras=col.extras)


__all__ = [
    "ALL_METHODS", "METHODS", "METHOD_LABELS", "OPTIONAL_METHODS", "PROMPT_FREE", "DUAL_CONTROLNET", "IP_ADAPTER", "PROMPT_FREE_TEXT", "STRATEGIES",
    "CompareSettings", "CompareResult", "ColumnResult", "compare", "available_methods", "differences",
    "ip_adapter_names", "normalise_methods",
]
