"""Every limit and every environment variable of the project, in one place.

Limits are ``Range`` objects: the library checks values against them (``Range.check``) and the
UI takes its slider bounds from them, so a limit is changed here and nowhere else. Environment
variables are read by the small functions below, each variable by exactly one of them, at
call time (so a test or a launcher may set them after import).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Optional

from .errors import InvalidSettingError

_TRUE = {"1", "true", "yes", "on"}


# ----------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class Range:
    """An allowed interval [lo, hi] with the default value and, for the UI, the slider step
    and the slider's own upper end when it shows less than the library accepts."""

    what: str
    lo: float
    hi: float
    default: float
    step: float = 1
    integer: bool = False
    ui_hi: Optional[float] = None

    @property
    def slider_hi(self) -> float:
        return self.hi if self.ui_hi is None else self.ui_hi

    def check(self, value, what: Optional[str] = None):
        """``value`` as an int/float inside the range, else ``InvalidSettingError`` naming it."""
        what = what or self.what
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise InvalidSettingError(f"{what} must be a number, got {value!r}") from None
        if self.integer:
            if math.isnan(f) or math.isinf(f) or f != int(f):
                raise InvalidSettingError(f"{what} must be a whole number, got {value!r}")
            f = int(f)
        if not self.lo <= f <= self.hi:  # also refuses NaN
            raise InvalidSettingError(f"{what} must be between {_num(self.lo)} and {_num(self.hi)}, got {value!r}")
        return f


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# Sampler (every task). Guidance: the paper uses 2.0; the slider stops at 10.
STEPS = Range("steps", 1, 150, 50, integer=True)
GUIDANCE = Range("guidance", 0.0, 30.0, 2.0, step=0.05, ui_hi=10.0)
# The LCM and TCD samplers: at most their 50 distillation timesteps (default: LCM-LoRA's 4).
FEW_STEPS = Range("steps of the LCM and TCD samplers", 1, 50, 4, integer=True)
NUM_IMAGES = Range("number of images", 1, 8, 1, integer=True)
SEED = Range("seed", 0, 2**31 - 1, 20, integer=True)
# Output size: floored to multiples of SIZE_MULTIPLE (official).
SIZE = Range("size", 64, 2048, 512, step=64, integer=True, ui_hi=1536)
SIZE_MULTIPLE = 64
# Quick mode (approximate, N > 1): the UNet's deep features are computed every
# N steps and reused in between. 1 is off (today's picture, bit for bit).
DEEP_CACHE = Range("deep cache interval", 1, 10, 1, integer=True)
# "Size follows the control image" (official): each side floored to 64 and clamped here.
FOLLOW_SIZE_LO, FOLLOW_SIZE_HI = 512, 1536

# The reference's pull (every tab): context = uncond + s * (cond - uncond), applied to the
# conditioning itself, before and apart from guidance. 1 is today's picture (no arithmetic).
REFERENCE_STRENGTH = Range("reference strength", 0.0, 2.0, 1.0, step=0.05)
# Text + image: the text part = empty + w * (prompt - empty) in CLIP embedding space.
PROMPT_WEIGHT = Range("text weight", 0.0, 2.0, 1.0, step=0.05)
# img2img: the part of the schedule run from the image's noised latents (1: pure noise, today's).
DENOISE_STRENGTH = Range("denoise strength", 0.01, 1.0, 1.0, step=0.01)
# Saved embeddings (prompt_free.embeddings): the largest file read, and the most tokens a context may have.
MAX_EMBEDDING_BYTES = 64 * 1024 * 1024
MAX_EMBEDDING_TOKENS = 148 * 8
# Reference window: the fractions of the run where the reference acts (0 and 1: always).
REFERENCE_START = Range("reference start", 0.0, 1.0, 0.0, step=0.01)
REFERENCE_END = Range("reference end", 0.0, 1.0, 1.0, step=0.01)
# Negative reference (every tab): uncond' = uncond + s * (negative - uncond); 0: no negative.
NEGATIVE_STRENGTH = Range("negative strength", 0.0, 2.0, 1.0, step=0.05)

