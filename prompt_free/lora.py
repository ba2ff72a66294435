"""LoRAs on the base model: a file is read once into ``LoraWeights`` (held by the engine), and
``LoraPatch`` fuses one or two of them into the shared UNet for one run and takes them out again.

Formats. kohya / A1111 files (``lora_unet_<module>.lora_down.weight``, ``.lora_up.weight``,
``.alpha``), diffusers/PEFT files (``unet.<module>.lora_A.weight`` / ``.lora_B.weight``, the
alpha in the file's adapter metadata) and diffusers' older attention-processor layout are all
brought to one layout by diffusers' own converters (``StableDiffusionLoraLoaderMixin.
lora_state_dict``, then ``convert_unet_state_dict_to_peft``): per UNet module a down matrix
(r, in[, kh, kw]), an up matrix (out, r[, 1, 1]) and alpha (none given: alpha = r, as diffusers
and kohya do). Files are read with safetensors only.

Applying. For one run every patched weight becomes W + sum_i scale_i * alpha_i / r_i * up_i @
down_i, computed in float32 and rounded once to the UNet's dtype. The patched tensor replaces the
parameter's data and the original tensor is put back afterwards (also on error and on cancel),
so the base model returns bit for bit: nothing is subtracted, nothing rounded twice. Fused
weights cost no work per denoising step (PEFT's wrapper layers would add two matmuls per layer
per step and change the module tree for good). A LoRA at scale 0 is skipped: the run is exactly
the run without it.

Text-encoder layers in a file (``lora_te_*``, ``text_encoder.*``) are ignored: prompt-free
generation uses no text encoder, and the comparison's text columns keep the base model's plain
text encoder. ``LoraWeights.ignored_text_encoder`` counts them; it is logged when the file is read.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .errors import CheckpointError, LoraMismatchError
from .weights import read_safetensors


_TEXT_ENCODER_PREFIXES = ("text_encoder.", "text_encoder_2.")
_UNET_PREFIX = "unet."
_DOWN, _UP = ".lora_A.weight", ".lora_B.weight"
_METADATA_KEY = "lora_adapter_metadata"  # diffusers' safetensors metadata entry (PEFT config)


class LoraWeights(torch.nn.Module):
    """The UNet layers of one LoRA file: ``targets[i]`` (a UNet module name) gets
    ``alphas[i] / rank * ups[i] @ downs[i]`` times the run's scale."""

    def __init__(self, name: str, file: str, layers: Dict[str, Tuple[torch.Tensor, torch.Tensor, float]],
                 ignored_text_encoder: int = 0):
        super().__init__()
        self.name = name
        self.file = file  # the file's name (no directory), for messages
        self.targets: List[str] = list(layers)
        self.downs = torch.nn.ParameterList([torch.nn.Parameter(d, requires_grad=False) for d, _, _ in layers.values()])
        self.ups = torch.nn.ParameterList([torch.nn.Parameter(u, requires_grad=False) for _, u, _ in layers.values()])
        self.alphas: List[float] = [a for _, _, a in layers.values()]
        self.ignored_text_encoder = ignored_text_encoder

    def factors(self, i: int) -> Tuple[torch.Tensor, torch.Tensor, float]:
        """Layer ``i`` as (up (out, r), down (r, in * kh * kw), alpha / r), float32: its weight
        change at scale 1 is ``alpha / r * up @ down`` (reshaped to the target weight)."""
        down = self.downs[i]
        return self.ups[i].float().flatten(1), down.float().flatten(1), self.alphas[i] / down.shape[0]

    def problems(self, unet) -> List[str]:
        """Why this LoRA does not fit ``unet``: modules it lacks, shapes that differ."""
        modules = dict(unet.named_modules())
        out = []
        for i, target in enumerate(self.targets):
            module = modules.get(target)
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor):
                out.append(f"the base model has no layer '{target}'")
                continue
            down, up = self.downs[i], self.ups[i]
            want_out, want_in = weight.shape[0], weight[0].numel()
            got_in = down[0].numel()
            fits = (up.shape[0] == want_out and up[0].numel() == down.shape[0] and got_in == want_in
                    and (weight.dim() == 2 or down.dim() == 2 or down.shape[2:] == weight.shape[2:]))
            if not fits:
                out.append(f"layer '{target}' is {tuple(weight.shape)} but the LoRA gives "
                           f"{tuple(up.shape)} x {tuple(down.shape)}")
        return out


