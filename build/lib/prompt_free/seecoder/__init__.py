"""SeeCoder, the Semantic Context Encoder of Prompt-Free Diffusion."""

from .config import (
    DecoderConfig,
    PositionEncodingConfig,
    QueryTransformerConfig,
    SeeCoderConfig,
    SwinConfig,
)
from .loading import (
    ANIME_UG_SHA256,
    build_seecoder,
    load_seecoder,
    load_seecoder_state_dict,
    load_unconditional_embedding,
    save_seecoder,
    zero_unconditional,
)
from .model import SeeCoder

__all__ = [
    "ANIME_UG_SHA256",
    "DecoderConfig",
    "PositionEncodingConfig",
    "QueryTransformerConfig",
    "SeeCoder",
    "SeeCoderConfig",
    "SwinConfig",
    "build_seecoder",
    "load_seecoder",
    "load_seecoder_state_dict",
    "load_unconditional_embedding",
    "save_seecoder",
    "zero_unconditional",
]
