"""The CLIP text encoder and tokenizer of a base model, for the text-conditioned baselines.

Prompt-Free generation never needs text; the comparison tab's baselines (Dual-ControlNet,
IP-Adapter) do. The encoder is loaded lazily through the engine's cache (``engine.cached``), so
it costs nothing until a baseline runs, and is loaded once per source.

Where it comes from:
* diffusers base models: the repo's (or folder's) ``text_encoder`` / ``tokenizer`` subfolders;
* single-file and official-UNet base models: ``openai/clip-vit-large-patch14`` (SD 1.x's encoder);
* the tiny profile: ``tiny.tiny_text_encoder()`` and a small byte-level BPE tokenizer built in
  memory (no file, no download), with the CLIP tokenizer's rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch

from .errors import InvalidSettingError, ModelUnavailableError
from .registry import Source
from . import settings
from .settings import hub_offline

SD_CLIP_REPO = "openai/clip-vit-large-patch14"
TINY_TEXT_SEED = 4
TINY_VOCAB_SIZE = 1000  # tiny.TINY_CLIP_TEXT_CONFIG["vocab_size"]
# Letters whose pairs become BPE merges in the tiny vocabulary (English letter frequency order).
_TINY_MERGE_LETTERS = "etaoinshrdlucmfwypvbgkjqxz"


@dataclass
class TextEncoder:
    """A tokenizer and a CLIP text model placed on the engine's device; it runs as the
    engine's device work (``Engine.on_device``)."""

    tokenizer: object
    model: torch.nn.Module
    source: str
    engine: object = field(repr=False, metadata={"owned": False})  # runs it; not part of it

    @property
    def max_length(self) -> int:
        return int(min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def token_ids(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, max_length) ids: BOS, tokens, EOS, padded (and truncated) like Stable Diffusion."""
        out = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt",
        )
        return out["input_ids"]

    def check_length(self, prompt: str, what: str = "prompt") -> str:
        """``prompt`` when its tokens fit the encoder's window (77 with the start and end
        tokens), else ``InvalidSettingError`` with the count: a longer prompt is refused, not
        silently cut (the words past the limit would have no effect)."""
        n = len(self.tokenizer(prompt, truncation=False, verbose=False)["input_ids"])
        if n > self.max_length:
            raise InvalidSettingError(
                f"{what} is too long: {n - 2} tokens, and the CLIP text encoder takes at most {self.max_length - 2} "
                f"({self.max_length} with its start and end tokens). Shorten it."
            )
        return prompt

    def encode(self, prompts: Union[str, Sequence[str]]) -> torch.Tensor:
        """Prompt(s) -> (B, 77, C) last hidden states (SD 1.x's text conditioning)."""
        if isinstance(prompts, (list, tuple)):
            prompts = [check_prompt(p) for p in prompts]
        else:
            prompts = [check_prompt(prompts)]
        ids = self.token_ids(prompts)
        model = self.model
        return self.engine.on_device(lambda: model(ids.to(model.device), return_dict=True).last_hidden_state)


def check_prompt(prompt, what: str = "prompt") -> str:
    if prompt is None:
        return ""
    if not isinstance(prompt, str):
        raise InvalidSettingError(f"{what} must be text, got {type(prompt).__name__}")
    limit = settings.MAX_PROMPT_CHARS
    if len(prompt) > limit:
        raise InvalidSettingError(f"{what} is too long ({len(prompt)} characters; the limit is {limit})")
    return prompt


# --------------------------------------------------------------------------------- tiny tokenizer
def tiny_vocab(size: int = TINY_VOCAB_SIZE) -> Tuple[dict, List[Tuple[str, str]]]:
    """A deterministic byte-level BPE vocabulary of exactly ``size`` entries in the CLIP
    tokenizer's format: every byte symbol alone and as word end (``</w>``), merges of frequent
    letter pairs to fill up, then ``<|startoftext|>`` (size-2) and ``<|endoftext|>`` (size-1)
    last, as in CLIP. Any text can be tokenised."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = list(alphabet) + [c + "</w>" for c in alphabet]
    if size < len(tokens) + 2:
        raise ValueError(f"a byte-level vocabulary needs at least {len(tokens) + 2} entries, got {size}")
    merges = []
    pairs = ((a, b + end) for a in _TINY_MERGE_LETTERS for b in _TINY_MERGE_LETTERS for end in ("", "</w>"))
    for a, b in pairs:
        if len(tokens) >= size - 2:
            break
        merges.append((a, b))
        tokens.append(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE, max_length: int = 77):
    """The tiny profile's CLIP tokenizer, built in memory (no files, no download)."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocab(vocab_size)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


# --------------------------------------------------------------------------------- loading
def text_encoder_location(entry) -> Optional[Tuple[Source, str, str]]:
    """(source, text encoder subfolder, tokenizer subfolder) of a base-model entry; None for a
    tiny one. The subfolders are full paths inside the source ("" for a repo's root)."""
    if entry.tiny is not None:
        return None
    if entry.format != "diffusers":
        return (Source(repo=SD_CLIP_REPO), "", "")
    src = entry.sources[0]
    prefix = f"{src.subfolder}/" if src.subfolder else ""
    return (src, prefix + "text_encoder", prefix + "tokenizer")


def text_encoder_source(engine, base_model: str) -> Tuple[str, Optional[str], Optional[str], Optional[str]]:
    """(location, text encoder subfolder, tokenizer subfolder, revision) for a base model, or
    ("tiny", None, None, None). Raises UnknownModelError for an unknown base model."""
    entry = engine.registry.entry("base_models", base_model)
    found = text_encoder_location(entry)
    if found is None:
        return ("random-sd15" if entry.full_random else "tiny", None, None, None)
    src, te_sub, tok_sub = found
    location = str(src.path) if src.path is not None else src.repo
    return (location, te_sub or None, tok_sub or None, src.revision)


def text_encoder(engine, base_model: str) -> TextEncoder:
    """The (cached) text encoder of ``base_model``; loaded on first use only."""
    location, te_sub, tok_sub, revision = text_encoder_source(engine, base_model)
    key = ("text_encoder", location, te_sub, revision)
    return engine.cached(key, lambda: _build(engine, location, te_sub, tok_sub, revision))


def encode_prompt(engine, base_model: str, prompt: str) -> torch.Tensor:
    """(1, 77, C) text embedding of ``prompt`` with ``base_model``'s CLIP text encoder."""
    return text_encoder(engine, base_model).encode(prompt)


def _build(engine, location, te_sub, tok_sub, revision) -> TextEncoder:
    if location in ("tiny", "random-sd15"):
        from . import full_random, tiny

        model = (tiny.tiny_text_encoder(TINY_TEXT_SEED) if location == "tiny"
                 else full_random.full_text_encoder(TINY_TEXT_SEED))
        tokenizer = tiny_tokenizer(model.config.vocab_size, model.config.max_position_embeddings)
        return TextEncoder(tokenizer, engine.place(model), location, engine)
    from transformers import CLIPTextModel, CLIPTokenizer

    local_only = not engine.allow_download or hub_offline()
    where = f"'{location}'" + (f" ({te_sub})" if te_sub else "")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(location, subfolder=tok_sub or "", revision=revision, local_files_only=local_only)
        model = CLIPTextModel.from_pretrained(location, subfolder=te_sub or "", revision=revision, local_files_only=local_only)
    except (OSError, EnvironmentError, ValueError) as e:
        raise ModelUnavailableError(
            f"the CLIP text encoder {where} needed by the text-based baselines is not available: it is not in the "
            f"local cache and could not be downloaded ({str(e).splitlines()[0][:160]}). Download it where the "
            "Hugging Face Hub is reachable, or switch the text-based columns off."
        ) from None
    return TextEncoder(tokenizer, engine.place(model), where, engine)
