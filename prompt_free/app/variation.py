"""Image Variation tab: new images with the content and style of a reference image."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from prompt_free.metadata import tag
from prompt_free.tasks import VariationSettings, image_variation

from .endpoint import endpoint
from .previews import live_previews
from .uploads import image_input
from .widgets import (
    format_info,
    lora_pickers,
    quick_mode,
    model_pickers,
    progress_callback,
    reference_controls,
    run_buttons,
    sampler_controls,
    settings_from_png,
    stop_cancels,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"  # a checkout's; not installed


def build(engine) -> None:
    with gr.Tab("Image Variation", id="variation"):
        gr.Markdown("Upload a reference image: SeeCoder turns it into the model's conditioning, no text prompt needed.")
        with gr.Row():
            with gr.Column():
                reference = image_input(label="Reference image", sources=["upload", "clipboard"], elem_id="variation-reference")
                models = model_pickers(engine)
                controls = sampler_controls(engine, elem_prefix="variation")
                options = reference_controls("variation")
                loras = lora_pickers(engine, "variation", controls)
                deep_cache = quick_mode("variation")
                run, stop = run_buttons("Generate", "variation")
                live = live_previews(engine, "variation", outputs=3)  # the event's outputs
                settings_from_png(models, controls, options, fields={"deep_cache": deep_cache}, elem_id="variation-load-png")
            with gr.Column():
                gallery = gr.Gallery(label="Results", format="png", columns=2, elem_id="variation-gallery")
                info = gr.Markdown(elem_id="variation-info")
        examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
        if examples:
            gr.Examples(examples=[[p] for p in examples], inputs=[reference], label="Example references")

        def generate(reference_image, models, sampler, options, loras, quick, progress):
            seed = sampler.pick_seed()
            settings = VariationSettings(**models.settings(), **sampler.settings(seed), **options.settings(),
                                         **loras.settings(), deep_cache=int(quick))
            result = image_variation(engine, reference_image, settings, progress=progress_callback(progress))
            # the PNGs carry how they were made; uploads are recorded by name only (no server paths)
            images = tag(engine, result, "image_variation", settings, {"reference": reference_image}, keep_paths=False)
            return images, format_info(result.info), seed

        api = endpoint(generate, ("reference_image", reference), models, controls, options, loras, ("deep_cache", deep_cache), previews=live)
        event = run.click(api.fn, inputs=api.inputs, outputs=[gallery, info, controls.seed], api_name="image_variation")
        stop_cancels(stop, event)
