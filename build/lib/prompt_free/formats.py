"""Loading UNets, ControlNets and VAEs from the checkpoint layouts in use (spec section d).

Supported inputs:

* UNet (``load_unet``):
  - an official Prompt-Free Diffusion diffuser file, ``diffuser.image.{time_embed,
    data_blocks,context_blocks}.*`` (the context blocks may also be spelt
    ``diffuser.text.context_blocks.*``, as written by the official conversion tool);
  - an SD single file (``model.diffusion_model.*``, other parts such as
    ``first_stage_model.*`` / ``cond_stage_model.*`` beside it are ignored), or a bare ldm
    UNet state dict (``input_blocks.*``, ``output_blocks.*`` ...);
  - a diffusers state dict file, a diffusers folder (``config.json`` +
    ``diffusion_pytorch_model.*``, or a pipeline folder with a ``unet/`` subfolder) or a
    Hugging Face Hub repo id.
* ControlNet (``load_controlnet``): an official "slimmed" file (no prefix), an SD-webui file
  (``control_model.*``), a diffusers state dict / folder / repo id.
* VAE (``load_vae``): an ldm AutoencoderKL file (``encoder.*``, ``decoder.*``, ``quant_conv``,
  ``post_quant_conv``, optionally under ``first_stage_model.``, ``vae.image.`` or ``vae.``),
  a diffusers state dict / folder (``vae/``) / repo id.

The official layout is mapped to the ldm layout by the single table ``PFD_UNET_TABLE``; ldm is
mapped to diffusers by diffusers' own single-file conversion functions. Models are built on
the meta device and the file's tensors are assigned to them, so no weight is held twice.
Every wrong file raises a ``CheckpointError`` that names the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from .errors import CheckpointError, ConfigError, ModelUnavailableError
from .weights import check_keys_and_shapes, first, read_state_dict

__all__ = [
    "SD15_UNET_CONFIG",
    "SD15_CONTROLNET_CONFIG",
    "SD15_VAE_CONFIG",
    "PFD_UNET_TABLE",
    "official_to_ldm_unet",
    "ldm_to_official_unet",
    "convert_unet_state_dict",
    "convert_controlnet_state_dict",
    "convert_vae_state_dict",
    "load_unet",
    "load_controlnet",
    "load_vae",
    "load_single_file_pipeline_parts",
    "identify_checkpoint",
]

# ----------------------------------------------------------------------------- default configs
SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)

SD15_CONTROLNET_CONFIG = dict(
    in_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
    conditioning_embedding_out_channels=(16, 32, 96, 256),
    conditioning_channels=3,
)

SD15_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# ----------------------------------------------------------------------------- official <-> ldm
LDM_UNET_PREFIX = "model.diffusion_model."
PFD_PREFIX = "diffuser.image."
PFD_TEXT_CONTEXT_PREFIX = "diffuser.text.context_blocks."
PFD_IMAGE_CONTEXT_PREFIX = "diffuser.image.context_blocks."

# THE table (spec section d): ldm UNet prefix -> official diffuser prefix (both without their
# outer ``model.diffusion_model.`` / ``diffuser.image.``); suffixes are unchanged. Fixed to the
# SD-1.x structure (4 levels, 2 res blocks, attention on the first three levels).
PFD_UNET_TABLE: Tuple[Tuple[str, str], ...] = (
    ("time_embed.", "time_embed."),
    *((f"input_blocks.{n}.0.", f"data_blocks.{n}.0.") for n in range(12)),
    ("middle_block.0.", "data_blocks.12.0."),
    ("middle_block.2.", "data_blocks.13.0."),
    ("output_blocks.0.0.", "data_blocks.14.0."),
    ("output_blocks.1.0.", "data_blocks.15.0."),
    ("output_blocks.2.0.", "data_blocks.16.0."),
    ("output_blocks.2.1.", "data_blocks.17.0."),  # upsample conv
    ("output_blocks.3.0.", "data_blocks.18.0."),
    ("output_blocks.4.0.", "data_blocks.19.0."),
    ("output_blocks.5.0.", "data_blocks.20.0."),
    ("output_blocks.5.2.", "data_blocks.21.0."),  # upsample conv
    ("output_blocks.6.0.", "data_blocks.22.0."),
    ("output_blocks.7.0.", "data_blocks.23.0."),
    ("output_blocks.8.0.", "data_blocks.24.0."),
    ("output_blocks.8.2.", "data_blocks.25.0."),  # upsample conv
    ("output_blocks.9.0.", "data_blocks.26.0."),
    ("output_blocks.10.0.", "data_blocks.27.0."),
    ("output_blocks.11.0.", "data_blocks.28.0."),
    ("out.", "data_blocks.29.0."),
    *((f"input_blocks.{n}.1.", f"context_blocks.{i}.0.") for i, n in enumerate((1, 2, 4, 5, 7, 8))),
    ("middle_block.1.", "context_blocks.6.0."),
    *((f"output_blocks.{n}.1.", f"context_blocks.{n + 4}.0.") for n in range(3, 12)),
)
_LDM_TO_PFD = dict(PFD_UNET_TABLE)
_PFD_TO_LDM = {pfd: ldm for ldm, pfd in PFD_UNET_TABLE}
assert len(_LDM_TO_PFD) == len(_PFD_TO_LDM) == len(PFD_UNET_TABLE) == 47  # time_embed, 30 data blocks, 16 context blocks


def _map_prefix(key: str, table: Mapping[str, str]) -> Optional[str]:
    parts = key.split(".")
    for depth in (3, 2, 1):
        if len(parts) > depth:
            head = ".".join(parts[:depth]) + "."
            if head in table:
                return table[head] + key[len(head):]
    return None


def _where(path) -> str:
    return f"'{os.fspath(path)}'" if path is not None else "the state dict"


def official_to_ldm_unet(
    sd: Mapping[str, torch.Tensor], *, prefix: str = LDM_UNET_PREFIX, path=None
) -> Dict[str, torch.Tensor]:
    """Official diffuser keys (``diffuser.image.*``, context blocks possibly spelt
    ``diffuser.text.context_blocks.*``) -> ldm keys (``model.diffusion_model.*`` by default).

    Keys outside ``diffuser.`` are ignored (callers decide what else a file may hold); a
    ``diffuser.`` key the table does not know raises a ``CheckpointError``. Tensors are not
    copied.
    """
    has_image_context = any(k.startswith(PFD_IMAGE_CONTEXT_PREFIX) for k in sd)
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if not key.startswith("diffuser."):
            continue
        if key.startswith(PFD_TEXT_CONTEXT_PREFIX) and not has_image_context:
            # The official app renames these only when the file has no image-context keys.
            key = PFD_IMAGE_CONTEXT_PREFIX + key[len(PFD_TEXT_CONTEXT_PREFIX):]
        mapped = _map_prefix(key[len(PFD_PREFIX):], _PFD_TO_LDM) if key.startswith(PFD_PREFIX) else None
        if mapped is None:
            unknown.append(key)
            continue
        out[prefix + mapped] = value
    if unknown:
        raise CheckpointError(
            f"Prompt-Free Diffusion UNet file {_where(path)} does not match the SD-1.x UNet: "
            f"unexpected keys: {first(unknown)}"
        )
    return out


def ldm_to_official_unet(
    sd: Mapping[str, torch.Tensor], *, text_context: bool = False, path=None
) -> Dict[str, torch.Tensor]:
    """ldm UNet keys (with or without ``model.diffusion_model.``) -> official diffuser keys.
    ``text_context=True`` writes the ``diffuser.text.context_blocks.`` spelling."""
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        bare = key[len(LDM_UNET_PREFIX):] if key.startswith(LDM_UNET_PREFIX) else key
        mapped = _map_prefix(bare, _LDM_TO_PFD)
        if mapped is None:
            unknown.append(key)
            continue
        if text_context and mapped.startswith("context_blocks."):
            out["diffuser.text." + mapped] = value
        else:
            out[PFD_PREFIX + mapped] = value
    if unknown:
        raise CheckpointError(f"{_where(path)}: keys with no place in the official SD-1.x layout: {first(unknown)}")
    return out


# ----------------------------------------------------------------------------- identifying files
# (kind, key prefixes, description), in order of precedence.
_KINDS: Tuple[Tuple[str, Tuple[str, ...], str], ...] = (
    ("pfd_unet", ("diffuser.image.", "diffuser.text.context_blocks."), "a Prompt-Free Diffusion UNet (diffuser) file"),
    ("seecoder", ("ctx.image.", "imencoder.", "imdecoder.", "qtransformer."), "a SeeCoder file (ctx.image.* keys)"),
    ("ldm_checkpoint", (LDM_UNET_PREFIX,), "a Stable Diffusion single file (model.diffusion_model.* keys)"),
    ("webui_controlnet", ("control_model.",), "an SD-webui ControlNet file (control_model.* keys)"),
    ("slimmed_controlnet", ("input_hint_block.", "zero_convs.", "middle_block_out."), "a ControlNet file (input_hint_block/zero_convs keys)"),
    ("diffusers_controlnet", ("controlnet_cond_embedding.", "controlnet_down_blocks."), "a diffusers ControlNet state dict"),
    ("ldm_unet", ("output_blocks.", "input_blocks.", "middle_block."), "an ldm UNet state dict (input_blocks/output_blocks keys)"),
    ("diffusers_unet", ("up_blocks.", "mid_block.", "time_embedding."), "a diffusers UNet state dict"),
    ("diffusers_vae", ("encoder.down_blocks.", "decoder.up_blocks."), "a diffusers VAE state dict"),
    ("ldm_vae", ("first_stage_model.", "vae.image.", "encoder.down.", "decoder.up."), "a VAE file"),
    ("text_encoder", ("cond_stage_model.", "text_model.", "transformer.text_model."), "a text encoder file"),
)
_DESCRIPTIONS = {kind: what for kind, _, what in _KINDS}


def identify_checkpoint(keys: Iterable[str]) -> Optional[str]:
    """The layout a state dict's keys are in (see ``_KINDS``), or None when unknown."""
    keys = list(keys)
    for kind, prefixes, _ in _KINDS:
        if any(k.startswith(prefixes) for k in keys):
            return kind
    return None


