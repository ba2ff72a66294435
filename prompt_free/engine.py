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

from . import tiny
from .errors import CheckpointError, InvalidSettingError, ModelUnavailableError
from .conditioning import Conditioning
from .images import image_to_tensor, prepare_reference, tensor_to_images
from . import settings
from .registry import Entry, Registry
from .settings import hub_offline
from .sampling import Sampler, denoise, initial_noise, make_scheduler

log = logging.getLogger(__name__)

TINY_BANNER = (
    "Real model weights were not found locally and could not be downloaded, "
    "so the app runs the tiny random-weight models. Outputs are NOT meaningful pictures. "
    "For real results, run where the Hugging Face Hub is reachable (weights download on first use), "
    "or download the files named in checkpoints.yaml, point `path:` entries at them, and start "
    "with `python app.py --profile real`."
)

TINY_CHOSEN_BANNER = (
    "The app runs the offline tiny profile (small random-weight models, chosen with --profile tiny or "
    "PFD_PROFILE=tiny). Outputs are NOT meaningful pictures. Start with `--profile real` for the real models."
)

@dataclass
class LoadedSeeCoder:
    name: str
    model: torch.nn.Module
    unconditional: torch.Tensor  # (1, 148, C) on the device, model dtype


@dataclass
class BaseModel:
    name: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    inpainting: bool = False

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


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
    if device.type != "cuda":
        return torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}.get(settings.cuda_dtype_name(), torch.float16)


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = max(1, int(size))

    def get_and_touch(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value) -> list:
        self[key] = value
        self.move_to_end(key)
        evicted = []
        while len(self) > self.size:
            evicted.append(self.popitem(last=False))
        return evicted


