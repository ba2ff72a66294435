"""Widgets shared by the tabs: banner, model pickers, sampler settings, error handling.

UI code calls the engine and tasks; it holds no model logic and never imports torch.
"""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass
from typing import Optional

import gradio as gr

from prompt_free.errors import PromptFreeError
from prompt_free.sampling import DEFAULT_SCHEDULER, SCHEDULERS

log = logging.getLogger("prompt_free.ui")

MAX_SEED = 2**31 - 1

# Slider ranges and defaults. The official demo uses 512..1536 and 50 DDIM steps; the tiny
# profile starts smaller so the offline demo answers in seconds on a CPU.
UI_DEFAULTS = {
    "real": dict(size=512, size_min=256, size_max=1536, steps=50),
    "tiny": dict(size=256, size_min=64, size_max=1536, steps=20),
}


def ui_defaults(engine) -> dict:
    return UI_DEFAULTS["tiny" if engine.registry.is_tiny else "real"]


def banner(engine) -> None:
    if engine.banner:
        gr.HTML(f'<div class="pfd-banner" role="alert"><b>&#9888; Offline demo mode.</b> {engine.banner}</div>')


def handle_errors(fn):
    """Library errors become gr.Error messages; anything unexpected is logged and reported
    briefly. The server keeps serving either way."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except PromptFreeError as e:
            raise gr.Error(str(e)) from None
        except Exception as e:  # noqa: BLE001 - last line of defence for the server
            if type(e).__name__ == "OutOfMemoryError":
                raise gr.Error("Out of GPU memory: try a smaller size or fewer images.") from None
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Unexpected error ({type(e).__name__}); details are in the server log.") from None

    return wrapper


def progress_callback(progress: Optional[gr.Progress], label: str = "Sampling"):
    if progress is None:
        return None

    def report(i: int, n: int) -> None:
        progress(i / n, desc=f"{label}: step {i}/{n}")

    return report


def preprocessor_follows_controlnet(engine, kind: gr.Dropdown, pre: gr.Dropdown, preprocessors) -> None:
    """Choosing a ControlNet type selects its default preprocessor (as the official demo)."""
    from prompt_free.tasks.control import default_preprocessor

    def on_type(name):
        try:
            value = default_preprocessor(engine, name)
        except PromptFreeError:
            return gr.update()
        return gr.update(value=value if value in preprocessors else preprocessors[0])

    kind.change(on_type, inputs=[kind], outputs=[pre], queue=False, api_visibility="private")


def pick_seed(seed, randomize: bool) -> int:
    if randomize:
        return random.randint(0, MAX_SEED)
    try:
        return int(seed)
    except (TypeError, ValueError):
        raise gr.Error(f"Seed must be a whole number, got {seed!r}.") from None


@dataclass
class SamplerControls:
    guidance: gr.Slider
    steps: gr.Slider
    width: gr.Slider
    height: gr.Slider
    seed: gr.Number
    randomize: gr.Checkbox
    num_images: gr.Slider
    scheduler: gr.Dropdown

    def inputs(self):
        return [self.guidance, self.steps, self.width, self.height, self.seed, self.randomize, self.num_images, self.scheduler]


def model_pickers(engine, *, seecoder: bool = True, base_model: bool = True):
    reg = engine.registry
    out = []
    if seecoder:
        out.append(gr.Dropdown(reg.names("seecoders"), value=reg.defaults["seecoder"], label="SeeCoder",
                               info="SeeCoder-PA keeps layout better; SeeCoder-Anime suits anime base models."))
    if base_model:
        out.append(gr.Dropdown(reg.names("base_models"), value=reg.defaults["base_model"], label="Base model",
                               info="Any SD 1.x model from checkpoints.yaml."))
    return out


def sampler_controls(engine, *, size_visible: bool = True, num_images: bool = True) -> SamplerControls:
    d = ui_defaults(engine)
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            guidance = gr.Slider(0, 10, value=2.0, step=0.05, label="Guidance", info="Official default 2.0")
            steps = gr.Slider(1, 150, value=d["steps"], step=1, label="Steps")
        with gr.Row(visible=size_visible):
            width = gr.Slider(d["size_min"], d["size_max"], value=d["size"], step=64, label="Width")
            height = gr.Slider(d["size_min"], d["size_max"], value=d["size"], step=64, label="Height")
        with gr.Row():
            seed = gr.Number(value=20, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
            randomize = gr.Checkbox(value=False, label="Randomize seed")
            n = gr.Slider(1, 8, value=1, step=1, label="Images", visible=num_images)
        scheduler = gr.Dropdown(list(SCHEDULERS), value=DEFAULT_SCHEDULER, label="Sampler",
                                info="DDIM is the paper's sampler")
    return SamplerControls(guidance, steps, width, height, seed, randomize, n, scheduler)


def format_info(info: dict) -> str:
    t = info.get("timings", {})
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in t.items())
    seeds = info.get("seeds")
    parts = []
    if seeds:
        parts.append(f"seeds {', '.join(map(str, seeds))}")
    if "width" in info:
        parts.append(f"{info['width']}x{info['height']}")
    if timing:
        parts.append(timing)
    return " · ".join(parts)


CSS = """
.pfd-banner {background: #fff3cd; color: #664d03; border: 1px solid #ffe69c; border-radius: 8px;
             padding: 10px 14px; margin-bottom: 8px;}
"""