def _not_a(what_wanted: str, kind: Optional[str], sd, path, hint: str = "") -> CheckpointError:
    found = _DESCRIPTIONS.get(kind) if kind else None
    if found:
        return CheckpointError(f"{_where(path)} is {found}, not {what_wanted}{hint}")
    return CheckpointError(f"{_where(path)} is not {what_wanted}: unknown key layout (first keys: {first(sd.keys(), 3)})")


# ----------------------------------------------------------------------------- helpers
def _convert_tracked(convert, ldm: Mapping[str, torch.Tensor], config: Mapping):
    """``convert(ldm, config)`` (a diffusers converter) -> (converted state dict, keys of
    ``ldm`` the converter dropped). The converters move tensors or take views of them (the
    VAE's attention reshapes) and silently skip what they do not know; to see what they used,
    the conversion is repeated on storage-free meta stand-ins that are not views of anything."""
    converted = {k: v for k, v in convert(dict(ldm), dict(config)).items() if v is not None}
    proxies = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in ldm.items()}
    used = set()
    for v in convert(dict(proxies), dict(config)).values():
        if v is not None:
            used.add(id(v))
            if v._base is not None:
                used.add(id(v._base))
    return converted, [k for k, v in proxies.items() if id(v) not in used]


def _source_names(source: Mapping[str, torch.Tensor], renamed: Mapping[str, torch.Tensor], keys: Iterable[str]) -> List[str]:
    """The file's own names for ``keys`` of ``renamed`` (same tensors, other names)."""
    by_id = {id(v): k for k, v in source.items()}
    return [by_id.get(id(renamed[k]), k) for k in keys]


