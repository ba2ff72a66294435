"""Loading UNets, ControlNets and VAEs from the checkpoint layouts in use (spec section d;
the layouts are listed in docs/formats.md). Every kind goes one way: file, folder or Hub repo
(``model_files``) -> keys in the ldm layout (the official diffuser layout through the single
table ``PFD_UNET_TABLE``) -> diffusers' own single-file converter -> a checked diffusers state
dict -> a model built on the meta device that the tensors are assigned to, so no weight is held
twice. What differs per kind is one row of ``MODEL_KINDS``. Every wrong file raises a
``CheckpointError`` that names the file and what is wrong.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from .errors import CheckpointError, ConfigError
from .model_files import from_hub, is_repo_id, read_any
from .weights import check_keys_and_shapes, first, read_state_dict

__all__ = [
    "SD15_UNET_CONFIG", "SD15_CONTROLNET_CONFIG", "SD15_VAE_CONFIG", "PFD_UNET_TABLE", "MODEL_KINDS", "ModelKind",
    "official_to_ldm_unet", "ldm_to_official_unet", "identify_checkpoint",
    "convert_state_dict", "convert_unet_state_dict", "convert_controlnet_state_dict", "convert_vae_state_dict",
    "load_model", "load_unet", "load_controlnet", "load_vae", "load_single_file_pipeline_parts",
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


def _check(sd, model, *, what: str, path, unexpected: Iterable[str] = ()) -> None:
    unexpected = list(unexpected)
    if unexpected:
        raise CheckpointError(f"{what} in {_where(path)} does not match the model: unexpected keys: {first(unexpected)}")
    try:
        check_keys_and_shapes(sd, {k: tuple(v.shape) for k, v in model.state_dict().items()}, what=what, path=path)
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


# ----------------------------------------------------------------------------- the kinds
def _unet_to_ldm(sd: Mapping[str, torch.Tensor], path) -> Optional[Dict[str, torch.Tensor]]:
    """Any UNet layout -> ldm keys (``model.diffusion_model.*``); None when already diffusers."""
    kind = identify_checkpoint(sd.keys())
    if kind == "diffusers_unet":
        return None
    if kind == "pfd_unet":
        # Other parts of the official net may sit beside the diffuser (the app ignores them).
        foreign = [k for k in sd if not k.startswith(("diffuser.", "vae.image.", "ctx.image."))]
        if foreign:
            raise CheckpointError(
                f"Prompt-Free Diffusion UNet file {_where(path)} holds keys that do not belong to it: {first(foreign)}"
            )
        return official_to_ldm_unet(sd, path=path)
    if kind == "ldm_checkpoint":
        return {k: v for k, v in sd.items() if k.startswith(LDM_UNET_PREFIX)}
    if kind == "ldm_unet":
        return {LDM_UNET_PREFIX + k: v for k, v in sd.items()}
    raise _not_a("a UNet file", kind, sd, path,
                 " (load it with load_seecoder)" if kind == "seecoder" else
                 " (load it with load_controlnet)" if kind and "controlnet" in kind else "")


def _controlnet_to_ldm(sd: Mapping[str, torch.Tensor], path) -> Optional[Dict[str, torch.Tensor]]:
    """Any ControlNet layout -> ``control_model.*`` keys (the converter strips the prefix
    itself); None when already diffusers."""
    kind = identify_checkpoint(sd.keys())
    if kind == "diffusers_controlnet":
        return None
    if any(k.startswith("control_model.") for k in sd):
        # Old full webui files also carry an SD checkpoint beside the ControlNet: ignored.
        return {k: v for k, v in sd.items() if k.startswith("control_model.")}
    if kind == "slimmed_controlnet" or (kind == "ldm_unet" and not any(k.startswith("output_blocks.") for k in sd)):
        return {"control_model." + k: v for k, v in sd.items()}
    raise _not_a("a ControlNet file", kind, sd, path,
                 " (load it with load_seecoder)" if kind == "seecoder" else
                 " (load it with load_unet)" if kind in ("pfd_unet", "ldm_checkpoint", "ldm_unet", "diffusers_unet") else "")


_VAE_PREFIXES = ("first_stage_model.", "vae.image.", "vae.")
_VAE_IGNORED = ("loss.", "model_ema.")  # ldm autoencoder training leftovers


def _vae_to_ldm(sd: Mapping[str, torch.Tensor], path) -> Optional[Dict[str, torch.Tensor]]:
    """An ldm VAE (bare or under a known prefix) -> ``first_stage_model.*`` keys; None when
    already diffusers."""
    kind = identify_checkpoint(sd.keys())
    if kind == "diffusers_vae":
        return None
    if kind in ("ldm_checkpoint", "pfd_unet") and any(k.startswith(("first_stage_model.", "vae.image.")) for k in sd):
        kind = "ldm_vae"
    if kind != "ldm_vae":
        raise _not_a("a VAE file", kind, sd, path)
    prefix = next((p for p in _VAE_PREFIXES if any(k.startswith(p) for k in sd)), "")
    if prefix:
        bare = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    else:
        bare = {k: v for k, v in sd.items() if not k.startswith(_VAE_IGNORED)}
    return {"first_stage_model." + k: v for k, v in bare.items()}


@dataclass(frozen=True)
class ModelKind:
    """What differs between the kinds of model this module loads."""

    what: str  # in messages: "UNet file", "the UNet '<repo>'"
    class_name: str  # the diffusers model class
    config: Mapping  # the default (SD 1.5) config
    subfolder: str  # its folder in a diffusers pipeline folder
    hub_subfolders: Tuple[Optional[str], ...]  # tried in order on a Hub repo
    to_ldm: Callable[[Mapping[str, torch.Tensor], object], Optional[Dict[str, torch.Tensor]]]
    converter: str  # ldm -> diffusers, in diffusers.loaders.single_file_utils

    def model_class(self):
        import diffusers

        return getattr(diffusers, self.class_name)


MODEL_KINDS: Dict[str, ModelKind] = {
    "unet": ModelKind("UNet", "UNet2DConditionModel", SD15_UNET_CONFIG, "unet", ("unet", None),
                      _unet_to_ldm, "convert_ldm_unet_checkpoint"),
    "controlnet": ModelKind("ControlNet", "ControlNetModel", SD15_CONTROLNET_CONFIG, "controlnet", (None, "controlnet"),
                            _controlnet_to_ldm, "convert_controlnet_checkpoint"),
    "vae": ModelKind("VAE", "AutoencoderKL", SD15_VAE_CONFIG, "vae", ("vae", None),
                     _vae_to_ldm, "convert_ldm_vae_checkpoint"),
}


# ----------------------------------------------------------------------------- convert and load, any kind
def _to_diffusers(kind: ModelKind, sd: Mapping[str, torch.Tensor], config: Mapping, *, path=None):
    """A state dict of ``kind`` in any supported layout -> (diffusers state dict, the file's
    keys the conversion left unused)."""
    from diffusers.loaders import single_file_utils

    ldm = kind.to_ldm(sd, path)
    if ldm is None:
        return dict(sd), []
    converted, dropped = _convert_tracked(getattr(single_file_utils, kind.converter), ldm, config)
    return converted, _source_names(sd, ldm, dropped)


def convert_state_dict(kind: str, sd: Mapping[str, torch.Tensor], config: Optional[Mapping] = None, *, path=None):
    """A ``kind`` ("unet", "controlnet", "vae") state dict in any supported layout -> a checked
    diffusers state dict (works on meta tensors too: nothing is copied)."""
    k = MODEL_KINDS[kind]
    config = k.config if config is None else config
    converted, unexpected = _to_diffusers(k, sd, config, path=path)
    _check(converted, _empty_model(k.model_class(), config), what=f"{k.what} file", path=path, unexpected=unexpected)
    return converted


def _assign(kind: ModelKind, sd: Dict[str, torch.Tensor], config: Mapping, *, dtype, device, path, what: str):
    """The model of ``kind`` holding ``sd``'s tensors. ``sd`` is emptied once converted, so
    that the model ends up holding the only references."""
    model = _empty_model(kind.model_class(), config)
    converted, unexpected = _to_diffusers(kind, sd, config, path=path)
    sd.clear()
    _check(converted, model, what=what, path=path, unexpected=unexpected)
    return _finish(model, converted, dtype=dtype, device=device, path=path, what=what)


def _hub_model(kind: ModelKind, repo: str, config: Optional[Mapping], *, dtype, device):
    """The model of ``kind`` from a Hub repo (checked against ``config`` when one is given)."""
    cls = kind.model_class()
    model = from_hub(cls, repo, kind.hub_subfolders, kind.what)
    if config is not None:
        _check(model.state_dict(), _empty_model(cls, config), what=kind.what, path=repo)
    target = _target_dtype(model.state_dict(), dtype, device)
    # nn.Module.to: diffusers' own ``to`` warns about any dtype cast.
    return torch.nn.Module.to(model, device=device if device is not None else "cpu", dtype=target).eval()


def load_model(kind: str, path, config: Optional[Mapping] = None, *, dtype: Optional[torch.dtype] = None, device=None):
    """A diffusers model of ``kind`` ("unet", "controlnet", "vae"), in eval mode, from any
    supported file, diffusers folder or Hub repo id. ``config``: a diffusers config (default:
    SD 1.5's; a diffusers folder's own config.json when not given). The file's dtype is kept
    unless ``dtype`` is given, except that half precision is loaded as float32 when the model
    stays on the CPU."""
    k = MODEL_KINDS[kind]
    if is_repo_id(path):
        return _hub_model(k, str(path), config, dtype=dtype, device=device)
    config, sd, source = read_any(path, k.class_name, k.subfolder, config)
    config = k.config if config is None else config
    return _assign(k, sd, config, dtype=dtype, device=device, path=source, what=f"{k.what} file")


def load_unet(path, config: Optional[Mapping] = None, *, dtype: Optional[torch.dtype] = None, device=None):
    """A diffusers ``UNet2DConditionModel`` (eval) from an official diffuser file, an SD single
    file, an ldm or diffusers UNet, a diffusers folder or a Hub repo id (see ``load_model``)."""
    return load_model("unet", path, config, dtype=dtype, device=device)


def load_controlnet(path, config: Optional[Mapping] = None, *, dtype: Optional[torch.dtype] = None, device=None):
    """A diffusers ``ControlNetModel`` (eval) from an official slimmed file, an SD-webui file
    (``control_model.*``), a diffusers state dict / folder or a Hub repo id (see ``load_model``)."""
    return load_model("controlnet", path, config, dtype=dtype, device=device)


def load_vae(path, config: Optional[Mapping] = None, *, dtype: Optional[torch.dtype] = None, device=None):
    """A diffusers ``AutoencoderKL`` (eval) from an ldm VAE file (e.g. the official
    ``sd-v2-0-base-autokl.pth``), an SD single file, a diffusers folder or a Hub repo id."""
    return load_model("vae", path, config, dtype=dtype, device=device)


def convert_unet_state_dict(sd: Mapping[str, torch.Tensor], config: Optional[Mapping] = None, *, path=None):
    """Any supported UNet layout -> a checked diffusers ``UNet2DConditionModel`` state dict."""
    return convert_state_dict("unet", sd, config, path=path)


def convert_controlnet_state_dict(sd: Mapping[str, torch.Tensor], config: Optional[Mapping] = None, *, path=None):
    """Any supported ControlNet layout -> a checked diffusers ``ControlNetModel`` state dict."""
    return convert_state_dict("controlnet", sd, config, path=path)


def convert_vae_state_dict(sd: Mapping[str, torch.Tensor], config: Optional[Mapping] = None, *, path=None):
    """An ldm (or diffusers) VAE state dict -> a checked diffusers ``AutoencoderKL`` state dict."""
    return convert_state_dict("vae", sd, config, path=path)


def load_single_file_pipeline_parts(
    path, unet_config: Optional[Mapping] = None, vae_config: Optional[Mapping] = None,
    *, dtype: Optional[torch.dtype] = None, device=None,
):
    """(unet, vae) from one SD single file holding ``model.diffusion_model.*`` and
    ``first_stage_model.*`` (the text encoder, if any, is ignored). The file is read once."""
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
    unet = _assign(MODEL_KINDS["unet"], unet_sd, unet_config, dtype=dtype, device=device, path=p, what="UNet part")
    vae = _assign(MODEL_KINDS["vae"], vae_sd, vae_config, dtype=dtype, device=device, path=p, what="VAE part")
    return unet, vae