# ControlNets.
MAX_CONTROLS = 2
CONTROL_SCALE = Range("conditioning scale", 0.0, 2.0, 1.0, step=0.05)
CONTROL_WINDOW = Range("control window", 0.0, 1.0, 0.0, step=0.01)  # start/end as fractions of the steps
MAX_ASPECT_MISMATCH = 2.0  # control image ratio vs output ratio; beyond this we refuse
DETECT_RESOLUTION = Range("detection resolution", 64, 4096, 512, integer=True)

# Multi-Reference: up to MAX_REFERENCES references, each with a weight (0 = left out).
MAX_REFERENCES = 4
REFERENCE_WEIGHT = Range("reference weight", 0.0, 2.0, 1.0, step=0.05)

# LoRAs on the base model (every tab): at most MAX_LORAS per run, each with its own scale.
MAX_LORAS = 2
LORA_SCALE = Range("LoRA scale", -2.0, 2.0, 1.0, step=0.05)

# Comparison baselines.
CONTENT_SCALE = Range("content ControlNet scale", 0.0, 2.0, 1.0, step=0.05)
IP_ADAPTER_SCALE = Range("IP-Adapter scale", 0.0, 2.0, 1.0, step=0.05)
MAX_PROMPT_CHARS = 2000

# Virtual try-on.
TRYON_MAX_SIDE = Range("maximum generation size", 64, 1536, 768, step=64, integer=True)
MASK_PX = Range("mask dilation/feathering (px)", 0, 256, 8, ui_hi=64)  # pixels, rounded

# The app: requests Gradio runs at once. Device work stays serialised by the engine; the others
# load models, decode uploads or wait, so a download never freezes the other tabs.
CONCURRENT_REQUESTS = 8
QUEUE_SIZE = 32  # waiting requests; one more is answered "the queue is full, try again"
MAX_SESSION_REQUESTS = 3  # waiting or running at once per session; more are refused (PFD_MAX_SESSION_REQUESTS)
# Seconds an app request's work before its first step may take (model loading not counted).
PREPARE_LIMIT_S = 300.0

# Work limit per request, in megapixel-steps: width x height / 1e6 x steps x images x
# (1 + ControlNets), summed over a comparison's columns. Checked before any model loads.
# Generous on a local machine (a 1536x1536 image, 50 steps, 8 images, 2 ControlNets is about
# 2,800); strict on a public server (a Space, or app.py --public). Env PFD_MAX_WORK overrides.
MAX_WORK_LOCAL = 10_000
MAX_WORK_PUBLIC = 300

# ZeroGPU (a Hugging Face Space with SPACES_ZERO_GPU set): the GPU time a request asks spaces.GPU
# for, from its work (above): overhead + seconds per megapixel-step, within [MIN, MAX]. An estimate
# for an H200 slice in fp16 (SD-1.5 512x512, 50 steps, one image: about 13 megapixel-steps).
ZEROGPU_OVERHEAD_S = 10
ZEROGPU_S_PER_WORK = 0.25
ZEROGPU_MIN_S, ZEROGPU_MAX_S = 15, 120

# Input images.
MIN_IMAGE_SIDE = 16  # smaller than this is not a picture to take content from
MAX_IMAGE_PIXELS = 50_000_000  # decompression-bomb guard
MAX_REFERENCE_SIDE = 1536  # SeeCoder works at native size; beyond this we downscale (memory)
# ``reference_max_side``: 0 = as given (today's); else the longest side the reference is encoded
# at, at least REFERENCE_MIN_ENCODE_SIDE (two cells of SeeCoder's coarsest level, stride 32).
REFERENCE_MAX_SIDE = Range("reference max side", 0, MAX_REFERENCE_SIDE, 0, step=64, integer=True)
REFERENCE_MIN_ENCODE_SIDE = 64
# The Pillow formats every image input is read as (issue 28): any other file is refused before
# a decoder runs, so no upload reaches Ghostscript (EPS, PostScript, PDF) or the rarely used
# decoders where fuzzers keep finding crashes. Env PFD_IMAGE_FORMATS adds more.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")