def _empty_model(cls, config: Mapping):
    """``cls`` built from ``config`` with its parameters on the meta device (no storage)."""
    from accelerate import init_empty_weights

    if not isinstance(config, Mapping):
        raise ConfigError(f"a {cls.__name__} config must be a dict, got {type(config).__name__}")
    try:
        with init_empty_weights():
            return cls.from_config(dict(config))
    except Exception as e:
        raise ConfigError(f"invalid {cls.__name__} config: {str(e).splitlines()[0][:300]}") from None


def _expected_shapes(model) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check(sd, model, *, what: str, path, unexpected: Iterable[str] = ()) -> None:
    unexpected = list(unexpected)
    if unexpected:
        raise CheckpointError(f"{what} in {_where(path)} does not match the model: unexpected keys: {first(unexpected)}")
    try:
        check_keys_and_shapes(sd, _expected_shapes(model), what=what, path=path)
    except CheckpointError as e:
        msg = str(e)
        w, cfg = sd.get("conv_in.weight"), getattr(model, "config", {})
        widths = cfg.get("block_out_channels") if hasattr(cfg, "get") else None
        if "wrong shapes" in msg and w is not None and widths and w.shape[0] != widths[0]:
            msg += (f" (the file's first block has {w.shape[0]} channels, the config {widths[0]}:"
                    " the config does not match this file)")
        raise CheckpointError(msg) from None


