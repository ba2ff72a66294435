"""The model cards ``prompt-free export`` writes: the prior's README.md (paper, licence, usage) and the
base folder's."""

from __future__ import annotations

from typing import Sequence

PAPER = ('Xingqian Xu, Jiayi Guo, Zhangyang Wang, Gao Huang, Irfan Essa, Humphrey Shi: "Prompt-Free Diffusion: '
         'Taking \'Text\' out of Text-to-Image Diffusion Models", CVPR 2024 (arXiv:2305.16223)')

USAGE = '''```python
import torch
from diffusers import StableDiffusionPipeline
from prompt_free import PromptFreePriorPipeline

prior = PromptFreePriorPipeline.from_pretrained("{prior}")
pipe = StableDiffusionPipeline.from_pretrained("{base}", text_encoder=None, tokenizer=None)
embeds = prior("reference.jpg")  # or a list of images with reference_weights=[...]
image = pipe(prompt_embeds=embeds.prompt_embeds, negative_prompt_embeds=embeds.negative_prompt_embeds,
             guidance_scale=2.0, num_inference_steps=50, generator=torch.Generator().manual_seed(20)).images[0]
```'''


def prior_card(seecoder: str, profile: str, base_model: str, controlnets: Sequence[str] = ()) -> str:
    """README.md of ``DIR/prior``: Hub front matter, what it is, the paper, the licence, a usage snippet."""
    extra = "".join(f"\n- `controlnets/{c}`: ControlNet '{c}' (`ControlNetModel.from_pretrained`)" for c in controlnets)
    return f"""---
license: mit
library_name: diffusers
pipeline_tag: image-to-image
tags:
- prompt-free-diffusion
- seecoder
- stable-diffusion
---

# Prompt-Free Diffusion prior: {seecoder}

SeeCoder, the Semantic Context Encoder of Prompt-Free Diffusion, as a diffusers pipeline
(`PromptFreePriorPipeline`, package `prompt-free-diffusion`): a reference image becomes the
`prompt_embeds` (148 tokens) and `negative_prompt_embeds` (SeeCoder's unconditional context) of any
Stable Diffusion 1.x pipeline, which then runs without a text encoder (ControlNet, img2img,
inpainting, schedulers, LoRAs).

Paper: {PAPER}.

Exported by `prompt-free export` from the '{profile}' profile (SeeCoder '{seecoder}'; its base model
'{base_model}' is in `../base`, without a text encoder).{extra}

## Usage

{USAGE.format(prior="pfd-export/prior", base="pfd-export/base")}

Guidance 2.0 and DDIM with 50 steps are the paper's settings. `reference_strength` (0 to 2) moves the
context between no reference and the reference; several images are mixed by weighted mean.

## Licence

The code and these SeeCoder weights: MIT, as the official Prompt-Free Diffusion release. The base
model in `../base` keeps its own licence (Stable Diffusion 1.5: CreativeML OpenRAIL-M).
"""


def base_card(base_model: str, profile: str, scheduler: str) -> str:
    """README.md of ``DIR/base``."""
    return f"""---
library_name: diffusers
tags:
- prompt-free-diffusion
- stable-diffusion
---

# {base_model}, for Prompt-Free Diffusion

The base model '{base_model}' of the '{profile}' profile as a diffusers `StableDiffusionPipeline`
folder with no text encoder and no tokenizer: its prompts are the embeddings of `../prior`
(`PromptFreePriorPipeline`). The scheduler is {scheduler} with the paper's settings (the default of
Prompt-Free Diffusion's Image Variation). No safety checker is included. The weights keep the base
model's own licence (Stable Diffusion 1.5: CreativeML OpenRAIL-M).
"""


__all__ = ["PAPER", "USAGE", "base_card", "prior_card"]
