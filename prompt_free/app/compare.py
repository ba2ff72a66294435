"""Comparison tab: Prompt-Free side by side with the text-based alternatives, in one click.

Same reference, structure image, ControlNet, base model, seed and settings for every column:
(1) Prompt-Free (SeeCoder + structure ControlNet), (2) Dual-ControlNet (shuffle content
ControlNet + structure ControlNet + CLIP text), (3) IP-Adapter (only when configured), and
optionally (4) Prompt-Free + text (concat): column 1 with the prompt's CLIP tokens added.

API ``/compare``: its parameters are pinned in ``tests/pins/api.json`` (``gradio_client``'s
``view_api()`` lists them with their types).
outputs: prompt_free_image, dual_controlnet_image, ip_adapter_image, prompt_free_stats,
    dual_controlnet_stats, ip_adapter_stats, differences (markdown), side_by_side (file),
    maps (gallery: structure map, shuffled reference), seed used. The optional fourth column is
    in the side-by-side download and the differences table; the tab shows it from a State output
    (no API output), so the endpoint's outputs are the ten they always were.
A switched-off column returns no image and "switched off".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import gradio as gr
from gradio import processing_utils

from prompt_free.catalog import spec as task_spec
from prompt_free.settings import CONTENT_SCALE, IP_ADAPTER_SCALE, PROMPT_WEIGHT
from prompt_free.tasks.compare import (
    ALL_METHODS,
    DUAL_CONTROLNET,
    IP_ADAPTER,
    METHOD_LABELS,
    METHODS,
    PROMPT_FREE,
    PROMPT_FREE_TEXT,
    CompareSettings,
    differences,
    ip_adapter_names,
)
from prompt_free.tasks.control import MODE_AS_IS, MODE_PREPROCESS, MODES, controlnet_choices
from prompt_free.tasks.fields import REFERENCE

from .endpoint import InputGroup
from .fields import appended_section, last_section, section_controls, slider
from .source_mask import paint_on
from .model_pickers import model_pickers
from .previews import live_previews
from .task_endpoint import ToCall, task_endpoint
from .uploads import image_input
from .widgets import (
    EXAMPLES,
    connect_preprocessor,
    lora_pickers,
    preprocessor_dropdown,
    results_gallery,
    run_buttons,
    sampler_controls,
    settings_from_png,
    size_follows_image,
    stop_cancels,
)

ELEM = {PROMPT_FREE: "prompt-free", DUAL_CONTROLNET: "dual", IP_ADAPTER: "ip", PROMPT_FREE_TEXT: "prompt-free-text"}
OFF = "*switched off*"
IP_NOT_CONFIGURED = (
    "IP-Adapter column: *not configured*. Add an entry under `ip_adapters:` in checkpoints.yaml "
    "(e.g. h94/IP-Adapter `models/ip-adapter_sd15.safetensors`) to compare with it."
)
def _gib(n) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def column_stats(col) -> str:
    """'**wall 1.23 s** · peak GPU memory 2.10 GiB' and the parts of the wall time."""
    t = dict(col.timings)
    wall = t.pop("wall", 0.0)
    mem = _gib(col.peak_memory) if col.peak_memory is not None else "n/a on CPU"
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in t.items())
    return f"**wall {wall:.2f} s** · peak GPU memory {mem}" + (f"  \n<small>{parts}</small>" if parts else "")


def differences_table(result) -> str:
    rows = differences(result)
    if not rows:
        return ""
    head = ["method", "conditioning", "controlnets", "text encoder", "image encoder"]
    titles = ["Method", "Content comes from", "ControlNets", "Text encoder", "Image encoder"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[h]).replace("|", "\\|") for h in head) + " |")
    info = result.info
    lines.append("")
    lines.append(
        f"Same for every column: seed {info['seed']}, {info['width']}x{info['height']}, {info['steps']} steps, "
        f"guidance {info['guidance']:g}, {info['scheduler']}, base model {info['base_model']}, structure ControlNet "
        f"**{info['controlnet']}** ({'preprocessed' if info['mode'] == MODE_PREPROCESS else 'as-is'}); the UNet, VAE and "
        "structure ControlNet are the same loaded objects."
    )
    return "\n".join(lines)


def _save_side_by_side(image, seed, cache_dir: str):
    """The side-by-side PNG for download, written into Gradio's cache (where the download's
    gr.File serves it from and ``delete_cache`` removes it), never elsewhere."""
    if image is None:
        return None
    return processing_utils.save_pil_to_cache(image, cache_dir, name=f"prompt-free-comparison-seed{seed}", format="png")


@dataclass
class StructureInputs(InputGroup):
    image: gr.Image
    kind: gr.Dropdown
    mode: gr.Radio
    preprocessor: gr.Dropdown

    API_NAMES = {"image": "structure_image", "kind": "structure_controlnet", "mode": "structure_mode"}

    def contribute(self, request) -> None:
        request.call.update(structure=self.image, controlnet=self.kind, mode=self.mode, preprocessor=self.preprocessor)


@dataclass
class ColumnSwitches(InputGroup):
    prompt_free: gr.Checkbox
    dual_controlnet: gr.Checkbox
    ip_adapter: gr.Checkbox

    API_NAMES = {f: f + "_column" for f in ("prompt_free", "dual_controlnet", "ip_adapter")}

    def methods(self) -> list:
        on = {PROMPT_FREE: self.prompt_free, DUAL_CONTROLNET: self.dual_controlnet, IP_ADAPTER: self.ip_adapter}
        return [m for m in METHODS if on[m]]

    def contribute(self, request) -> None:
        request.settings["methods"] = tuple(self.methods())


@dataclass
class BaselineInputs(InputGroup):
    """Settings of the text-based columns."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    content_scale: gr.Slider
    ip_adapter_scale: gr.Slider

    def settings(self) -> dict:
        return {"prompt": self.prompt or "", "negative_prompt": self.negative_prompt or "",
                "content_scale": self.content_scale, "ip_adapter_scale": self.ip_adapter_scale}