def _target_dtype(sd: Mapping[str, torch.Tensor], dtype, device) -> Optional[torch.dtype]:
    """Requested dtype, else the file's float dtype; on CPU half precision becomes float32."""
    if dtype is not None:
        return dtype
    counts = Counter(v.dtype for v in sd.values() if v.is_floating_point())
    if not counts:
        return None
    file_dtype = counts.most_common(1)[0][0]
    on_cpu = device is None or torch.device(device).type == "cpu"
    if on_cpu and file_dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return file_dtype


def _finish(model, sd, *, dtype, device, path, what):
    target = _target_dtype(sd, dtype, device)
    device = torch.device(device if device is not None else "cpu")
    for k in list(sd):  # one tensor at a time, so a converted copy never coexists with the whole file
        v = sd[k]
        sd[k] = v.to(device=device, dtype=target) if (target is not None and v.is_floating_point()) else v.to(device)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:  # should not happen after the key/shape check
        raise CheckpointError(f"{what} in {_where(path)} could not be loaded: {str(e).splitlines()[0][:300]}") from None
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.device.type == "meta"]
    if left:
        raise CheckpointError(f"{what} in {_where(path)} left parameters without weights: {first(left)}")
    sd.clear()  # drop our references: the model holds the only ones now
    return model.to(device).eval()


def _is_repo_id(path) -> bool:
    if isinstance(path, Path):
        return False
    s = str(path)
    if os.path.exists(s) or os.path.isabs(s) or s.startswith((".", "~")):
        return False
    if Path(s).suffix.lower() in (".safetensors", ".pth", ".pt", ".ckpt", ".bin"):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", s) is not None


_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.fp16.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
    "diffusion_pytorch_model.bin.index.json",
)


def _diffusers_folder(path: Path, subfolder: str) -> Path:
    if (path / "config.json").is_file():
        return path
    if (path / subfolder / "config.json").is_file():
        return path / subfolder
    raise CheckpointError(
        f"folder '{path}' is not a diffusers model folder: it has neither config.json nor {subfolder}/config.json"
    )


def _read_diffusers_folder(folder: Path, cls_name: str, config: Optional[Mapping]):
    """(config, state dict) of a diffusers model folder."""
    try:
        folder_config = json.loads((folder / "config.json").read_text())
    except Exception as e:
        raise CheckpointError(f"'{folder / 'config.json'}' is not a valid JSON config: {str(e)[:200]}") from None
    found = folder_config.get("_class_name")
    if found and found != cls_name:
        raise CheckpointError(f"folder '{folder}' holds a {found}, not a {cls_name}")
    for name in _WEIGHT_NAMES:
        f = folder / name
        if not f.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(f.read_text())["weight_map"].values()))
            except Exception as e:
                raise CheckpointError(f"'{f}' is not a valid shard index: {str(e)[:200]}") from None
            sd: Dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(read_state_dict(folder / shard))
        else:
            sd = read_state_dict(f)
        return (config if config is not None else folder_config), sd
    raise CheckpointError(f"folder '{folder}' has a config.json but no diffusion_pytorch_model weights")


