"""Reference + ControlNet tab: content and style from a reference image, structure from one or
two control images (pose, edges, depth ...) through ControlNets.

API ``/reference_control``: its parameters are pinned in ``tests/pins/api.json`` (``gradio_client``'s
``view_api()`` lists them with their types).
outputs: gallery (the results, then the control maps used), info (markdown), seed used.
"""

from __future__ import annotations

from dataclasses import dataclass
import gradio as gr

from prompt_free.catalog import spec as task_spec
from prompt_free.settings import CONTROL_SCALE, CONTROL_WINDOW
from prompt_free.tasks.control import (
    MODE_AS_IS,
    MODE_PREPROCESS,
    MODES,
    ControlSettings,
    ControlSpec,
    controlnet_choices,
)

from .endpoint import InputGroup
from .saved_embeddings import embedding_upload
from .fields import appended_section, last_section, reference_section, slider
from .source_mask import paint_on
from .model_pickers import model_pickers
from .previews import live_previews
from .task_endpoint import Joined, ToCall, task_endpoint
from .uploads import image_input
from .widgets import (
    EXAMPLES,
    connect_preprocessor,
    format_info,
    lora_pickers,
    preprocessor_dropdown,
    results_gallery,
    run_buttons,
    sampler_controls,
    settings_from_png,
    size_follows_image,
    stop_cancels,
)


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

    def to_call(self) -> Joined:
        """The panel as a part of a task's request: its specs are the call's ``controls``."""
        return Joined(tuple(self.parts()), lambda request, *values: request.call.update(controls=self.specs(*values)))


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

    with gr.Tab(task_spec("reference_control").label, id="control"):
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
                run, stop = run_buttons("Generate", "control")
                controls = sampler_controls(engine)
                options = reference_section(ControlSettings, "control", title="Reference strength and text")
                loras = lora_pickers(engine, "control", controls)
                last = last_section(ControlSettings, "control")
                appended = appended_section(ControlSettings, "control", files={"embedding": embedding_upload("control")}, init_image=True,
                                            inside=paint_on(reference, "control"))  # settings added since the API was published
                live = live_previews(engine, "control", outputs=3)  # the event's outputs
                _load_png(panel, models, controls, options, last, appended)
            with gr.Column():
                gallery = results_gallery("Results, then the control maps used",
                                        elem_id="control-gallery")
                info = gr.Markdown(elem_id="control-info")
                _examples(reference, first, use_second, second)  # beside the inputs, in view
        size_follows_image(engine, first.image, controls)

        def present(result, pictures, settings):
            return pictures, _info(result.info), settings.seed

        api = task_endpoint(engine, "reference_control", ToCall("reference_image", reference, "reference"), models,
                            panel.to_call(), controls, options, loras, last,
                            present=present, appended=appended, previews=live)
        event = run.click(api.fn, inputs=api.inputs, outputs=[gallery, info, controls.seed], api_name="reference_control",
                          show_progress_on=[gallery, info])
        stop_cancels(stop, event)


def _load_png(panel: ControlPanel, *groups: InputGroup, elem_id: str = "control-load-png") -> None:
    """"Load settings from a PNG", with the ControlNets' own controls (``groups``: the tab's groups)."""
    first, use_second, second, check_maps = panel.first, panel.use_second, panel.second, panel.check_maps
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
    settings_from_png(*groups, extra_outputs=extra, extra=fill, elem_id=elem_id)


def _info(info: dict) -> str:
    return "  \n".join(p for p in [format_info(info, ControlSettings), *controls_lines(info)] if p)


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
