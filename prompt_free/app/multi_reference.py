"""Multi-Reference tab: up to four reference images with weights and optional region masks,
blended (average, concatenate or regions), optionally under one or two ControlNets.

API (``/multi_reference``), parameters in order:
    reference_1 ... reference_4 (unused ones empty), weight_1 ... weight_4, mask_1 ... mask_4,
    blend (average | concatenate | regions), seecoder, base_model,
    use_control, type1, image1, mode1, preprocessor1, scale1, start1, end1,
    use_second, type2, image2, mode2, preprocessor2, scale2, start2, end2, check_maps,
    guidance, steps, width, height, seed, randomize_seed, num_images, scheduler,
    reference_strength, blocks, lora_1, lora_1_scale, lora_2, lora_2_scale
(the ControlNet inputs only when ``checkpoints.yaml`` has structure ControlNets)
outputs: gallery (the results, then the control maps used), info (markdown), seed used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import gradio as gr

from prompt_free.metadata import tag
from prompt_free.settings import MAX_REFERENCES, REFERENCE_WEIGHT
from prompt_free.tasks import BLENDS, MultiReferenceSettings, Reference, multi_reference
from prompt_free.tasks.control import controlnet_choices

from .control import ControlPanel, control_panel, controls_lines
from .endpoint import InputGroup, endpoint
from .previews import live_previews
from .uploads import image_input
from .widgets import (
    settings_from_png,
    format_info,
    lora_pickers,
    quick_mode,
    model_pickers,
    progress_callback,
    run_buttons,
    sampler_controls,
    size_follows_image,
    slider,
    stop_cancels,
    strength_and_blocks,
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
    with gr.Tab("Multi-Reference", id="multi_reference"):
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
                options = strength_and_blocks("multi")
                loras = lora_pickers(engine, "multi", controls)
                deep_cache = quick_mode("multi")
                run, stop = run_buttons("Generate", "multi")
                live = live_previews(engine, "multi", outputs=3)  # the event's outputs
                settings_from_png(models, controls, options, fields={"blend": blend, "deep_cache": deep_cache},
                                  elem_id="multi-load-png")
            with gr.Column():
                gallery = gr.Gallery(label="Results, then the control maps used", format="png", columns=2,
                                     elem_id="multi-gallery")
                info = gr.Markdown(elem_id="multi-info")

        def generate(slots, blend, models, *rest, progress):
            *control_values, sampler, options, loras, quick = rest
            specs = []
            if control_values:
                use, first, use_second, second, check_maps = control_values
                specs = ControlPanel.specs(first, use_second, second, check_maps) if use else []
            seed = sampler.pick_seed()
            settings = MultiReferenceSettings(**models.settings(), **sampler.settings(seed), **options.settings(),
                                              **loras.settings(), deep_cache=int(quick),
                                              blend=blend, controls=specs)
            references = slots.references()
            result = multi_reference(engine, references, settings, progress=progress_callback(progress))
            pictures = tag(engine, result, "multi_reference", settings, {"references": references}, keep_paths=False)
            return pictures, _info(result.info), seed

        control_parts = [("use_control", use_control), *panel.parts()] if panel is not None else []
        if panel is not None:
            size_follows_image(engine, panel.first.image, controls)
        api = endpoint(generate, slots, ("blend", blend), models, *control_parts, controls, options, loras, ("deep_cache", deep_cache), previews=live)
        event = run.click(api.fn, inputs=api.inputs, outputs=[gallery, info, controls.seed], api_name="multi_reference")
        stop_cancels(stop, event)


def _info(info: dict) -> str:
    refs = ", ".join(f"{r['reference']} (weight {r['weight']:g}{', masked' if r['mask'] else ''})"
                     for r in info.get("references", []))
    lines = [format_info(info), f"**{info.get('blend')}** of references {refs} · {info.get('tokens')} tokens"]
    lines += controls_lines(info)
    lines += [f"Note: {n}" for n in info.get("notes", [])]
    return "  \n".join(line for line in lines if line)
