"""Widgets shared by the tabs: banner, model pickers, sampler settings, the preprocessor picker,
"size follows the control image", progress and info text.

UI code calls the engine and tasks; it holds no model logic and never imports torch. Slider
bounds and defaults come from ``prompt_free.settings``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gradio as gr

from prompt_free import detectors  # the UI's one reach into the detectors
from prompt_free.blocks import ALL, PRESET_LABELS
from prompt_free.errors import PromptFreeError
from prompt_free.sampling import DEFAULT_SCHEDULER, SCHEDULERS
from prompt_free.lora_entries import NO_LORA
from prompt_free.settings import (
    FOLLOW_SIZE_HI,
    FOLLOW_SIZE_LO,
    GUIDANCE,
    LORA_SCALE,
    MAX_LORAS,
    NUM_IMAGES,
    SEED,
    SIZE,
    STEPS,
    UI_DEFAULTS,
)
from prompt_free.tasks.common import SamplerSettings
from prompt_free.tasks.control import MODE_AS_IS, MODE_PREPROCESS, default_preprocessor, follow_size

from .endpoint import InputGroup
from .fields import setting_notes, slider

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"  # a checkout's; not installed (no examples then)


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


def results_gallery(label: str, **kwargs) -> gr.Gallery:
    """A gallery of results: PNGs (their metadata kept), whole pictures (not cropped to squares)."""
    return gr.Gallery(label=label, format="png", object_fit="contain", **{"columns": 2, **kwargs})


def run_buttons(label: str, prefix: str):
    """(run, stop): the tab's primary button (elem_id ``<prefix>-run``) and a Stop button next to
    it (``<prefix>-stop``); connect Stop with ``stop_cancels``. Every tab puts them right under
    its inputs, above the settings, so they are in view with the results beside them. The run
    event gives ``show_progress_on=`` its result outputs: Seed is an input the run writes back, and
    an "Error" badge on it would stay after a refused run."""
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


# ----------------------------------------------------------------------------- input groups
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

    def contribute(self, request) -> None:
        request.settings.update(self.settings(self.pick_seed()))


@dataclass
class LoraPickers(InputGroup):
    """Up to ``MAX_LORAS`` LoRAs, each a name (``NO_LORA``: none) and a scale. Public names:
    ``lora_1``, ``lora_1_scale``, ``lora_2``, ``lora_2_scale``; add the group as the last part of
    an endpoint, so calls that leave them out get no LoRA."""

    lora_1: gr.Dropdown
    lora_1_scale: gr.Slider
    lora_2: gr.Dropdown
    lora_2_scale: gr.Slider

    def settings(self) -> dict:
        """``{"loras": ((name, scale), ...)}`` (of a handler's group) for any task's settings."""
        pairs = ((self.lora_1, self.lora_1_scale), (self.lora_2, self.lora_2_scale))
        return {"loras": tuple((name, scale) for name, scale in pairs if name and name != NO_LORA)}


def lora_pickers(engine, elem_prefix: str, sampler: Optional["SamplerControls"] = None) -> LoraPickers:
    """The LoRA picker of a tab (elem_ids ``<prefix>-lora-1``, ``<prefix>-lora-1-scale`` ...) and,
    under it, the chosen LoRAs' notes (``<prefix>-lora-note``: the sampler a few-step LoRA sets,
    "not validated with SeeCoder context"). With the tab's ``sampler`` controls, choosing a LoRA
    whose entry carries sampler settings puts them in those controls, like the Speed choice
    (they stay editable)."""
    assert MAX_LORAS == 2, "LoraPickers has two slots"
    names = engine.registry.names("loras")
    info = ("LoRAs from checkpoints.yaml (`loras:`), applied to the base model for this run only" if names
            else "No LoRA is defined: add files under `loras:` in checkpoints.yaml")
    parts = []
    with gr.Accordion("LoRA", open=False, elem_id=f"{elem_prefix}-lora"):
        for i in (1, 2):
            with gr.Row():
                # Custom values reach the task, whose error names the known LoRAs.
                parts.append(gr.Dropdown([NO_LORA, *names], value=NO_LORA, label=f"LoRA {i}", info=info if i == 1 else None,
                                         allow_custom_value=True, elem_id=f"{elem_prefix}-lora-{i}", scale=3))
                parts.append(slider(LORA_SCALE, f"LoRA {i} scale", elem_id=f"{elem_prefix}-lora-{i}-scale", scale=2))
        note = gr.Markdown(elem_id=f"{elem_prefix}-lora-note")
    pickers = LoraPickers(*parts)
    connect_lora_notes(engine, pickers, note, sampler)
    return pickers


def lora_entry(engine, name):
    """The registry entry of a picked LoRA, or None (no LoRA, or a name the run will refuse)."""
    if not name or name == NO_LORA or name not in engine.registry.names("loras"):
        return None
    return engine.registry.entry("loras", name)


def lora_notes(engine, *names) -> str:
    """The notes of the picked LoRAs (Markdown; "" when none has one)."""
    lines = []
    for name in names:
        entry = lora_entry(engine, name)
        note = entry.lora_note() if entry is not None else ""
        if note:
            lines.append(("&#9888; " if not entry.validated else "") + note + ".")
    return "\n\n".join(lines)


def connect_lora_notes(engine, pickers: LoraPickers, note: gr.Markdown, sampler: Optional["SamplerControls"]) -> None:
    picks = [pickers.lora_1, pickers.lora_2]
    for pick in picks:  # any change (also from code) keeps the note true
        pick.change(lambda a, b: lora_notes(engine, a, b), inputs=picks, outputs=[note], queue=False,
                    api_visibility="private")
    if sampler is None:
        return
    targets = (("scheduler", sampler.scheduler), ("steps", sampler.steps), ("guidance", sampler.guidance))

    def choose(name):  # a person's choice only (.input): a PNG's recorded settings are not overwritten
        entry = lora_entry(engine, name)
        preset = entry.sampler_preset if entry is not None else {}
        return [gr.update(value=preset[key]) if key in preset else gr.update() for key, _ in targets]

    for pick in picks:
        pick.input(choose, inputs=[pick], outputs=[c for _, c in targets], queue=False, api_visibility="private")


# The "Speed" choice of every tab's sampler settings: (scheduler, steps) it puts in the controls,
# which stay editable. UI only: the endpoints take the steps and the sampler as before.
SPEED_PRESETS = {
    "Paper": (DEFAULT_SCHEDULER, int(STEPS.default)),  # the paper's 50 DDIM steps
    "Quick": ("DPM++ 2M Karras", 20),  # DPM-Solver++ 2M with Karras sigmas: fewer steps for a close picture
}


def preset_of(scheduler: str, steps: int) -> Optional[str]:
    """The Speed preset that is exactly ``scheduler`` and ``steps``, or None (custom)."""
    return next((name for name, pair in SPEED_PRESETS.items() if pair == (scheduler, int(steps))), None)


def speed_preset(steps: gr.Slider, scheduler: gr.Dropdown, **kwargs) -> gr.Radio:
    """The "Speed" radio: choosing a preset sets ``steps`` and ``scheduler`` (``SPEED_PRESETS``). It
    starts at the preset the controls start at, or at none (the offline demo's fewer steps)."""
    speed = gr.Radio(list(SPEED_PRESETS), value=preset_of(scheduler.value, steps.value), label="Speed",
                     info="Paper: DDIM, 50 steps (the paper's). Quick: DPM++ 2M Karras, 20 steps. Both stay editable.",
                     elem_classes=["pfd-speed"], **kwargs)

    def choose(name):
        if name not in SPEED_PRESETS:
            return gr.update(), gr.update()
        sampler, n = SPEED_PRESETS[name]
        return gr.update(value=n), gr.update(value=sampler)

    speed.input(choose, inputs=[speed], outputs=[steps, scheduler], queue=False, api_visibility="private")
    return speed


def sampler_controls(engine, *, size: bool = True, num_images: bool = True,
                     elem_prefix: Optional[str] = None) -> SamplerControls:
    """The sampler settings; ``elem_prefix`` gives guidance, steps, width, height and seed the
    elem_ids ``<prefix>-guidance`` ... (tests and styling)."""
    d = ui_defaults(engine)

    def ids(name):
        return {"elem_id": f"{elem_prefix}-{name}"} if elem_prefix else {}

    width = height = n = None
    with gr.Accordion("Settings", open=True):
        speed_row = gr.Row()
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
                                info="DDIM is the paper's sampler", **ids("scheduler"))
        with speed_row:  # shown above the controls it sets
            speed_preset(steps, scheduler, **ids("speed"))
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
def format_info(info: dict, settings_type=None) -> str:
    """A run's info line: seeds, size, LoRAs, the notes of the declared settings it used at a
    value that is not neutral (``settings_type``'s; quick mode, strength), prompt, blocks, timings."""
    t = info.get("timings", {})
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in t.items())
    seeds = info.get("seeds")
    parts = []
    if seeds:
        parts.append(f"seeds {', '.join(map(str, seeds))}")
    if "width" in info:
        parts.append(f"{info['width']}x{info['height']}")
    loras = info.get("loras")
    if loras:
        parts.append("LoRA " + ", ".join(f"{name} x{scale:g}" for name, scale in loras))
    parts += setting_notes(info, settings_type or SamplerSettings)  # never silent: quick mode says approximate
    parts += reference_notes(info)
    if timing:
        parts.append(timing)
    return " · ".join(parts)


