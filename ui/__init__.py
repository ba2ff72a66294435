"""The Gradio app: one module per tab, all backed by one engine."""

from __future__ import annotations

import gradio as gr

from . import compare, control, tryon, variation
from .widgets import banner

# The tabs in display order; each module has build(engine).
TABS = (variation, control, compare, tryon)


def build_app(engine) -> gr.Blocks:
    with gr.Blocks(title="Prompt-Free Diffusion") as demo:
        gr.Markdown(
            "# Prompt-Free Diffusion\n"
            "Image generation from a reference image instead of a text prompt "
            "(SeeCoder, Xu et al., CVPR 2024)."
        )
        banner(engine)
        with gr.Tabs():
            for tab in TABS:
                tab.build(engine)
    return demo
