"""Widgets shared by the tabs: banner, model pickers, sampler settings, the preprocessor picker,
"size follows the control image", progress and info text.

UI code calls the engine and tasks; it holds no model logic and never imports torch. Slider
bounds and defaults come from ``prompt_free.settings``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

import gradio as gr

from prompt_free import detectors  # the UI's one reach into the detectors
from prompt_free.errors import PromptFreeError
from prompt_free.sampling import DEFAULT_SCHEDULER, SCHEDULERS
from prompt_free.settings import (
    FOLLOW_SIZE_HI,
    FOLLOW_SIZE_LO,
    GUIDANCE,
    NUM_IMAGES,
    SEED,
    SIZE,
    STEPS,
    UI_DEFAULTS,
    Range,
)
from prompt_free.tasks.control import MODE_AS_IS, MODE_PREPROCESS, default_preprocessor, follow_size

from .endpoint import InputGroup


def ui_defaults(engine) -> dict:
    return UI_DEFAULTS["tiny" if engine.registry.is_tiny else "real"]


def banner(engine) -> None:
    if engine.banner:
        gr.HTML(f'<div class="pfd-banner" role="alert"><b>&#9888; Offline demo mode.</b> {engine.banner}</div>')


def memory_table(engine) -> str:
    """The engine's ``memory_report()`` as a small Markdown table, with the budget."""
    from prompt_free.memory import format_size

    rows = engine.memory_report()
    used = sum(r["bytes"] for r in rows if r["where"] == "device")
    head = f"{format_size(used)} of a {format_size(engine.memory.budget)} budget on {engine.device.type}"
    if not rows:
        return f"No model loaded yet ({head})."
    lines = [head, "", "| model | kind | where | size |", "|---|---|---|---|"]
    for r in reversed(rows):  # most recently used first
        name = str(r["name"]).replace("|", "\\|")
        lines.append(f"| {name} | {r['kind'].replace('_', ' ')} | {r['where']} | {format_size(r['bytes'])} |")
    return "\n".join(lines)


def memory_panel(engine, demo: gr.Blocks) -> None:
    """"Models in memory" under the tabs: what the engine holds, refreshed on demand."""
    with gr.Accordion("Models in memory", open=False, elem_id="memory-panel"):
        table = gr.Markdown(elem_id="memory-report")
        refresh = gr.Button("Refresh", size="sm", elem_id="memory-refresh")
    refresh.click(lambda: memory_table(engine), outputs=[table], queue=False, api_visibility="private")
    demo.load(lambda: memory_table(engine), outputs=[table], queue=False, api_visibility="private")


def progress_callback(progress: Optional[gr.Progress], label: str = "Sampling"):
    if progress is None:
        return None

    def report(i: int, n: int, note: Optional[str] = None) -> None:
        # note: e.g. "compiling (once)" before the first step of a new size on the compile path
        progress(i / n, desc=f"{label}: {note}" if note else f"{label}: step {i}/{n}")

    return report


