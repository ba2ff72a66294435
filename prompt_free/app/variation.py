"""Image Variation tab: new images with the content and style of a reference image."""

from __future__ import annotations

import gradio as gr

from prompt_free.catalog import spec as task_spec
from prompt_free.tasks import VariationSettings

from .fields import appended_section, last_section, reference_section
from .source_mask import paint_on
from .model_pickers import model_pickers
from .previews import live_previews
from .saved_embeddings import saved_embeddings
from .task_endpoint import ToCall, task_endpoint
from .uploads import image_input
from .widgets import (
    EXAMPLES,
    format_info,
    lora_pickers,
    results_gallery,
    run_buttons,
    sampler_controls,
    settings_from_png,
    stop_cancels,
)


def build(engine) -> None:
    with gr.Tab(task_spec("image_variation").label, id="variation"):
        gr.Markdown("Upload a reference image: SeeCoder turns it into the model's conditioning, no text prompt needed.")
        with gr.Row():
            with gr.Column():
                reference = image_input(label="Reference image", sources=["upload", "clipboard"], elem_id="variation-reference")
                run, stop = run_buttons("Generate", "variation")
                models = model_pickers(engine)
                controls = sampler_controls(engine, elem_prefix="variation")
                options = reference_section(VariationSettings, "variation", title="Reference strength and text")
                loras = lora_pickers(engine, "variation", controls)
                last = last_section(VariationSettings, "variation")
                saved = saved_embeddings(engine, "variation", reference, models.seecoder)
                # settings added since the API was published, then the embedding and init image uploads
                appended = appended_section(VariationSettings, "variation", files=saved, init_image=True,
                                            inside=paint_on(reference, "variation"))
                live = live_previews(engine, "variation", outputs=3)  # the event's outputs
                settings_from_png(models, controls, options, last, appended, elem_id="variation-load-png")
            with gr.Column():
                gallery = results_gallery("Results", elem_id="variation-gallery")
                info = gr.Markdown(elem_id="variation-info")
                examples = sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
                if examples:  # beside the inputs, in view (not under the long settings column)
                    gr.Examples(examples=[[p] for p in examples], inputs=[reference], label="Example references",
                                elem_id="variation-examples")

        def present(result, pictures, settings):
            return pictures, format_info(result.info, VariationSettings), settings.seed

        api = task_endpoint(engine, "image_variation", ToCall("reference_image", reference, "reference"), models,
                            controls, options, loras, last,
                            present=present, appended=appended, previews=live)
        event = run.click(api.fn, inputs=api.inputs, outputs=[gallery, info, controls.seed], api_name="image_variation",
                          show_progress_on=[gallery, info])
        stop_cancels(stop, event)
