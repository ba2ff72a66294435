"""Building SeeCoders and loading official SeeCoder files (spec section b).

Official files hold ``ctx.image.{imencoder,imdecoder,qtransformer}.*`` keys (616, or 622 for
PA) including the int64 ``relative_position_index`` buffers; some tools strip ``ctx.image.``.
Our module names are the official ones, so the only mapping is the prefix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch

from ..errors import CheckpointError
from ..weights import check_keys_and_shapes, first, read_state_dict, read_tensor
from .config import SeeCoderConfig
from .model import SeeCoder, init_seecoder_weights
from timm.models.swin_transformer import get_relative_position_index

OFFICIAL_PREFIX = "ctx.image."
PARTS = ("imencoder.", "imdecoder.", "qtransformer.")
# Prefixes of other Prompt-Free Diffusion / SD files, to say what a wrong file is.
FOREIGN_PREFIXES = {
    "diffuser.": "a Prompt-Free Diffusion UNet (diffuser) file",
    "model.diffusion_model.": "a Stable Diffusion checkpoint",
    "control_model.": "a ControlNet file",
    "input_hint_block.": "a ControlNet file",
    "zero_convs.": "a ControlNet file",
    "encoder.down.": "a VAE file",
    "first_stage_model.": "a Stable Diffusion checkpoint",
    "down_blocks.": "a diffusers UNet/ControlNet file",
    "vae.": "a VAE file",
}


def strip_official_prefix(sd: Mapping[str, torch.Tensor], path=None) -> Dict[str, torch.Tensor]:
    """Official ``ctx.image.*`` keys (or already prefix-free ones) -> module keys."""
    where = f"'{path}'" if path is not None else "the state dict"
    if not sd:
        raise CheckpointError(f"{where} holds no tensors")
    out = {}
    for k, v in sd.items():
        if k.startswith(OFFICIAL_PREFIX):
            k = k[len(OFFICIAL_PREFIX):]
        out[k] = v
    if not any(k.startswith(PARTS) for k in out):
        for prefix, what in FOREIGN_PREFIXES.items():
            if any(k.startswith(prefix) for k in out):
                raise CheckpointError(
                    f"{where} is {what}, not a SeeCoder file (first keys: {first(sd.keys(), 3)})"
                )
        raise CheckpointError(
            f"{where} is not a SeeCoder file: expected keys under 'ctx.image.imencoder/imdecoder/qtransformer', "
            f"found {first(sd.keys(), 3)}"
        )
    return out


def build_seecoder(
    config: Optional[SeeCoderConfig] = None,
    *,
    seed: Optional[int] = 0,
    device=None,
    dtype: Optional[torch.dtype] = None,
) -> SeeCoder:
    """A SeeCoder with deterministic random weights (``seed``) or, with ``seed=None``, on the
    meta device with no storage at all (to be filled by ``load_state_dict(assign=True)``)."""
    with torch.device("meta"):
        model = SeeCoder(config)
    if seed is None:
        return model
    if dtype is not None:  # on the meta device: no storage yet, so no fp32 copy is ever made
        model = model.to(dtype=dtype)
    # Materialise without the default initialisers (they would be overwritten anyway).
    model = init_seecoder_weights(model.to_empty(device="cpu"), seed)
    return model.to(device=device).eval()


def expected_shapes(model: SeeCoder) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_seecoder_state_dict(
    sd: Mapping[str, torch.Tensor],
    config: Optional[SeeCoderConfig] = None,
    *,
    path=None,
    device=None,
    dtype: Optional[torch.dtype] = None,
) -> SeeCoder:
    """Make an eval SeeCoder from an official-layout state dict without copying the weights:
    the model is built on the meta device and the file's tensors are assigned to it."""
    sd = strip_official_prefix(sd, path)
    if config is None:
        try:
            config = SeeCoderConfig.from_state_dict(sd)
        except Exception as e:
            where = f"'{path}'" if path is not None else "the state dict"
            raise CheckpointError(f"{where} is not a complete SeeCoder file: {e}") from None
    model = build_seecoder(config, seed=None)
    what = "SeeCoder-PA file" if config.position_aware else "SeeCoder file"
    check_keys_and_shapes(sd, expected_shapes(model), what=what, path=path)
    _check_position_indices(sd, config, path)
    model.load_state_dict(sd, strict=True, assign=True)
    # Float weights take the requested dtype (default: as stored, but at least fp32 on CPU).
    if dtype is None:
        dtype = torch.float32 if (device is None or torch.device(device).type == "cpu") else None
    return model.to(device=device, dtype=dtype).eval()


def _check_position_indices(sd, config: SeeCoderConfig, path) -> None:
    ws = config.swin.window_size
    standard = get_relative_position_index(ws, ws)
    for k, v in sd.items():
        if k.endswith("relative_position_index") and not torch.equal(v.to(standard.dtype), standard):
            raise CheckpointError(f"'{path}': {k} is not the standard Swin relative position index")


def load_seecoder(
    path: Union[str, Path],
    config: Optional[SeeCoderConfig] = None,
    device=None,
    dtype: Optional[torch.dtype] = None,
) -> SeeCoder:
    """Load an official SeeCoder / SeeCoder-PA / SeeCoder-Anime file into an eval model.

    ``config`` defaults to the size read from the file (the official full size for released
    files); given explicitly, the file must match it exactly.
    """
    sd = read_state_dict(path)
    return load_seecoder_state_dict(sd, config, path=path, device=device, dtype=dtype)


def save_seecoder(model: SeeCoder, path: Union[str, Path]) -> None:
    """Write a SeeCoder in the official file layout (``ctx.image.*``, safetensors)."""
    from safetensors.torch import save_file

    sd = {OFFICIAL_PREFIX + k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"format": "pt"})


# --------------------------------------------------------------------- unconditional embeddings
ANIME_UG_SHA256 = "84efc021a807c3ebf15dfb8bbf903e5daa43ebaba6b13adac02184665fec2f07"


def zero_unconditional(config: SeeCoderConfig, dtype=torch.float32, device=None) -> torch.Tensor:
    """SeeCoder / SeeCoder-PA: the unconditional context is all zeros (1, 148, C)."""
    return torch.zeros(1, config.num_tokens, config.out_dim, dtype=dtype, device=device)


def load_unconditional_embedding(
    path: Union[str, Path],
    num_tokens: int = 148,
    dim: Optional[int] = None,
    *,
    sha256: Optional[str] = None,
) -> torch.Tensor:
    """An unconditional context file (e.g. the official anime ``anime_ug.pth``, (77, 768) fp16
    pickled on CUDA) -> (1, num_tokens, C) float32, zero-padded after its rows (spec c)."""
    if sha256:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else None
        if digest is not None and digest != sha256:
            raise CheckpointError(f"'{path}' has sha256 {digest[:12]}..., expected {sha256[:12]}...: wrong or corrupt file")
    t = read_tensor(path)
    if t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 2:
        raise CheckpointError(f"'{path}' holds a tensor of shape {tuple(t.shape)}, expected (tokens, channels)")
    if dim is not None and t.shape[1] != dim:
        raise CheckpointError(f"'{path}' has width {t.shape[1]}, the SeeCoder outputs {dim}")
    if t.shape[0] > num_tokens:
        raise CheckpointError(f"'{path}' has {t.shape[0]} rows, more than the {num_tokens} context tokens")
    out = torch.zeros(1, num_tokens, t.shape[1], dtype=torch.float32)
    out[0, : t.shape[0]] = t.float()
    return out