def read_lora(path, name: str) -> LoraWeights:
    """The LoRA file at ``path`` (kohya or diffusers/PEFT keys) as ``LoraWeights`` on the CPU.
    ``CheckpointError`` naming the file when it is not a LoRA this project can apply."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from diffusers.utils import convert_unet_state_dict_to_peft

    path = Path(path)
    where = f"LoRA '{name}' (file '{path.name}')"
    raw = read_safetensors(path)
    if not raw:
        raise CheckpointError(f"{where} holds no tensors")
    try:
        state, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(dict(raw))
    except Exception as e:  # noqa: BLE001 - diffusers raises ValueError/KeyError for foreign layouts
        raise CheckpointError(f"{where} is not a LoRA in kohya or diffusers/PEFT layout: "
                              f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}") from None
    ignored = {k for k in state if k.startswith(_TEXT_ENCODER_PREFIXES)}
    unet = {k.removeprefix(_UNET_PREFIX): v for k, v in state.items() if k not in ignored}
    unet = convert_unet_state_dict_to_peft(unet)
    alphas = convert_unet_state_dict_to_peft({k.removeprefix(_UNET_PREFIX): v for k, v in (alphas or {}).items()
                                              if not k.startswith(_TEXT_ENCODER_PREFIXES)})
    for key in [k for k in unet if k.endswith(".alpha")]:  # PEFT-style files that carry alphas as tensors
        alphas[key] = float(unet.pop(key))
    module_alpha = {_module_of_alpha(k): float(v) for k, v in alphas.items()}
    meta_alpha, alpha_pattern = _metadata_alphas(path)

    layers: Dict[str, Tuple[torch.Tensor, torch.Tensor, float]] = {}
    downs = {k[: -len(_DOWN)]: v for k, v in unet.items() if k.endswith(_DOWN)}
    ups = {k[: -len(_UP)]: v for k, v in unet.items() if k.endswith(_UP)}
    other = sorted(k for k in unet if not k.endswith((_DOWN, _UP)))
    if other:
        raise CheckpointError(f"{where} has layers this project cannot apply (only plain LoRA down/up pairs): "
                              f"{', '.join(other[:3])}{' ...' if len(other) > 3 else ''}")
    unpaired = sorted(set(downs) ^ set(ups))
    if unpaired:
        raise CheckpointError(f"{where}: layer '{unpaired[0]}' has only one of its two LoRA matrices")
    for target in sorted(downs):
        down, up = downs[target], ups[target]
        if down.dim() not in (2, 4) or up.dim() != down.dim() or up.shape[1] != down.shape[0] or up[0, 0].numel() != 1:
            raise CheckpointError(f"{where}: layer '{target}' has LoRA matrices of shapes {tuple(up.shape)} and "
                                  f"{tuple(down.shape)}, not an up (out, r) / down (r, in) pair")
        rank = down.shape[0]
        alpha = module_alpha.get(target, _pattern_alpha(target, alpha_pattern, meta_alpha))
        layers[target] = (down, up, float(rank if alpha is None else alpha))
    if not layers:
        raise CheckpointError(f"{where} has no UNet layers" + (" (only text-encoder layers)" if ignored else ""))
    n_te = sum(1 for k in ignored if k.endswith((_DOWN, ".down.weight")))  # PEFT / older diffusers names
    return LoraWeights(name, path.name, layers, ignored_text_encoder=n_te)


def _module_of_alpha(key: str) -> str:
    """kohya alphas arrive (after diffusers' conversion) as '<module>.alpha' or
    '<module>.lora_A.weight.alpha'."""
    return key.removesuffix(".alpha").removesuffix(".lora_A.weight")


def _metadata_alphas(path: Path) -> Tuple[Optional[float], Dict[str, float]]:
    """(lora_alpha, alpha_pattern) of a diffusers/PEFT file's adapter metadata, if any."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_METADATA_KEY)
        meta = json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return None, {}
    if not isinstance(meta, dict):
        return None, {}
    meta = {k.removeprefix(_UNET_PREFIX): v for k, v in meta.items() if not k.startswith(_TEXT_ENCODER_PREFIXES)}
    alpha = meta.get("lora_alpha")
    pattern = meta.get("alpha_pattern") or {}
    return (float(alpha) if isinstance(alpha, (int, float)) else None,
            {str(k): float(v) for k, v in pattern.items() if isinstance(v, (int, float))} if isinstance(pattern, dict) else {})


def _pattern_alpha(target: str, pattern: Dict[str, float], default: Optional[float]) -> Optional[float]:
    for key, value in pattern.items():  # PEFT matches a pattern against the end of the module name
        if target == key or target.endswith("." + key):
            return value
    return default


class LoraPatch:
    """The ``UNetPatch`` of a run's LoRAs: ``loras`` are (weights, scale) pairs."""

    def __init__(self, loras: Sequence[Tuple[LoraWeights, float]]):
        self.loras = [(w, float(s)) for w, s in loras if float(s) != 0.0]  # scale 0: exactly no LoRA

    def __bool__(self) -> bool:
        return bool(self.loras)

    def check(self, unet, base_model: str) -> None:
        """``LoraMismatchError`` naming the file when a LoRA does not fit ``unet``."""
        for w, _ in self.loras:
            problems = w.problems(unet)
            if problems:
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                raise LoraMismatchError(
                    f"LoRA '{w.name}' (file '{w.file}') does not fit base model '{base_model}': "
                    f"{'; '.join(problems[:3])}{more}. Is it a LoRA for SD 1.x?"
                )

    def patched_bytes(self, unet) -> int:
        """Device memory the patched copies of the weights take while the run lasts."""
        modules = dict(unet.named_modules())
        targets = {t for w, _ in self.loras for t in w.targets}
        return sum(modules[t].weight.numel() * modules[t].weight.element_size() for t in targets)

    @contextlib.contextmanager
    def applied(self, unet) -> Iterator[None]:
        modules = dict(unet.named_modules())
        by_target: Dict[str, List[Tuple[LoraWeights, int, float]]] = {}
        for w, scale in self.loras:
            for i, target in enumerate(w.targets):
                by_target.setdefault(target, []).append((w, i, scale))
        saved: Dict[str, torch.Tensor] = {}
        try:
            # Outside inference mode: the patched tensors are ordinary tensors, like the originals.
            with torch.inference_mode(False), torch.no_grad():
                for target, parts in by_target.items():
                    weight = modules[target].weight
                    fused = weight.detach().float().flatten(1)  # (out, in * kh * kw)
                    for w, i, scale in parts:
                        up, down, factor = w.factors(i)
                        # One kernel, one new tensor: W + scale * alpha / r * up @ down (in float32).
                        fused = torch.addmm(fused, up, down, alpha=scale * factor)
                    saved[target] = weight.data
                    weight.data = fused.reshape(weight.shape).to(weight.dtype)
            yield
        finally:
            for target, original in saved.items():
                modules[target].weight.data = original
