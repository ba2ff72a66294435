"""The Gradio app: one module per tab, all backed by one engine."""

from __future__ import annotations

import importlib

import gradio as gr

from .widgets import banner

# Tab modules in display order; each has build(engine). Missing ones are skipped.
TABS = ("variation", "control", "compare", "tryon")


def build_app(engine) -> gr.Blocks:
    with gr.Blocks(title="Prompt-Free Diffusion") as demo:
        gr.Markdown(
            "# Prompt-Free Diffusion\n"
            "Image generation from a reference image instead of a text prompt "
            "(SeeCoder, Xu et al., CVPR 2024)."
        )
        banner(engine)
        with gr.Tabs():
            for name in TABS:
                try:
                    module = importlib.import_module(f"{__name__}.{name}")
                except ModuleNotFoundError as e:
                    if e.name == f"{__name__}.{name}":
                        continue
                    raise
                module.build(engine)
    return demo