def reference_notes(info: dict) -> list:
    """What differs from the plain reference conditioning besides its strength: prompt, blocks."""
    notes = []
    if info.get("prompt") and info.get("prompt_mode"):
        weight = info.get("prompt_weight")
        notes.append(f"prompt ({info['prompt_mode']}" + (f", weight {weight:g})" if weight not in (None, 1.0) else ")"))
    if info.get("blocks") not in (None, ALL):
        notes.append(f"reference in the {PRESET_LABELS[info['blocks']].replace(' only', '')} blocks only")
    if info.get("balance_bias") is not None:  # the balance's calibrated text bias (``prompt_free.balance``)
        notes.append(f"text bias {info['balance_bias']}")
    return notes


CSS = """
.pfd-banner {background: #fff3cd; color: #664d03; border: 1px solid #ffe69c; border-radius: 8px;
             padding: 10px 14px; margin-bottom: 8px;}
"""


# ----------------------------------------------------------------------------- settings from a PNG
def recorded_values(record: dict) -> dict:
    """The control values a PNG's record gives a tab, by settings field name: its settings
    (None left out), the models it used, and ``randomize`` off (so the recorded seed is used)."""
    values = {k: v for k, v in (record.get("settings") or {}).items() if v is not None and not isinstance(v, dict)}
    for key in ("seecoder", "base_model"):
        model = (record.get("models") or {}).get(key) or {}
        if key not in values and model.get("name"):
            values[key] = model["name"]
    values["randomize"] = False
    return values


