"""Multi-Reference tab: up to four reference images with weights and optional region masks,
blended (average, concatenate or regions), optionally under one or two ControlNets.

API ``/multi_reference``: its parameters are pinned in ``tests/pins/api.json`` (``gradio_client``'s
``view_api()`` lists them with their types).
outputs: gallery (the results, then the control maps used), info (markdown), seed used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import gradio as gr

from prompt_free.catalog import spec as task_spec
from prompt_free.settings import MAX_REFERENCES, REFERENCE_WEIGHT
from prompt_free.tasks import BLENDS, MultiReferenceSettings, Reference
from prompt_free.tasks.control import controlnet_choices

from .control import control_panel, controls_lines
from .endpoint import InputGroup
from .fields import appended_section, last_section, reference_section, slider
from .source_mask import paint_on
from .model_pickers import model_pickers
from .previews import live_previews
from .task_endpoint import Joined, task_endpoint
from .uploads import image_input
from .widgets import (
    EXAMPLES,
    format_info,
    lora_pickers,
    results_gallery,
    run_buttons,
    sampler_controls,
    settings_from_png,
    size_follows_image,
    stop_cancels,
)

BLEND_HELP = (
    "average: the weighted mean of the references' embeddings · concatenate: all their tokens side by side, "
    "each scaled by its weight · regions: each reference only inside its mask (reference 1 also everywhere "
    "no mask covers)"
)


@dataclass
class ReferenceSlots(InputGroup):
    """The references, their weights and their masks: public names ``reference_1`` ...
    ``reference_4``, ``weight_1`` ... ``weight_4``, ``mask_1`` ... ``mask_4``, in that order."""

    reference_1: Any
    reference_2: Any
    reference_3: Any
    reference_4: Any
    weight_1: Any
    weight_2: Any
    weight_3: Any
    weight_4: Any
    mask_1: Any
    mask_2: Any
    mask_3: Any
    mask_4: Any

    def references(self) -> List[Reference]:
        """The ``Reference`` of every slot (of a handler's group; empty slots hold no image)."""
        return [Reference(getattr(self, f"reference_{i}"), getattr(self, f"weight_{i}"), getattr(self, f"mask_{i}"))
                for i in range(1, MAX_REFERENCES + 1)]

    def contribute(self, request) -> None:
        request.call["references"] = self.references()


def _slot(i: int):
    """(image, weight, mask) widgets of reference ``i`` (elem_ids ``multi-reference-<i>`` ...)."""
    with gr.Column(min_width=200):
        image = image_input(label=f"Reference {i}", sources=["upload", "clipboard"], height=200,
                            elem_id=f"multi-reference-{i}")
        weight = slider(REFERENCE_WEIGHT, f"Weight {i}", elem_id=f"multi-weight-{i}",
                        info="0 leaves this reference out")
        mask = image_input(label=f"Region mask {i} (regions blend; white = here)", sources=["upload", "clipboard"],
                           height=140, elem_id=f"multi-mask-{i}")
    return image, weight, mask


def build(engine) -> None:
    with gr.Tab(task_spec("multi_reference").label, id="multi_reference"):
        gr.Markdown(
            "Blend up to four **reference images**, each with a weight. **average** mixes their embeddings, "
            "**concatenate** gives the model all their tokens, **regions** uses each reference only inside its "
            "**region mask** (white = here): reference 1 is the background and needs no mask, every other reference "
            "needs one. Optionally add a ControlNet for structure, as in Reference + ControlNet."
        )
        with gr.Row():
            with gr.Column():
                widgets = []
                with gr.Row():
                    widgets += [_slot(1), _slot(2)]
                with gr.Accordion("References 3 and 4", open=False, elem_id="multi-more"):
                    with gr.Row():
                        widgets += [_slot(3), _slot(4)]
                images, weights, masks = zip(*widgets)
                slots = ReferenceSlots(*images, *weights, *masks)
                blend = gr.Radio(list(BLENDS), value=BLENDS[0], label="Blend", info=BLEND_HELP, elem_id="multi-blend")
                run, stop = run_buttons("Generate", "multi")
                models = model_pickers(engine)
                choices = controlnet_choices(engine)
                panel = use_control = None
                if choices:
                    use_control = gr.Checkbox(False, label="Add structure control (ControlNet)",
                                              elem_id="multi-use-control")
                    with gr.Group(visible=False) as control_group:
                        panel = control_panel(engine, choices, prefix="multi-control")
                    use_control.change(lambda on: gr.update(visible=bool(on)), inputs=[use_control],
                                       outputs=[control_group], queue=False, api_visibility="private")
                controls = sampler_controls(engine, elem_prefix="multi")
                options = reference_section(MultiReferenceSettings, "multi", title="Reference strength and blocks",
                                            open=False, others="the other blocks get nothing (not with the regions blend)")
                loras = lora_pickers(engine, "multi", controls)
                last = last_section(MultiReferenceSettings, "multi")
                appended = appended_section(MultiReferenceSettings, "multi", init_image=True,
                                            inside=paint_on(images[0], "multi"))  # the mask is the first reference's  # settings added since the API was published
                live = live_previews(engine, "multi", outputs=3)  # the event's outputs
                settings_from_png(models, controls, options, last, appended, fields={"blend": blend}, elem_id="multi-load-png")
            with gr.Column():
                gallery = results_gallery("Results, then the control maps used",
                                        elem_id="multi-gallery")
                info = gr.Markdown(elem_id="multi-info")
                pairs = [("chelsea.jpg", "coffee.jpg"), ("astronaut.jpg", "rocket.jpg")]
                rows = [[str(EXAMPLES / a), str(EXAMPLES / b)] for a, b in pairs
                        if (EXAMPLES / a).is_file() and (EXAMPLES / b).is_file()]
                if rows:  # beside the inputs, in view
                    gr.Examples(examples=rows, inputs=[slots.reference_1, slots.reference_2],
                                label="Example references to blend", elem_id="multi-examples")

        def present(result, pictures, settings):
            return pictures, _info(result.info), settings.seed

        def with_controls(request, use, *panel_values):  # the ControlNets' specs go in the settings here
            request.settings["controls"] = panel.specs(*panel_values) if use else []

        parts = [Joined((("use_control", use_control), *panel.parts()), with_controls)] if panel is not None else []
        if panel is not None:
            size_follows_image(engine, panel.first.image, controls)
        api = task_endpoint(engine, "multi_reference", slots, ("blend", blend), models, *parts, controls, options, loras,
                            last,
                            present=present, appended=appended, previews=live)
        event = run.click(api.fn, inputs=api.inputs, outputs=[gallery, info, controls.seed], api_name="multi_reference",
                          show_progress_on=[gallery, info])
        stop_cancels(stop, event)


def _info(info: dict) -> str:
    refs = ", ".join(f"{r['reference']} (weight {r['weight']:g}{', masked' if r['mask'] else ''})"
                     for r in info.get("references", []))
    lines = [format_info(info, MultiReferenceSettings), f"**{info.get('blend')}** of references {refs} · {info.get('tokens')} tokens"]
    lines += controls_lines(info)
    lines += [f"Note: {n}" for n in info.get("notes", [])]
    return "  \n".join(line for line in lines if line)
