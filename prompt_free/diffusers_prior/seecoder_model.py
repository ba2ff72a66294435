"""``SeeCoderModel``: our SeeCoder as a diffusers model (``ModelMixin`` + ``ConfigMixin``).

The encoder inside is ``prompt_free.seecoder.SeeCoder`` itself (the engine's module), its
``config.json`` holds the official config fields (``SeeCoderConfig.to_official_dict``), and the
unconditional context (zeros, or the anime embedding) is a buffer saved with the weights, so a
``save_pretrained`` folder is the whole prior. Official files load through
``prompt_free.seecoder.load_seecoder`` (``from_single_file``): the one key mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from ..errors import CheckpointError
from ..seecoder import SeeCoder, SeeCoderConfig, load_seecoder, load_unconditional_embedding, zero_unconditional

UNCONDITIONAL_KINDS = ("zeros", "embedding")


class SeeCoderModel(ModelMixin, ConfigMixin):
    r"""
    SeeCoder, the Semantic Context Encoder of Prompt-Free Diffusion (Xu et al., CVPR 2024): a reference
    image -> 148 context tokens that take the place of CLIP's text tokens in an SD 1.x UNet.

    Args:
        swin (`dict`, *optional*): the Swin backbone's official config fields (default: Swin-L, the release).
        decoder (`dict`, *optional*): the decoder's official config fields.
        qtransformer (`dict`, *optional*): the query transformer's official config fields.
        pa_pe_layer (`dict`, *optional*): SeeCoder-PA's position encoding (None: plain SeeCoder).
        unconditional_kind (`str`, defaults to `"zeros"`): what the `unconditional` buffer holds: `"zeros"`
            (SeeCoder, SeeCoder-PA) or `"embedding"` (a learned one, e.g. SeeCoder-Anime's `anime_ug.pth`).

    The buffer `unconditional` (1, 148, C) is the negative context of classifier-free guidance.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, swin: Optional[dict] = None, decoder: Optional[dict] = None,
                 qtransformer: Optional[dict] = None, pa_pe_layer: Optional[dict] = None,
                 unconditional_kind: str = "zeros"):
        super().__init__()
        if unconditional_kind not in UNCONDITIONAL_KINDS:
            raise CheckpointError(f"unconditional_kind must be one of {UNCONDITIONAL_KINDS}, got {unconditional_kind!r}")
        config = SeeCoderConfig() if swin is None else SeeCoderConfig.from_official_dict(
            dict(swin=swin, decoder=decoder, qtransformer=qtransformer, pa_pe_layer=pa_pe_layer))
        self.encoder = SeeCoder(config)
        self.register_buffer("unconditional", zero_unconditional(config))

    @property
    def seecoder_config(self) -> SeeCoderConfig:
        """The encoder's ``prompt_free.seecoder.SeeCoderConfig``."""
        return self.encoder.config

    def forward(self, pixel_values: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] at any size -> (B, 148, C) context (``SeeCoder.forward``)."""
        return self.encoder(pixel_values, mask)

    @classmethod
    def from_seecoder(cls, encoder: SeeCoder, unconditional: Optional[torch.Tensor] = None) -> "SeeCoderModel":
        """Wrap a loaded ``SeeCoder`` (its tensors are used, not copied) with its unconditional
        context (None: zeros)."""
        kind = "zeros" if unconditional is None or not bool(unconditional.any()) else "embedding"
        with torch.device("meta"):  # no second set of weights: the encoder is put in below
            model = cls(**encoder.config.to_official_dict(), unconditional_kind=kind)
        model.encoder = encoder
        p = next(encoder.parameters())
        uncond = zero_unconditional(encoder.config) if unconditional is None else unconditional
        expected = (1, encoder.config.num_tokens, encoder.config.out_dim)
        if tuple(uncond.shape) != expected:
            raise CheckpointError(f"the unconditional context is {tuple(uncond.shape)}, this SeeCoder's is {expected}")
        model.register_buffer("unconditional", uncond.detach().to(p.device, p.dtype).clone())
        return model.eval()

    @classmethod
    def from_single_file(cls, path: Union[str, Path], *, unconditional: Union[None, str, Path, torch.Tensor] = None,
                         dtype: Optional[torch.dtype] = None) -> "SeeCoderModel":
        """An official SeeCoder / SeeCoder-PA / SeeCoder-Anime file (``ctx.image.*`` keys, safetensors
        or a weights-only pickle), read by ``prompt_free.seecoder.load_seecoder``.

        Args:
            path: the file.
            unconditional: None (zeros: SeeCoder, SeeCoder-PA), an unconditional embedding file
                (SeeCoder-Anime's `anime_ug.pth`, (77, 768), zero-padded to 148 rows) or a (1, 148, C) tensor.
            dtype: the weights' dtype (default: float32 on the CPU), as diffusers 0.42's `from_pretrained(dtype=...)`.
        """
        encoder = load_seecoder(path, dtype=dtype)
        if isinstance(unconditional, (str, Path)):
            cfg = encoder.config
            unconditional = load_unconditional_embedding(unconditional, cfg.num_tokens, cfg.out_dim)
        return cls.from_seecoder(encoder, unconditional)


__all__ = ["SeeCoderModel"]