@dataclass
class TextColumnInputs(InputGroup):
    """The optional Prompt-Free + text column and its text weight."""

    prompt_free_text: gr.Checkbox
    prompt_weight: gr.Slider

    API_NAMES = {"prompt_free_text": "prompt_free_text_column"}

    def contribute(self, request) -> None:
        if self.prompt_free_text:
            request.settings["methods"] = (*request.settings.get("methods", ()), PROMPT_FREE_TEXT)
        request.settings["prompt_weight"] = self.prompt_weight


@dataclass
class CompareOutputs:
    images: dict  # method -> gr.Image
    stats: dict  # method -> gr.Markdown
    differences: gr.Markdown
    download: gr.File
    maps: gr.Gallery

    def components(self) -> list:
        """The outputs before the seed (their order is the API's, unchanged)."""
        return [*(self.images[m] for m in METHODS), *(self.stats[m] for m in METHODS), self.differences,
                self.download, self.maps]

    def optional_components(self) -> list:
        """The optional columns' image and stats components, in OPTIONAL order."""
        return [c for m in OPTIONAL for c in (self.images[m], self.stats[m])]


def _structure(engine, choices, default_type: str) -> tuple:
    """The reference and structure images, the structure ControlNet and its preprocessor."""
    with gr.Row():
        reference = image_input(label="Reference image (content, style)",
                                sources=["upload", "clipboard"], height=240, elem_id="compare-reference")
        image = image_input(label="Structure image", sources=["upload", "clipboard"],
                            height=240, elem_id="compare-structure")
    with gr.Row():
        kind = gr.Dropdown(choices, value=default_type, label="Structure ControlNet", elem_id="compare-type")
        mode = gr.Radio(list(MODES), value=MODE_AS_IS, label="Structure image is", elem_id="compare-mode",
                        info="use as-is: a ready map; preprocess: a picture to detect it from")
        pre = preprocessor_dropdown(engine, default_type, elem_id="compare-preprocessor", allow_aliases=True)
    note = gr.Markdown(elem_id="compare-note", visible=False)  # takes no room until it warns
    connect_preprocessor(engine, kind, mode, pre, note)
    return reference, StructureInputs(image, kind, mode, pre)