def run_buttons(label: str, prefix: str):
    """(run, stop): the tab's primary button (elem_id ``<prefix>-run``) and a Stop button next to
    it (``<prefix>-stop``); connect Stop with ``stop_cancels``."""
    with gr.Row():
        run = gr.Button(label, variant="primary", elem_id=f"{prefix}-run", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop", scale=1, min_width=80)
    return run, stop


def stop_cancels(stop: gr.Button, *events) -> None:
    """Stop cancels ``events``: a queued request is dropped, a running one stops at its next
    denoising step (ui.endpoint's cancellable generator) and frees the device."""
    stop.click(None, cancels=list(events), queue=False, api_visibility="private")


def pick_seed(seed, randomize: bool) -> int:
    if randomize:
        return random.randint(SEED.lo, SEED.hi)
    try:
        return int(seed)
    except (TypeError, ValueError):
        raise gr.Error(f"Seed must be a whole number, got {seed!r}.") from None


def _bound(x):
    """2.0 -> 2 (the slider, its API description and Gradio's range messages show '2')."""
    return int(x) if float(x).is_integer() else x


def slider(r: Range, label: str, *, value=None, lo=None, hi=None, **kwargs) -> gr.Slider:
    """A slider over the setting ``r``: ``r.lo``..``r.slider_hi`` in steps of ``r.step``, at
    ``r.default``; ``value``/``lo``/``hi`` override (the tiny profile starts smaller)."""
    return gr.Slider(_bound(r.lo if lo is None else lo), _bound(r.slider_hi if hi is None else hi),
                     value=r.default if value is None else value, step=_bound(r.step), label=label, **kwargs)


# ----------------------------------------------------------------------------- input groups
@dataclass
class ModelPickers(InputGroup):
    seecoder: gr.Dropdown
    base_model: gr.Dropdown

    def settings(self) -> dict:
        return {"base_model": self.base_model, "seecoder": self.seecoder}


@dataclass
class SamplerControls(InputGroup):
    """The sampler settings; ``width``/``height``/``num_images`` are None in tabs without them."""

    guidance: gr.Slider
    steps: gr.Slider
    width: Optional[gr.Slider]
    height: Optional[gr.Slider]
    seed: gr.Number
    randomize: gr.Checkbox
    num_images: Optional[gr.Slider]
    scheduler: gr.Dropdown

    API_NAMES = {"randomize": "randomize_seed"}

    def pick_seed(self) -> int:
        """The seed to use (of a handler's group): the one set, or a random one."""
        return pick_seed(self.seed, self.randomize)

    def settings(self, seed: int) -> dict:
        """The values (of a handler's group) as task-settings keywords, with the seed used."""
        names = ("guidance", "steps", "width", "height", "num_images", "scheduler")
        return {**{k: getattr(self, k) for k in names if getattr(self, k) is not None}, "seed": seed}


def seecoder_picker(engine) -> gr.Dropdown:
    reg = engine.registry
    return gr.Dropdown(reg.names("seecoders"), value=reg.defaults["seecoder"], label="SeeCoder",
                       info="SeeCoder-PA keeps layout better; SeeCoder-Anime suits anime base models.")


def model_pickers(engine) -> ModelPickers:
    reg = engine.registry
    seecoder = seecoder_picker(engine)
    base_model = gr.Dropdown(reg.names("base_models"), value=reg.defaults["base_model"], label="Base model",
                             info="Any SD 1.x model from checkpoints.yaml.")
    return ModelPickers(seecoder, base_model)


def sampler_controls(engine, *, size: bool = True, num_images: bool = True,
                     elem_prefix: Optional[str] = None) -> SamplerControls:
    """The sampler settings; ``elem_prefix`` gives guidance, steps, width, height and seed the
    elem_ids ``<prefix>-guidance`` ... (tests and styling)."""
    d = ui_defaults(engine)

    def ids(name):
        return {"elem_id": f"{elem_prefix}-{name}"} if elem_prefix else {}

    width = height = n = None
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            guidance = slider(GUIDANCE, "Guidance", info="Official default 2.0", **ids("guidance"))
            steps = slider(STEPS, "Steps", value=d["steps"], **ids("steps"))
        if size:
            with gr.Row():
                width = slider(SIZE, "Width", lo=d["size_min"], value=d["size"], **ids("width"))
                height = slider(SIZE, "Height", lo=d["size_min"], value=d["size"], **ids("height"))
        with gr.Row():
            seed = gr.Number(value=SEED.default, precision=0, minimum=SEED.lo, maximum=SEED.hi, label="Seed",
                             **ids("seed"))
            randomize = gr.Checkbox(value=False, label="Randomize seed")
            if num_images:
                n = slider(NUM_IMAGES, "Images")
        scheduler = gr.Dropdown(list(SCHEDULERS), value=DEFAULT_SCHEDULER, label="Sampler",
                                info="DDIM is the paper's sampler")
    return SamplerControls(guidance, steps, width, height, seed, randomize, n, scheduler)


def size_follows_image(engine, image: gr.Image, sampler: SamplerControls) -> None:
    """The width/height sliders follow an uploaded control image (the official rule; the
    offline demo stays small: the image is scaled into the default size, ratio kept)."""
    d = ui_defaults(engine)
    tiny = engine.registry.is_tiny

    def size_follows(path):
        if not path:
            return gr.update(), gr.update()
        try:
            if tiny:
                w, h = follow_size(path, lo=d["size_min"], hi=d["size"], keep_aspect=True)
            else:
                w, h = follow_size(path, lo=max(FOLLOW_SIZE_LO, d["size_min"]), hi=FOLLOW_SIZE_HI)
        except PromptFreeError:
            return gr.update(), gr.update()  # the run reports the unreadable image
        return w, h

    image.change(size_follows, inputs=[image], outputs=[sampler.width, sampler.height],
                 queue=False, api_visibility="private")


# ----------------------------------------------------------------------------- preprocessors
def preprocessor_choices():
    """(label, name) of every detector; the API takes the names."""
    return [(f"{spec.label} [{name}]", name) for name, spec in detectors.SPECS.items()]


def annotator_note(mode, name, registry=None) -> str:
    """A warning under the preprocessor when its detector weights cannot be found (in the
    local folders, or the hub cache of the registry's ``annotators:`` source)."""
    if mode != MODE_PREPROCESS or not name or name == "none":
        return ""
    try:
        if detectors.available(name, registry):
            return ""
    except Exception as e:  # noqa: BLE001 - a note, never an error
        return f"&#9888; The '{name}' detector cannot be used here ({type(e).__name__})."
    return (
        f"&#9888; The weights of the **{name}** detector were not found: put the lllyasviel/Annotators files in a "
        "folder named by `PFD_ANNOTATOR_DIR`, or run where the Hugging Face Hub is reachable. Meanwhile, upload a "
        f"ready map and choose **{MODE_AS_IS}**."
    )


def preprocessor_dropdown(engine, controlnet: str, *, elem_id: str, allow_aliases: bool = False) -> gr.Dropdown:
    """The detector picker, preset to the default preprocessor of ``controlnet``.
    ``allow_aliases``: the endpoint also takes the official demo's names (``openpose_withface``
    ...), which the task resolves (``detectors.ALIASES``), as /compare always did."""
    choices = preprocessor_choices()
    names = [n for _, n in choices]
    value = default_preprocessor(engine, controlnet)
    return gr.Dropdown(choices, value=value if value in names else names[0], label="Preprocessor",
                       elem_id=elem_id, info="Detector for 'preprocess' (default: the ControlNet's own)",
                       allow_custom_value=allow_aliases)


def connect_preprocessor(engine, kind: gr.Dropdown, mode: gr.Radio, pre: gr.Dropdown, note: gr.Markdown) -> None:
    """Choosing a ControlNet type selects its default preprocessor (as the official demo); the
    note (a Markdown under the picker, possibly made hidden) says when the chosen detector's
    weights are missing."""
    names = [n for _, n in preprocessor_choices()]

    def on_type(name):
        try:
            value = default_preprocessor(engine, name)
        except PromptFreeError:
            return gr.update()
        return gr.update(value=value if value in names else names[0])

    def show_note(mode_value, name):  # a note made hidden shows with its first warning
        text = annotator_note(mode_value, name, engine.registry)
        return gr.update(value=text, visible=True) if text else gr.update(value="")

    kind.change(on_type, inputs=[kind], outputs=[pre], queue=False, api_visibility="private")
    for trigger in (mode.change, pre.change):
        trigger(show_note, inputs=[mode, pre], outputs=[note], queue=False, api_visibility="private")


# ----------------------------------------------------------------------------- results
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