class Engine:
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
    ):
        self.registry = registry
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.allow_download = allow_download
        self.banner = banner
        self._seecoders: Dict[str, LoadedSeeCoder] = {}
        self._base_models = _LRU(max_base_models)
        self._controlnets = _LRU(max_controlnets)
        self._extras: Dict[Tuple, object] = {}  # detectors, text encoders ... owned here too
        self._encodings = _LRU(8)  # (seecoder, image digest) -> context
        self._load_lock = threading.RLock()
        self._run_lock = threading.RLock()  # device work, one request at a time
        self.load_counts: Counter = Counter()  # (kind, name) -> times loaded from disk/built

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(cls, profile: Optional[str] = None, checkpoints=None, **kwargs) -> "Engine":
        """``profile``: real | tiny | auto (default; env ``PFD_PROFILE``). ``auto`` uses the real
        models when the default ones are available locally or the hub is reachable, else the
        tiny profile with a banner."""
        profile = (profile or settings.profile()).lower()
        if profile == "auto":
            real = Registry.load(checkpoints, "real")
            if _defaults_reachable(real):
                return cls(real, **kwargs)
            return cls(Registry.load(checkpoints, "tiny"), banner=TINY_BANNER, **kwargs)
        registry = Registry.load(checkpoints, profile)
        banner = TINY_CHOSEN_BANNER if registry.is_tiny else None
        return cls(registry, banner=banner, **kwargs)

    @property
    def profile(self) -> str:
        return self.registry.profile

    @property
    def defaults(self) -> Dict[str, str]:
        return self.registry.defaults

    # ------------------------------------------------------------------ models
    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` on the engine's device and dtype, in eval mode, without gradients."""
        module = module.to(self.device)
        if any(p.is_floating_point() and p.dtype != self.dtype for p in module.parameters()):
            keep_fp32 = getattr(module, "_keep_in_fp32_modules", None)
            # diffusers' ModelMixin.to warns about fp32-kept modules even when a model has none
            module = module.to(self.dtype) if keep_fp32 else torch.nn.Module.to(module, self.dtype)
        module.eval().requires_grad_(False)
        return module

    def seecoder(self, name: str) -> LoadedSeeCoder:
        with self._load_lock:
            if name in self._seecoders:
                return self._seecoders[name]
            entry = self.registry.entry("seecoders", name)
            self.load_counts[("seecoders", name)] += 1
            if entry.tiny is not None:
                model = tiny.tiny_seecoder(entry.tiny == "seecoder_pa", seed=entry.option("seed", 0))
            else:
                from .seecoder import load_seecoder

                path = self.registry.resolve_file(entry.sources, entry.label, self.allow_download)
                model = load_seecoder(path, device=self.device, dtype=self.dtype)
            model = self.place(model)
            uncond = self._unconditional(entry, model)
            loaded = LoadedSeeCoder(name, model, uncond.to(self.device, self.dtype))
            self._seecoders[name] = loaded
            return loaded

    def _unconditional(self, entry: Entry, model) -> torch.Tensor:
        from .seecoder import load_unconditional_embedding, zero_unconditional

        spec = entry.option("unconditional", "zeros")
        cfg = model.config
        if spec == "zeros":
            return zero_unconditional(cfg)
        if spec == "tiny":
            return tiny.tiny_anime_unconditional()
        path = self.registry.resolve_file(spec, f"{entry.label} unconditional embedding", self.allow_download)
        return load_unconditional_embedding(path, cfg.num_tokens, cfg.out_dim)

    def base_model(self, name: str) -> BaseModel:
        with self._load_lock:
            hit = self._base_models.get_and_touch(name)
            if hit is not None:
                return hit
            entry = self.registry.entry("base_models", name)
            self.load_counts[("base_models", name)] += 1
            unet, vae = self._load_base(entry)
            model = BaseModel(name, self.place(unet), self.place(vae), bool(entry.option("inpainting", False)))
            if model.inpainting != (unet.config.in_channels == 9):
                raise CheckpointError(
                    f"{entry.label}: 'inpainting: {model.inpainting}' in checkpoints.yaml but its UNet has "
                    f"{unet.config.in_channels} input channels"
                )
            for _, old in self._base_models.put(name, model):
                del old
                self._free()
            return model

    def _load_base(self, entry: Entry):
        seed = entry.option("seed", 1)
        if entry.tiny is not None:
            return tiny.tiny_unet(seed, inpainting=bool(entry.option("inpainting"))), tiny.tiny_vae(seed + 100)
        from . import formats

        fmt = entry.format
        if fmt == "diffusers":
            return self._from_diffusers(entry, "UNet2DConditionModel", "unet"), self._from_diffusers(entry, "AutoencoderKL", "vae")
        path = self.registry.resolve_file(entry.sources, entry.label, self.allow_download)
        unet_cfg, vae_cfg = entry.option("unet_config"), entry.option("vae_config")
        if fmt == "single_file":
            return formats.load_single_file_pipeline_parts(path, unet_cfg, vae_cfg, dtype=self.dtype)
        unet = formats.load_unet(path, unet_cfg, dtype=self.dtype)
        vae_src = entry.option("vae")
        if vae_src[0].is_single_file:
            vae_path = self.registry.resolve_file(vae_src, f"{entry.label} VAE", self.allow_download)
            vae = formats.load_vae(vae_path, vae_cfg, dtype=self.dtype)
        else:
            vae = self._from_diffusers_source(vae_src[0], "AutoencoderKL", None, f"{entry.label} VAE")
        return unet, vae

    def _from_diffusers(self, entry: Entry, cls_name: str, subfolder: str):
        src = entry.sources[0]
        sub = f"{src.subfolder}/{subfolder}" if src.subfolder else subfolder
        return self._from_diffusers_source(src, cls_name, sub, entry.label)

    def _from_diffusers_source(self, src, cls_name: str, subfolder: Optional[str], what: str):
        import diffusers

        cls = getattr(diffusers, cls_name)
        location = str(src.path) if src.path is not None else src.repo
        if src.path is not None and not src.path.exists():
            raise ModelUnavailableError(f"{what}: local path '{src.path}' does not exist")
        sub = subfolder if subfolder is not None else src.subfolder
        try:
            return cls.from_pretrained(
                location, subfolder=sub, revision=src.revision, torch_dtype=self.dtype,  # no fp32 copy first
                local_files_only=not self.allow_download or hub_offline(),
            )
        except (OSError, EnvironmentError, ValueError) as e:
            if src.path is not None:
                raise CheckpointError(f"{what}: '{location}' is not a diffusers model folder ({str(e).splitlines()[0][:160]})") from None
            raise ModelUnavailableError(
                f"{what} is not available: '{location}' ({sub or 'root'}) is not in the local cache and could not "
                "be downloaded. Download it where the Hugging Face Hub is reachable, or point a `path:` at a local "
                "copy in checkpoints.yaml."
            ) from None

    def controlnet(self, name: str):
        with self._load_lock:
            hit = self._controlnets.get_and_touch(name)
            if hit is not None:
                return hit
            entry = self.registry.entry("controlnets", name)
            self.load_counts[("controlnets", name)] += 1
            if entry.tiny is not None:
                model = tiny.tiny_controlnet(entry.option("seed", 2))
            else:
                src = entry.sources[0]
                if src.is_single_file:
                    from . import formats

                    path = self.registry.resolve_file(entry.sources, entry.label, self.allow_download)
                    model = formats.load_controlnet(path, entry.option("config"), dtype=self.dtype)
                else:
                    model = self._from_diffusers_source(src, "ControlNetModel", src.subfolder, entry.label)
            model = self.place(model)
            for _, old in self._controlnets.put(name, model):
                del old
                self._free()
            return model

    def cached(self, key: Tuple, build: Callable[[], object]):
        """Engine-owned cache for other heavy objects (detectors, text encoders ...)."""
        with self._load_lock:
            if key not in self._extras:
                self.load_counts[key] += 1
                self._extras[key] = build()
            return self._extras[key]

    def on_device(self, fn: Callable, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` as device work: under the run lock (one request at a time
        on the device) and in inference mode. Every forward pass of a model the engine holds
        (SeeCoder, text and image encoders, UNet, ControlNets, VAE) goes through here."""
        with self._run_lock, torch.inference_mode():
            return fn(*args, **kwargs)

    def detector(self, name: str, annotator_dir=None):
        """The control-map detector ``name`` (``prompt_free.detectors``), built once and held here
        with the networks it shares; the key names the weight folders searched (``annotator_dir``,
        ``$PFD_ANNOTATOR_DIR``), so changing them builds anew."""
        from .detectors import folders_key, resolve_name
        from .detectors.detector import build

        name = resolve_name(name)
        return self.cached(("detectors", name, folders_key(annotator_dir)), lambda: build(self, name, annotator_dir))

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ work
    def encode_reference(self, image, seecoder_name: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Reference image -> (context (1, 148, C), unconditional context (1, 148, C))."""
        sc = self.seecoder(seecoder_name)
        img = prepare_reference(image)
        digest = hashlib.sha1(img.tobytes() + repr(img.size).encode()).hexdigest()
        key = (seecoder_name, digest)
        with self._load_lock:
            hit = self._encodings.get_and_touch(key)
        if hit is None:
            hit = self.on_device(lambda: sc.model(image_to_tensor(img).to(self.device, self.dtype)))
            with self._load_lock:
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
    ) -> Generation:
        """The one call that samples: ``conditioning`` with ``sampler`` on ``base_model``.

        Makes the initial noise (``sampling.initial_noise``: image i from seed ``seed + i``, on
        the CPU), binds the conditioning's inpainting hooks to it, applies its UNet patch for
        this run only, runs the loop and decodes, all under the run lock."""
        sampler = sampler.checked()
        base = self.base_model(base_model)
        c = conditioning
        if c.context.shape[-1] != base.unet.config.cross_attention_dim:
            raise InvalidSettingError(
                f"the conditioning is {c.context.shape[-1]} wide but base model '{base_model}' expects "
                f"{base.unet.config.cross_attention_dim} (is it an SD 1.x model?)"
            )
        f = base.vae_scale_factor
        noise = initial_noise(sampler.seeds, (4, sampler.height // f, sampler.width // f))
        timings = {}
        with self._run_lock, torch.inference_mode():
            extra = after_step = None
            if c.inpainting is not None:
                extra = c.inpainting.unet_channels(sampler.num_images)
                after_step = c.inpainting.step_hook(noise.to(self.device), sampler)
            patch = c.unet_patch.applied(base.unet) if c.unet_patch is not None else contextlib.nullcontext()
            t0 = time.perf_counter()
            with patch:
                latents = denoise(
                    base.unet, make_scheduler(sampler.scheduler), noise, c.context, c.uncond,
                    steps=sampler.steps, guidance=sampler.guidance, controls=c.controls,
                    generator=torch.Generator().manual_seed(sampler.seed), progress=progress,
                    extra_unet_channels=extra, after_step=after_step,
                )
            _sync(self.device)
            timings["denoise"] = time.perf_counter() - t0
            images = []
            if decode:
                t0 = time.perf_counter()
                images = self.decode(base, latents)
                _sync(self.device)
                timings["decode"] = time.perf_counter() - t0
        return Generation(images, latents, sampler.seeds, sampler.width, sampler.height, timings)

    def decode(self, base: BaseModel, latents: torch.Tensor) -> list:
        """Final latents -> PIL images, one at a time (bounds VAE memory at large sizes)."""
        vae = base.vae

        def run():
            out = []
            for z in latents.split(1):
                x = vae.decode(z.to(self.device, vae.dtype) / vae.config.scaling_factor).sample
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