def _columns_and_baselines(ip_names) -> tuple:
    with gr.Group():
        gr.Markdown("**Columns** (a switched-off column does no work)")
        with gr.Row():
            columns = ColumnSwitches(
                gr.Checkbox(True, label=METHOD_LABELS[PROMPT_FREE], elem_id="compare-use-prompt-free"),
                gr.Checkbox(True, label=METHOD_LABELS[DUAL_CONTROLNET], elem_id="compare-use-dual"),
                gr.Checkbox(bool(ip_names), label=METHOD_LABELS[IP_ADAPTER], interactive=bool(ip_names),
                            elem_id="compare-use-ip"),
            )
        if not ip_names:
            gr.Markdown(IP_NOT_CONFIGURED, elem_id="compare-ip-note")
    with gr.Accordion("Baseline settings (text-based columns)", open=False):
        prompt = gr.Textbox("", label="Prompt (optional)", placeholder="empty: no text, as Prompt-Free",
                            elem_id="compare-prompt")
        negative = gr.Textbox("", label="Negative prompt", elem_id="compare-negative",
                              info="The unconditional half of classifier-free guidance")
        with gr.Row():
            content_scale = slider(CONTENT_SCALE, "Content ControlNet scale")
            ip_scale = slider(IP_ADAPTER_SCALE, "IP-Adapter scale", visible=bool(ip_names))
    return columns, BaselineInputs(prompt, negative, content_scale, ip_scale)


def _text_column_inputs() -> tuple:
    """The Prompt-Free columns' reference strength (declared), then the optional text column."""
    with gr.Group():
        strength = section_controls(CompareSettings, REFERENCE, "compare", exclude=("prompt_mode", "prompt_weight", "blocks"))
        with gr.Row():
            use = gr.Checkbox(False, label=METHOD_LABELS[PROMPT_FREE_TEXT], elem_id="compare-use-prompt-free-text",
                              info="Prompt-Free with the prompt's CLIP tokens concatenated (needs a prompt)")
            weight = slider(PROMPT_WEIGHT, "Text weight (that column)", elem_id="compare-prompt-weight")
    return strength, TextColumnInputs(use, weight)


OPTIONAL = tuple(m for m in ALL_METHODS if m not in METHODS)


def _outputs(ip_names) -> CompareOutputs:
    images, stats = {}, {}
    with gr.Row(equal_height=True):
        for m in ALL_METHODS:
            with gr.Column(visible=(m != IP_ADAPTER or bool(ip_names)), min_width=200):
                images[m] = gr.Image(type="pil", format="png", label=METHOD_LABELS[m], interactive=False,
                                     elem_id=f"compare-image-{ELEM[m]}")
                stats[m] = gr.Markdown(elem_id=f"compare-stats-{ELEM[m]}")
    diff = gr.Markdown(elem_id="compare-differences")
    with gr.Row():
        download = gr.File(label="Download: all results side by side (PNG)", elem_id="compare-download")
        maps = results_gallery("Maps used: structure, shuffled reference", height=200,
                          elem_id="compare-maps")
    return CompareOutputs(images, stats, diff, download, maps)