# Live previews (``prompt_free.previews``): a picture of the run so far, decoded with the tiny
# autoencoder of the profile's ``previews:`` entry, every PREVIEW_EVERY steps (more often in
# short runs, so the first one comes no later than step PREVIEW_EVERY). Env PFD_PREVIEWS=0 or
# ``app.py --no-previews`` turns them off for the whole server.
PREVIEW_EVERY = 5


def preview_interval(steps: int) -> int:
    """Steps between two previews of a run of ``steps`` steps: PREVIEW_EVERY, or fewer for a short
    run so that it still shows a few (20 steps: every 5; 8 steps: every 2; 3 steps: every step)."""
    return max(1, min(PREVIEW_EVERY, int(steps) // 4))


# Uploads and the app's file cache (see README: "Uploads, limits and privacy").
MAX_UPLOAD_MB = 25  # per file; Gradio refuses a larger upload before it is stored
CACHE_MAX_AGE_S = 3600  # uploads and outputs in Gradio's cache are deleted after this long

# The tiny profile's UI starts smaller so the offline demo answers in seconds on a CPU.
UI_DEFAULTS = {
    "real": dict(size=512, size_min=256, size_max=int(SIZE.slider_hi), steps=50, tryon_max_side=int(TRYON_MAX_SIDE.default)),
    "tiny": dict(size=256, size_min=64, size_max=int(SIZE.slider_hi), steps=20, tryon_max_side=256),
}


# ----------------------------------------------------------------------------- environment
def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def env_auto(name: str) -> str:
    """A switch with an automatic default: "on" (1, true, yes, on), "off" (0, false, no, off) or
    "auto" (unset, empty, auto); anything else is an ``InvalidSettingError`` naming the variable."""
    raw = (os.environ.get(name) or "auto").strip().lower()
    if raw in _TRUE:
        return "on"
    if raw in {"0", "false", "no", "off"}:
        return "off"
    if raw == "auto":
        return "auto"
    raise InvalidSettingError(f"environment variable {name} must be 0, 1 or auto, got {raw!r}")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE``: never ask the Hugging Face Hub, use local files and the cache only."""
    return env_flag("HF_HUB_OFFLINE")


def annotator_dir() -> Optional[str]:
    """``PFD_ANNOTATOR_DIR``: a folder with detector (annotator) weight files."""
    value = os.environ.get("PFD_ANNOTATOR_DIR", "").strip()
    return value or None


def profile() -> str:
    """``PFD_PROFILE``: real | tiny | auto (default)."""
    return (os.environ.get("PFD_PROFILE") or "auto").strip().lower()


def checkpoints_path() -> Optional[str]:
    """``PFD_CHECKPOINTS``: the checkpoints.yaml to use instead of the project's."""
    return os.environ.get("PFD_CHECKPOINTS") or None


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DEPRECATION_WARNED: set = set()


def check_precision(value, what: str = "precision") -> str:
    """``value`` as one of ``PRECISIONS`` (lower case), else ``InvalidSettingError`` naming it."""
    name = str(value).strip().lower()
    if name not in PRECISIONS:
        raise InvalidSettingError(f"{what} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return name


def precision(device_type: str = "cpu") -> str:
    """``PFD_PRECISION``: auto (default), fp32, bf16 or fp16 for the models; auto is fp16 on CUDA, bf16 on a
    CPU with AMX or AVX-512 BF16, fp32 on other CPUs (``prompt_free.precision``). The deprecated ``PFD_DTYPE`` (CUDA only) is
    still read when ``PFD_PRECISION`` is unset, with a warning.

    ``device_type``: the engine's device ("cuda", "cpu"), because ``PFD_DTYPE`` applied on CUDA only."""
    raw = os.environ.get("PFD_PRECISION", "").strip()
    if raw:
        return check_precision(raw, "environment variable PFD_PRECISION")
    old = os.environ.get("PFD_DTYPE", "").strip()
    if old:
        name = check_precision(old, "environment variable PFD_DTYPE")
        if old not in _DEPRECATION_WARNED:  # once per value and process (it is read at start and by each engine)
            _DEPRECATION_WARNED.add(old)
            logging.getLogger(__name__).warning(
                "PFD_DTYPE is deprecated: use PFD_PRECISION=%s (or --precision %s); PFD_DTYPE applies on CUDA only",
                name, name)
        return name if device_type == "cuda" else "auto"
    return "auto"


def threads() -> Optional[int]:
    """``PFD_THREADS``: torch's CPU threads (default: ``OMP_NUM_THREADS`` when set, else the machine's physical
    cores, not its hyperthreads; ``prompt_free.threads``)."""
    value = _env_int("PFD_THREADS", 0)
    if value < 0 or (value == 0 and os.environ.get("PFD_THREADS", "").strip()):
        raise InvalidSettingError(f"environment variable PFD_THREADS must be at least 1, got {value}")
    return value or None


def omp_num_threads() -> Optional[int]:
    """``OMP_NUM_THREADS``: OpenMP's thread count; when set (and ``PFD_THREADS`` is not) torch keeps it."""
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        value = int(raw)
    except ValueError:
        return None  # OpenMP's own syntaxes (lists) are left to OpenMP
    return value if value > 0 else None


CHANNELS_LAST_MODES = ("auto", "on", "off")


def check_channels_last(value, what: str = "channels_last") -> str:
    """``value`` as one of ``CHANNELS_LAST_MODES`` (also 1/0, true/false), else ``InvalidSettingError``."""
    name = str(value).strip().lower()
    name = "on" if name in _TRUE else "off" if name in {"0", "false", "no", "off"} else name
    if name not in CHANNELS_LAST_MODES:
        raise InvalidSettingError(f"{what} must be one of {', '.join(CHANNELS_LAST_MODES)}, got {value!r}")
    return name


def channels_last() -> str:
    """``PFD_CHANNELS_LAST``: auto (default), on or off: the channels_last memory layout of the
    UNet, the ControlNets and the VAE on the CPU; auto's measured rule is in
    ``prompt_free.layout``. (On CUDA the compiled fast path lays models out itself.)"""
    return check_channels_last(os.environ.get("PFD_CHANNELS_LAST") or "auto", "environment variable PFD_CHANNELS_LAST")


FAST_MODES = ("auto", "on", "off")


def fast_mode() -> str:
    """``PFD_FAST``: the fast sampling path (``prompt_free.fast``). ``0``/``off``: the eager loop;
    ``1``/``on``: the exact parts and, on CUDA, channels_last + torch.compile + CUDA graphs; unset/``auto``:
    the exact parts only (bit for bit the eager result on the CPU; compile is not on by default
    until it is measured faster on a GPU: benchmarks/bench_goals.py)."""
    return env_auto("PFD_FAST")


def cuda_graphs() -> str:
    """``PFD_CUDA_GRAPHS``: the guided step as one CUDA graph per shape (``prompt_free.cuda_graphs``).
    ``0``/``off``: never; ``1``/``on``: on CUDA with any fast path; unset/``auto``: with the compile
    path (``PFD_FAST=1`` / ``--fast`` on CUDA)."""
    return env_auto("PFD_CUDA_GRAPHS")


def compile_cache_dir() -> str:
    """``PFD_COMPILE_CACHE``: where torch.compile keeps its compiled kernels across restarts
    (``TORCHINDUCTOR_CACHE_DIR`` when set wins; default ~/.cache/prompt-free-diffusion/inductor)."""
    return (os.environ.get("PFD_COMPILE_CACHE") or os.environ.get("TORCHINDUCTOR_CACHE_DIR")
            or os.path.join(os.path.expanduser("~"), ".cache", "prompt-free-diffusion", "inductor"))


def max_base_models() -> int:
    """``PFD_MAX_BASE_MODELS``: base models kept loaded (LRU), default 2."""
    return _env_int("PFD_MAX_BASE_MODELS", 2)


def memory_budget() -> Optional[str]:
    """``PFD_MEMORY_BUDGET``: the engine's budget for models on the device, e.g. ``8GB`` or bytes."""
    return os.environ.get("PFD_MEMORY_BUDGET", "").strip() or None


def ram_budget() -> Optional[str]:
    """``PFD_RAM_BUDGET``: the host-memory tier for models evicted from a CUDA device."""
    return os.environ.get("PFD_RAM_BUDGET", "").strip() or None


def previews() -> bool:
    """``PFD_PREVIEWS``: live previews while a picture is sampled (default on; ``0`` turns them off for the
    whole server, as ``app.py --no-previews`` does)."""
    raw = os.environ.get("PFD_PREVIEWS", "").strip().lower()
    if not raw or raw in _TRUE:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise InvalidSettingError(f"environment variable PFD_PREVIEWS must be 0 or 1, got {raw!r}")


def public_server() -> bool:
    """Running for the public: on a Hugging Face Space (``SPACE_ID`` set) or ``app.py --public``
    (which sets ``PFD_PUBLIC``). Stricter limits apply."""
    return bool(os.environ.get("SPACE_ID", "").strip()) or env_flag("PFD_PUBLIC")


def zero_gpu() -> bool:
    """``SPACES_ZERO_GPU``: set by Hugging Face on a ZeroGPU Space; generation then runs in
    ``spaces.GPU`` workers (``prompt_free/app/zerogpu.py``)."""
    return env_flag("SPACES_ZERO_GPU")


def world_size() -> int:
    """``WORLD_SIZE``: the number of processes ``accelerate launch`` / torchrun started (default 1);
    ``prompt-free generate --reference-dir`` splits the references across them."""
    return max(1, _env_int("WORLD_SIZE", 1))


def max_work() -> float:
    """``PFD_MAX_WORK``: the work limit per request in megapixel-steps (see ``MAX_WORK_LOCAL``);
    default ``MAX_WORK_PUBLIC`` on a public server, else ``MAX_WORK_LOCAL``."""
    raw = os.environ.get("PFD_MAX_WORK", "").strip()
    if not raw:
        return MAX_WORK_PUBLIC if public_server() else MAX_WORK_LOCAL
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise InvalidSettingError(f"environment variable PFD_MAX_WORK must be a positive number, got {raw!r}")
    return value


def max_session_requests() -> int:
    """``PFD_MAX_SESSION_REQUESTS``: requests one session may have waiting or running at once
    (default ``MAX_SESSION_REQUESTS``; ``ui.session_limit``)."""
    value = _env_int("PFD_MAX_SESSION_REQUESTS", MAX_SESSION_REQUESTS)
    if value < 1:
        raise InvalidSettingError(f"environment variable PFD_MAX_SESSION_REQUESTS must be at least 1, got {value}")
    return value


def prepare_limit() -> Optional[float]:
    """``PFD_PREPARE_LIMIT``: seconds an app request's work before sampling may take (default
    ``PREPARE_LIMIT_S``; 0: no limit). The library and the CLI have none."""
    raw = os.environ.get("PFD_PREPARE_LIMIT", "").strip() or str(PREPARE_LIMIT_S)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0 or math.isinf(value):
        raise InvalidSettingError(f"environment variable PFD_PREPARE_LIMIT must be a number of seconds "
                                  f"(0: no limit), got {raw!r}")
    return value or None


def max_upload_mb() -> float:
    """``PFD_MAX_UPLOAD_MB``: the largest file an upload may be, in MB (default 25)."""
    raw = os.environ.get("PFD_MAX_UPLOAD_MB", "").strip()
    if not raw:
        return float(MAX_UPLOAD_MB)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or math.isinf(value):
        raise InvalidSettingError(f"environment variable PFD_MAX_UPLOAD_MB must be a positive number of MB, got {raw!r}")
    return value


def max_upload_size() -> int:
    """The upload limit in bytes, for ``demo.launch(max_file_size=...)``."""
    return int(max_upload_mb() * 1024 * 1024)


def image_formats() -> tuple:
    """``PFD_IMAGE_FORMATS``: Pillow format names (comma-separated, e.g. ``TGA,PPM``) read in
    addition to PNG, JPEG, MPO, WebP, GIF, BMP and TIFF."""
    raw = os.environ.get("PFD_IMAGE_FORMATS", "")
    extra = [name.strip().upper() for name in raw.split(",") if name.strip()]
    if extra:
        from PIL import Image  # only here: the names are Pillow's

        Image.init()  # every plugin registered, so every name Pillow can read is known
        unknown = [name for name in extra if name not in Image.OPEN]
        if unknown:
            raise InvalidSettingError(f"environment variable PFD_IMAGE_FORMATS names formats Pillow does not read: "
                                      f"{', '.join(unknown)} (it reads {', '.join(sorted(Image.OPEN))})")
    return IMAGE_FORMATS + tuple(dict.fromkeys(n for n in extra if n not in IMAGE_FORMATS))


def cache_max_age() -> int:
    """``PFD_CACHE_MAX_AGE``: seconds after which uploads and outputs are deleted from Gradio's
    cache (default 3600); 0 keeps them until the server stops."""
    value = _env_int("PFD_CACHE_MAX_AGE", CACHE_MAX_AGE_S)
    if value < 0:
        raise InvalidSettingError(f"environment variable PFD_CACHE_MAX_AGE must be 0 or more seconds, got {value}")
    return value


def delete_cache() -> Optional[tuple]:
    """Gradio's ``delete_cache`` (how often to look, the age to delete), from ``cache_max_age``."""
    age = cache_max_age()
    return (max(1, min(age, 600)), age) if age else None


def analytics_enabled() -> bool:
    """``GRADIO_ANALYTICS_ENABLED``: Gradio's usage analytics, off unless set to true."""
    return env_flag("GRADIO_ANALYTICS_ENABLED")


def auth() -> Optional[str]:
    """``PFD_AUTH``: ``user:password`` for the app's login (default: no login)."""
    return os.environ.get("PFD_AUTH", "").strip() or None


def parse_auth(value: Optional[str]) -> Optional[tuple]:
    """``user:password`` -> (user, password); None for no login."""
    if value is None or not str(value).strip():
        return None
    user, sep, password = str(value).strip().partition(":")
    if not sep or not user or not password:
        raise InvalidSettingError("--auth / PFD_AUTH must be user:password (both non-empty)")
    return user, password


def server_host() -> str:
    """``GRADIO_SERVER_NAME``: the address the app serves on (default 127.0.0.1)."""
    return os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")


def server_port() -> int:
    """``GRADIO_SERVER_PORT``: the app's port (default 7860)."""
    return _env_int("GRADIO_SERVER_PORT", 7860)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidSettingError(f"environment variable {name} must be a whole number, got {raw!r}") from None


def check_environment() -> None:
    """Read every limit taken from the environment once, so a malformed value stops the app at
    start with its message instead of failing each request later."""
    max_base_models()
    fast_mode()
    cuda_graphs()
    previews()
    precision()
    channels_last()
    threads()
    max_work()
    max_session_requests()
    prepare_limit()
    max_upload_size()
    image_formats()
    cache_max_age()
    parse_auth(auth())
    server_port()
