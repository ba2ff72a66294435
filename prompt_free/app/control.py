"""Reference + ControlNet tab: content and style from a reference image, structure from one or
two control images (pose, edges, depth ...) through ControlNets.

API (``/reference_control``), parameters in order (preprocessors by name, e.g. ``openpose_full``):
    reference_image, seecoder, base_model,
    type1, image1, mode1, preprocessor1, scale1, start1, end1,
    use_second, type2, image2, mode2, preprocessor2, scale2, start2, end2,
    check_maps, guidance, steps, width, height, seed, randomize_seed, num_images, scheduler,
    reference_strength, prompt, prompt_mode, prompt_weight, blocks
outputs: gallery (the results, then the control maps used), info (markdown), seed used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from prompt_free.metadata import tag
from prompt_free.settings import CONTROL_SCALE, CONTROL_WINDOW
from prompt_free.tasks.control import (
    MODE_AS_IS,
    MODE_PREPROCESS,
    MODES,
    ControlSettings,
    ControlSpec,
    controlnet_choices,
    reference_control,
)

from .endpoint import InputGroup, endpoint
from .previews import live_previews
from .uploads import image_input
from .widgets import (
    connect_preprocessor,
    run_buttons,
    stop_cancels,
    format_info,
    lora_pickers,
    quick_mode,
    model_pickers,
    preprocessor_dropdown,
    progress_callback,
    reference_controls,
    sampler_controls,
    settings_from_png,
    size_follows_image,
    slider,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"  # a checkout's; not installed


@dataclass
class ControlInputs(InputGroup):
    """The widgets of one ControlNet; public names ``type1``, ``image1`` ... (suffixed)."""

    kind: gr.Dropdown
    image: gr.Image
    mode: gr.Radio
    preprocessor: gr.Dropdown
    scale: gr.Slider
    start: gr.Slider
    end: gr.Slider

    API_NAMES = {"kind": "type"}

    def spec(self, check_map) -> ControlSpec:
        return ControlSpec(self.kind, self.image, self.mode, self.preprocessor, self.scale, self.start, self.end,
                           check_map=bool(check_map))


def _control_block(engine, i: int, choices, default_type: str, prefix: str = "control") -> ControlInputs:
    """Widgets of ControlNet ``i`` (1-based); elem_ids ``<prefix>-type-<i>`` ..."""
    kind = gr.Dropdown(choices, value=default_type, label=f"ControlNet {i} type", elem_id=f"{prefix}-type-{i}",
                       info="What the control image fixes: pose, edges, depth ...")
    image = image_input(label=f"Control image {i}", sources=["upload", "clipboard"], height=280,
                        elem_id=f"{prefix}-image-{i}")
    with gr.Row():
        mode = gr.Radio(list(MODES), value=MODE_AS_IS, label=f"Control image {i} is", elem_id=f"{prefix}-mode-{i}",
                        info="use as-is: a ready map (skeleton, edges ...); preprocess: a picture to detect it from")
        pre = preprocessor_dropdown(engine, default_type, elem_id=f"{prefix}-preprocessor-{i}")
    note = gr.Markdown(elem_id=f"{prefix}-note-{i}")
    with gr.Row():
        scale = slider(CONTROL_SCALE, "Conditioning scale", elem_id=f"{prefix}-scale-{i}")
        start = slider(CONTROL_WINDOW, "Control start", info="fraction of the steps")
        end = slider(CONTROL_WINDOW, "Control end", value=CONTROL_WINDOW.hi, info="fraction of the steps")
    connect_preprocessor(engine, kind, mode, pre, note)
    return ControlInputs(kind, image, mode, pre, scale, start, end)


@dataclass
class ControlPanel:
    """One or two ControlNets as a tab shows them (``control_panel``): the first, a checkbox
    for the second, the second, and the map check. Also used by the Multi-Reference tab."""

    first: ControlInputs
    use_second: gr.Checkbox
    second: ControlInputs
    check_maps: gr.Checkbox

    def parts(self) -> list:
        """The endpoint parts: ``type1`` ... ``end1``, ``use_second``, ``type2`` ... ``end2``, ``check_maps``."""
        return [self.first.suffixed("1"), ("use_second", self.use_second), self.second.suffixed("2"),
                ("check_maps", self.check_maps)]

    @staticmethod
    def specs(first: ControlInputs, use_second, second: ControlInputs, check_maps) -> list:
        """The ``ControlSpec``s of a handler's values (the parts above)."""
        return [first.spec(check_maps)] + ([second.spec(check_maps)] if use_second else [])