def settings_from_png(*groups: InputGroup, fields=None, extra_outputs=(), extra=None, elem_id: str) -> gr.File:
    """"Load settings from a PNG": an upload that fills ``groups``' controls (fields named as the
    settings dataclass's, e.g. ``SamplerControls``, ``ModelPickers``) from a PNG the app or the CLI
    wrote (``prompt_free.metadata``). ``extra(record) -> {component: value}`` fills
    ``extra_outputs`` too (a tab's own controls). A control whose field the record lacks keeps
    its value; images are not filled (the record has their names and hashes, not their pixels).
    ``fields``: single components by settings field name (e.g. ``{"max_side": slider}``)."""
    from prompt_free import metadata

    targets = [item for g in groups for item in g.items()]
    targets += list((fields or {}).items())
    with gr.Accordion("Load settings from a PNG", open=False):
        upload = gr.File(label="A PNG made by this app or `prompt-free`", file_types=[".png"], type="filepath",
                         elem_id=elem_id)
        note = gr.Markdown(elem_id=f"{elem_id}-note")
    outputs = [c for _, c in targets] + list(extra_outputs)

    def fill(path):
        skip = [gr.update() for _ in outputs]
        if not path:
            return [*skip, ""]
        try:
            record = metadata.read(path)
        except PromptFreeError as e:
            return [*skip, f"&#9888; {e}"]
        values = recorded_values(record)
        updates = [gr.update(value=values[name]) if name in values else gr.update() for name, _ in targets]
        more = extra(record) if extra else {}
        updates += [gr.update(value=more[c]) if c in more else gr.update() for c in extra_outputs]
        recorded = [record.get("call") or {}, record.get("settings") or {}]  # image settings: the reference mask
        inputs = [f"'{v['name']}'" for v in _input_records(recorded) if v.get("name")]
        text = f"Settings loaded from a **{record.get('task', '?').replace('_', ' ')}** picture (seed {record.get('seed', values.get('seed'))})."
        if inputs:
            text += f" Upload its images again: {', '.join(inputs)}."
        return [*updates, text]

    upload.upload(fill, inputs=[upload], outputs=[*outputs, note], queue=False, api_visibility="private")
    return upload


def _input_records(value):
    """The image-input records of a recorded call (files by name), in order."""
    if isinstance(value, dict):
        if value.get("input"):
            yield value
            return
        for v in value.values():
            yield from _input_records(v)
    elif isinstance(value, list):
        for v in value:
            yield from _input_records(v)