def _from_hub(cls, repo: str, subfolders: Tuple[Optional[str], ...], config, *, dtype, device, what):
    errors = []
    for sub in subfolders:
        try:
            kwargs = {"subfolder": sub} if sub else {}
            model = cls.from_pretrained(repo, **kwargs)
            break
        except Exception as e:
            errors.append(str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
    else:
        from .settings import hub_offline

        offline = hub_offline()
        mode = " (offline mode: HF_HUB_OFFLINE is set, only the local cache is used)" if offline else ""
        raise ModelUnavailableError(
            f"could not load the {what} '{repo}' from the Hugging Face Hub{mode}: {errors[-1]}. "
            "No local file or folder has that name either: download it first, or give the path of a "
            "local file or folder."
        )
    if config is not None:
        sd = model.state_dict()
        _check(sd, _empty_model(cls, config), what=what, path=repo)
    target = _target_dtype(model.state_dict(), dtype, device)
    # nn.Module.to: diffusers' own ``to`` warns about any dtype cast.
    return torch.nn.Module.to(model, device=device if device is not None else "cpu", dtype=target).eval()


def _read_any(path, cls_name: str, subfolder: str, config):
    """(config or None, state dict, source description) of a local file or diffusers folder."""
    p = Path(path)
    if p.is_dir():
        folder = _diffusers_folder(p, subfolder)
        cfg, sd = _read_diffusers_folder(folder, cls_name, config)
        return cfg, sd, folder
    return config, read_state_dict(p), p


# ----------------------------------------------------------------------------- UNet
def _unet_diffusers_state_dict(sd: Mapping[str, torch.Tensor], config: Mapping, *, path=None):
    """Any UNet layout -> (diffusers state dict, unexpected source keys)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    kind = identify_checkpoint(sd.keys())
    if kind == "diffusers_unet":
        return dict(sd), []
    if kind == "pfd_unet":
        # Other parts of the official net may sit beside the diffuser (the app ignores them).
        foreign = [k for k in sd if not k.startswith(("diffuser.", "vae.image.", "ctx.image."))]
        if foreign:
            raise CheckpointError(
                f"Prompt-Free Diffusion UNet file {_where(path)} holds keys that do not belong to it: {first(foreign)}"
            )
        ldm = official_to_ldm_unet(sd, path=path)
    elif kind == "ldm_checkpoint":
        ldm = {k: v for k, v in sd.items() if k.startswith(LDM_UNET_PREFIX)}
    elif kind == "ldm_unet":
        ldm = {LDM_UNET_PREFIX + k: v for k, v in sd.items()}
    else:
        raise _not_a("a UNet file", kind, sd, path,
                     " (load it with load_seecoder)" if kind == "seecoder" else
                     " (load it with load_controlnet)" if kind and "controlnet" in kind else "")
    converted, dropped = _convert_tracked(convert_ldm_unet_checkpoint, ldm, config)
    return converted, _source_names(sd, ldm, dropped)


def convert_unet_state_dict(sd: Mapping[str, torch.Tensor], config: Optional[Mapping] = None, *, path=None):
    """Any supported UNet layout -> a checked diffusers ``UNet2DConditionModel`` state dict
    (works on meta tensors too: nothing is copied)."""
    from diffusers import UNet2DConditionModel

    config = SD15_UNET_CONFIG if config is None else config
    converted, unexpected = _unet_diffusers_state_dict(sd, config, path=path)
    _check(converted, _empty_model(UNet2DConditionModel, config), what="UNet file", path=path, unexpected=unexpected)
    return converted


def load_unet(path, config: Optional[Mapping] = None, *, dtype: Optional[torch.dtype] = None, device=None):
    """A diffusers ``UNet2DConditionModel`` (eval) from any supported UNet file, folder or
    Hub repo id. ``config``: a diffusers UNet config (default: SD 1.5's; a diffusers folder's
    own config.json when not given). The file's dtype is kept unless ``dtype`` is given, except
    that half precision is loaded as float32 when the model stays on the CPU.
    """
    from diffusers import UNet2DConditionModel

    if _is_repo_id(path):
        return _from_hub(UNet2DConditionModel, str(path), ("unet", None), config, dtype=dtype, device=device, what="UNet")
    config, sd, source = _read_any(path, "UNet2DConditionModel", "unet", config)
    config = SD15_UNET_CONFIG if config is None else config
    model = _empty_model(UNet2DConditionModel, config)
    converted, unexpected = _unet_diffusers_state_dict(sd, config, path=source)
    del sd
    _check(converted, model, what="UNet file", path=source, unexpected=unexpected)
    return _finish(model, converted, dtype=dtype, device=device, path=source, what="UNet file")


# ----------------------------------------------------------------------------- ControlNet
def _controlnet_diffusers_state_dict(sd: Mapping[str, torch.Tensor], config: Mapping, *, path=None):
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    kind = identify_checkpoint(sd.keys())
    if kind == "diffusers_controlnet":
        return dict(sd), []
    if any(k.startswith("control_model.") for k in sd):
        # Old full webui files also carry an SD checkpoint beside the ControlNet: ignored.
        ldm = {k: v for k, v in sd.items() if k.startswith("control_model.")}
    elif kind == "slimmed_controlnet" or (kind == "ldm_unet" and not any(k.startswith("output_blocks.") for k in sd)):
        ldm = {"control_model." + k: v for k, v in sd.items()}
    else:
        raise _not_a("a ControlNet file", kind, sd, path,
                     " (load it with load_seecoder)" if kind == "seecoder" else
                     " (load it with load_unet)" if kind in ("pfd_unet", "ldm_checkpoint", "ldm_unet", "diffusers_unet") else "")
    # Always give the converter prefixed keys: it strips ``control_model.`` itself.
    converted, dropped = _convert_tracked(convert_controlnet_checkpoint, ldm, config)
    return converted, _source_names(sd, ldm, dropped)


def convert_controlnet_state_dict(sd: Mapping[str, torch.Tensor], config: Optional[Mapping] = None, *, path=None):
    """Any supported ControlNet layout -> a checked diffusers ``ControlNetModel`` state dict."""
    from diffusers import ControlNetModel

    config = SD15_CONTROLNET_CONFIG if config is None else config
    converted, unexpected = _controlnet_diffusers_state_dict(sd, config, path=path)
    _check(converted, _empty_model(ControlNetModel, config), what="ControlNet file", path=path, unexpected=unexpected)
    return converted


def load_controlnet(path, config: Optional[Mapping] = None, *, dtype: Optional[torch.dtype] = None, device=None):
    """A diffusers ``ControlNetModel`` (eval) from an official slimmed file, an SD-webui file
    (``control_model.*``), a diffusers state dict / folder or a Hub repo id. ``config``: a
    diffusers ControlNet config (default: SD 1.5's). dtype rules as ``load_unet``."""
    from diffusers import ControlNetModel

    if _is_repo_id(path):
        return _from_hub(ControlNetModel, str(path), (None, "controlnet"), config, dtype=dtype, device=device, what="ControlNet")
    config, sd, source = _read_any(path, "ControlNetModel", "controlnet", config)
    config = SD15_CONTROLNET_CONFIG if config is None else config
    model = _empty_model(ControlNetModel, config)
    converted, unexpected = _controlnet_diffusers_state_dict(sd, config, path=source)
    del sd
    _check(converted, model, what="ControlNet file", path=source, unexpected=unexpected)
    return _finish(model, converted, dtype=dtype, device=device, path=source, what="ControlNet file")


# ----------------------------------------------------------------------------- VAE
_VAE_PREFIXES = ("first_stage_model.", "vae.image.", "vae.")
_VAE_IGNORED = ("loss.", "model_ema.")  # ldm autoencoder training leftovers


def _vae_diffusers_state_dict(sd: Mapping[str, torch.Tensor], config: Mapping, *, path=None):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    kind = identify_checkpoint(sd.keys())
    if kind == "diffusers_vae":
        return dict(sd), []
    if kind in ("ldm_checkpoint", "pfd_unet") and any(k.startswith(("first_stage_model.", "vae.image.")) for k in sd):
        kind = "ldm_vae"
    if kind != "ldm_vae":
        raise _not_a("a VAE file", kind, sd, path)
    prefix = next((p for p in _VAE_PREFIXES if any(k.startswith(p) for k in sd)), "")
    if prefix:
        bare = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    else:
        bare = {k: v for k, v in sd.items() if not k.startswith(_VAE_IGNORED)}
    ldm = {"first_stage_model." + k: v for k, v in bare.items()}
    converted, dropped = _convert_tracked(convert_ldm_vae_checkpoint, ldm, config)
    return converted, _source_names(sd, ldm, dropped)


def convert_vae_state_dict(sd: Mapping[str, torch.Tensor], config: Optional[Mapping] = None, *, path=None):
    """An ldm (or diffusers) VAE state dict -> a checked diffusers ``AutoencoderKL`` state dict."""
    from diffusers import AutoencoderKL

    config = SD15_VAE_CONFIG if config is None else config
    converted, unexpected = _vae_diffusers_state_dict(sd, config, path=path)
    _check(converted, _empty_model(AutoencoderKL, config), what="VAE file", path=path, unexpected=unexpected)
    return converted


def load_vae(path, config: Optional[Mapping] = None, *, dtype: Optional[torch.dtype] = None, device=None):
    """A diffusers ``AutoencoderKL`` (eval) from an ldm VAE file (e.g. the official
    ``sd-v2-0-base-autokl.pth``), an SD single file, a diffusers folder or a Hub repo id."""
    from diffusers import AutoencoderKL

    if _is_repo_id(path):
        return _from_hub(AutoencoderKL, str(path), ("vae", None), config, dtype=dtype, device=device, what="VAE")
    config, sd, source = _read_any(path, "AutoencoderKL", "vae", config)
    config = SD15_VAE_CONFIG if config is None else config
    model = _empty_model(AutoencoderKL, config)
    converted, unexpected = _vae_diffusers_state_dict(sd, config, path=source)
    del sd
    _check(converted, model, what="VAE file", path=source, unexpected=unexpected)
    return _finish(model, converted, dtype=dtype, device=device, path=source, what="VAE file")


def load_single_file_pipeline_parts(
    path, unet_config: Optional[Mapping] = None, vae_config: Optional[Mapping] = None,
    *, dtype: Optional[torch.dtype] = None, device=None,
):
    """(unet, vae) from one SD single file holding ``model.diffusion_model.*`` and
    ``first_stage_model.*`` (the text encoder, if any, is ignored). The file is read once."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    p = Path(path)
    sd = read_state_dict(p)
    kind = identify_checkpoint(sd.keys())
    if kind != "ldm_checkpoint":
        raise _not_a("a Stable Diffusion single file", kind, sd, p)
    vae_sd = {k: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    if not vae_sd:
        raise CheckpointError(f"{_where(p)} holds a UNet but no VAE (no first_stage_model.* keys)")
    unet_sd = {k: v for k, v in sd.items() if k.startswith(LDM_UNET_PREFIX)}
    del sd
    unet_config = SD15_UNET_CONFIG if unet_config is None else unet_config
    vae_config = SD15_VAE_CONFIG if vae_config is None else vae_config

    unet = _empty_model(UNet2DConditionModel, unet_config)
    converted, unexpected = _unet_diffusers_state_dict(unet_sd, unet_config, path=p)
    del unet_sd
    _check(converted, unet, what="UNet part", path=p, unexpected=unexpected)
    unet = _finish(unet, converted, dtype=dtype, device=device, path=p, what="UNet part")

    vae = _empty_model(AutoencoderKL, vae_config)
    converted, unexpected = _vae_diffusers_state_dict(vae_sd, vae_config, path=p)
    del vae_sd
    _check(converted, vae, what="VAE part", path=p, unexpected=unexpected)
    vae = _finish(vae, converted, dtype=dtype, device=device, path=p, what="VAE part")
    return unet, vae