def control_panel(engine, choices, prefix: str = "control") -> ControlPanel:
    """The widgets of one or two ControlNets (elem_ids ``<prefix>-...``); the second shows when
    its checkbox is ticked."""
    first_type = engine.defaults.get("controlnet") if engine.defaults.get("controlnet") in choices else choices[0]
    second_type = "depth" if "depth" in choices else choices[min(1, len(choices) - 1)]
    with gr.Group():
        first = _control_block(engine, 1, choices, first_type, prefix)
    use_second = gr.Checkbox(False, label="Add a second ControlNet (e.g. pose + depth)", elem_id=f"{prefix}-use-2")
    with gr.Group(visible=False) as second_group:
        second = _control_block(engine, 2, choices, second_type, prefix)
    check_maps = gr.Checkbox(True, label="Check that as-is maps look like their ControlNet's kind",
                             elem_id=f"{prefix}-check-maps")
    use_second.change(lambda on: gr.update(visible=bool(on)), inputs=[use_second], outputs=[second_group],
                      queue=False, api_visibility="private")
    return ControlPanel(first, use_second, second, check_maps)


def build(engine) -> None:
    choices = controlnet_choices(engine)
    if not choices:
        return  # no ControlNet in checkpoints.yaml: no tab

    with gr.Tab("Reference + ControlNet", id="control"):
        gr.Markdown(
            "Content and style come from the **reference image** (SeeCoder); the structure comes from a "
            "**control image** through a ControlNet: a pose skeleton, an edge map, a depth map ... Upload a ready map "
            f"and keep **{MODE_AS_IS}**, or upload a picture and choose **{MODE_PREPROCESS}** to detect the map. "
            "The output size follows the first control image (you can change it)."
        )
        with gr.Row():
            with gr.Column():
                reference = image_input(label="Reference image", sources=["upload", "clipboard"],
                                        height=280, elem_id="control-reference")
                models = model_pickers(engine)
                panel = control_panel(engine, choices)
                first, use_second, second = panel.first, panel.use_second, panel.second
                controls = sampler_controls(engine)
                options = reference_controls("control")
                loras = lora_pickers(engine, "control", controls)
                deep_cache = quick_mode("control")
                run, stop = run_buttons("Generate", "control")
                live = live_previews(engine, "control", outputs=3)  # the event's outputs
                _load_png(models, controls, options, first, use_second, second, panel.check_maps,
                          fields={"deep_cache": deep_cache})
            with gr.Column():
                gallery = gr.Gallery(label="Results, then the control maps used", format="png", columns=2,
                                     elem_id="control-gallery")
                info = gr.Markdown(elem_id="control-info")

        size_follows_image(engine, first.image, controls)
        _examples(reference, first, use_second, second)

        def generate(reference_image, models, first, use_second, second, check_maps, sampler, options, loras, quick,
                     progress):
            seed = sampler.pick_seed()
            specs = ControlPanel.specs(first, use_second, second, check_maps)
            settings = ControlSettings(**models.settings(), **sampler.settings(seed), **options.settings(), **loras.settings(),
                                       deep_cache=int(quick))
            result = reference_control(engine, reference_image, specs, settings, progress=progress_callback(progress))
            pictures = tag(engine, result, "reference_control", settings,
                           {"reference": reference_image, "controls": specs}, keep_paths=False)
            return pictures, _info(result.info), seed

        api = endpoint(generate, ("reference_image", reference), models, *panel.parts(), controls, options, loras,
                       ("deep_cache", deep_cache), previews=live)
        event = run.click(api.fn, inputs=api.inputs, outputs=[gallery, info, controls.seed], api_name="reference_control")
        stop_cancels(stop, event)