def build(engine) -> None:
    choices = controlnet_choices(engine)
    if not choices:
        return  # no structure ControlNet in checkpoints.yaml: no tab
    default_type = engine.defaults.get("controlnet") if engine.defaults.get("controlnet") in choices else choices[0]
    ip_names = ip_adapter_names(engine)
    content_cn = engine.defaults.get("content_controlnet") or "shuffle"

    with gr.Tab(task_spec("compare").label, id="compare"):
        gr.Markdown(
            "**Prompt-Free vs. the alternatives, in one click.** Every column uses the same reference image, "
            "structure image and ControlNet, base model, seed and settings; only how the reference's content "
            f"reaches the model differs: **Prompt-Free** uses SeeCoder; **Dual-ControlNet** uses a *{content_cn}* "
            "content ControlNet on the reference plus the CLIP text encoder (prompt empty by default)"
            + ("; **IP-Adapter** adds image tokens from a CLIP image encoder." if ip_names else ".")
        )
        with gr.Row():
            with gr.Column():
                reference, structure = _structure(engine, choices, default_type)
                run, stop = run_buttons("Compare", "compare")
                _examples(reference, structure, choices)  # near the inputs (the results are below)
                models = model_pickers(engine)
                columns, baselines = _columns_and_baselines(ip_names)
                strength, text_column = _text_column_inputs()
                controls = sampler_controls(engine, num_images=False, elem_prefix="compare")
                loras = lora_pickers(engine, "compare", controls)
                last = last_section(CompareSettings, "compare")
                appended = appended_section(CompareSettings, "compare", init_image=True,
                                            inside=paint_on(reference, "compare"))  # settings added since the API was published
                live = live_previews(engine, "compare", outputs=0, show=_column_preview)  # outputs: below
                settings_from_png(models, controls, baselines, last, appended, elem_id="compare-load-png")
        outputs = _outputs(ip_names)
        size_follows_image(engine, structure.image, controls)

        def check(request) -> None:
            methods = request.settings["methods"]
            if not methods:
                raise gr.Error("All columns are switched off: tick at least one method to compare.")
            if IP_ADAPTER in methods and not ip_names:
                raise gr.Error("The IP-Adapter column is not available: no IP-Adapter is configured in checkpoints.yaml.")

        def present(result, pictures, settings):
            columns = result.columns
            images = [columns[m].image if m in columns else None for m in METHODS]
            stats = [column_stats(columns[m]) if m in columns else OFF for m in METHODS]
            used_maps = list(result.extras) + [x for c in columns.values() for x in c.extras]
            download = _save_side_by_side(result.side_by_side, settings.seed, outputs.download.GRADIO_CACHE)
            optional = [x for m in OPTIONAL for x in (
                (columns[m].image, column_stats(columns[m])) if m in columns else (None, OFF))]
            return (*images, *stats, differences_table(result), download, used_maps, settings.seed, optional)

        # The optional column reaches the tab through a State (no API output): gradio_client callers
        # keep the ten outputs they always got, and find the column in the side-by-side download.
        optional_state = gr.State()
        event_outputs = [*outputs.components(), controls.seed, optional_state]
        api = task_endpoint(engine, "compare", ToCall("reference_image", reference, "reference"), structure, models,
                            columns, baselines, controls, strength, text_column, loras, last,
                            present=present, appended=appended,
                            check=check, previews=replace(live, outputs=len(event_outputs)), progress_label="Comparing")
        event = run.click(api.fn, inputs=api.inputs, outputs=event_outputs, api_name="compare",
                          show_progress_on=outputs.components())
        event.success(lambda values: tuple(values), inputs=[optional_state],
                              outputs=outputs.optional_components(), queue=False, api_visibility="private")
        stop_cancels(stop, event)


def _column_preview(preview):
    """A column's preview in that column's picture (the outputs start with METHODS' images); the
    optional column, which has no output of its own, shows none."""
    if preview.part not in METHODS:
        return None
    return METHODS.index(preview.part), preview.images[0]


def _examples(reference, structure: StructureInputs, choices) -> None:
    rows = [
        ("astronaut.jpg", "pose_standing.png", "openpose"),
        ("chelsea.jpg", "pose_arms_up.png", "openpose"),
        ("coffee.jpg", "canny_house.png", "canny"),
        ("rocket.jpg", "scribble_rocket.png", "scribble"),
    ]
    examples = [
        [str(EXAMPLES / ref), str(EXAMPLES / struct), cn, MODE_AS_IS]
        for ref, struct, cn in rows
        if cn in choices and (EXAMPLES / ref).is_file() and (EXAMPLES / struct).is_file()
    ]
    if examples:
        gr.Examples(examples=examples, inputs=[reference, structure.image, structure.kind, structure.mode],
                    label="Examples: reference + ready structure map (as-is)", elem_id="compare-examples")