def _load_png(models, sampler, options, first: ControlInputs, use_second, second: ControlInputs, check_maps,
              fields=None) -> None:
    """"Load settings from a PNG", with the ControlNets' own controls (``fields``: single components
    by settings field name)."""
    blocks = (first, second)

    def fill(record):
        specs = [c for c in (record.get("call") or {}).get("controls") or [] if isinstance(c, dict)]
        out = {use_second: len(specs) > 1} if specs else {}
        for block, spec in zip(blocks, specs):
            for field, key in (("kind", "controlnet"), ("mode", "mode"), ("preprocessor", "preprocessor"),
                               ("scale", "scale"), ("start", "start"), ("end", "end")):
                if spec.get(key) is not None:
                    out[getattr(block, field)] = spec[key]
        if specs and "check_map" in specs[0]:
            out[check_maps] = bool(specs[0]["check_map"])
        return out

    extra = [use_second, check_maps] + [getattr(b, f) for b in blocks
                                        for f in ("kind", "mode", "preprocessor", "scale", "start", "end")]
    settings_from_png(models, sampler, options, fields=fields, extra_outputs=extra, extra=fill, elem_id="control-load-png")


def _info(info: dict) -> str:
    return "  \n".join(p for p in [format_info(info), *controls_lines(info)] if p)


def controls_lines(info: dict) -> list:
    """One line per ControlNet of a run's ``info["controls"]``."""
    lines = []
    for i, c in enumerate(info.get("controls", []), 1):
        how = f"preprocessed with {c['preprocessor']}" if c.get("preprocessor") else "as-is"
        lines.append(f"ControlNet {i}: **{c['controlnet']}** ({how}), scale {c['scale']:g}, "
                     f"steps {c['start']:.0%}–{c['end']:.0%}")
    return lines


def _examples(reference, first: ControlInputs, use_second, second: ControlInputs) -> None:
    rows = [
        ("astronaut.jpg", "openpose", "pose_standing.png", False, None),
        ("chelsea.jpg", "openpose", "pose_arms_up.png", False, None),
        ("astronaut.jpg", "openpose", "pose_two_people.png", False, None),
        ("coffee.jpg", "canny", "canny_house.png", False, None),
        ("rocket.jpg", "scribble", "scribble_rocket.png", False, None),
        ("chelsea.jpg", "depth", "depth_spheres.png", False, None),
        ("astronaut.jpg", "openpose", "pose_standing.png", True, "depth_spheres.png"),
    ]
    choices = first.kind.choices
    names = {c[1] if isinstance(c, (tuple, list)) else c for c in choices}
    second_default = second.kind.value
    examples = []
    for ref, kind, control, two, control2 in rows:
        paths = [EXAMPLES / ref, EXAMPLES / control] + ([EXAMPLES / control2] if control2 else [])
        if kind not in names or (two and "depth" not in names) or not all(p.is_file() for p in paths):
            continue
        examples.append([str(EXAMPLES / ref), kind, str(EXAMPLES / control), MODE_AS_IS, two,
                         "depth" if two else second_default, str(EXAMPLES / control2) if control2 else None,
                         MODE_AS_IS])
    if examples:
        gr.Examples(
            examples=examples,
            inputs=[reference, first.kind, first.image, first.mode, use_second, second.kind, second.image, second.mode],
            label="Examples: reference + control map (drawn maps, used as-is)",
            visible_columns=[0, 1, 2, 6],  # reference, type, control image 1, control image 2
            elem_id="control-examples",
        )
