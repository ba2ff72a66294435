"""Edit with a Reference tab: fill a region of any photo with the content of a reference image
(an object, a texture, a garment). Virtual Try-On is the same edit with a garment, a pose mask
and pose control.

The mask (the region to fill) is painted on the photo in an image editor, or uploaded as an
image (white = change; it is loaded into the editor, resized to the photo with a warning when
its size differs).

API ``/edit_reference``: its parameters are pinned in ``tests/pins/api.json`` (``gradio_client``'s
``view_api()`` lists them with their types).
outputs: gallery (results at the photo's size), gallery (mask and reference as used), info
(markdown), seed used.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from prompt_free.catalog import spec as task_spec
from prompt_free import masks as M
from prompt_free.tasks.edit import EditSettings, inpainting_base_model, load_photo
from prompt_free.tasks.fields import REFERENCE

from .endpoint import InputGroup
from .fields import appended_section, last_section, section_controls
from .source_mask import paint_on
from .masking import (
    AutoBaseModels,
    MaskCanvas,
    base_model_picker,
    connect_editor,
    edit_info,
    editor_to_mask,
    hidden_mask,
    mask_edge_sliders,
    mask_upload_input,
    max_side_slider,
)
from .model_pickers import seecoder_picker
from .previews import live_previews
from .task_endpoint import task_endpoint
from .uploads import image_input
from .widgets import (EXAMPLES, lora_pickers, results_gallery, run_buttons, sampler_controls,
                      settings_from_png, stop_cancels)

EDIT_CANVAS = MaskCanvas((640, 480))  # landscape, as most photos; others are letterboxed into it


@dataclass
class EditImages(InputGroup):
    """The photo, the reference and the mask (the hidden image the editor's mask goes to)."""

    photo: gr.Image
    reference: gr.Image
    mask: gr.Image

    API_NAMES = {"photo": "photo_image", "reference": "reference_image", "mask": "mask_image"}

    def contribute(self, request) -> None:
        request.call.update(photo=self.photo, mask=self.mask, reference=self.reference)


@dataclass
class EditOptions(InputGroup):
    dilation: gr.Slider
    feather: gr.Slider
    crop_reference: gr.Checkbox

    API_NAMES = {"dilation": "mask_dilation", "feather": "mask_feather"}

    def settings(self) -> dict:
        return {"dilation": self.dilation, "feather": self.feather, "crop_reference": bool(self.crop_reference)}


def read_uploaded_mask(path, size):
    """An uploaded mask at the photo's ``size``; one of another size is resized and a warning says so."""
    m, note = M.fit_mask(M.load_mask(path), size)
    if note:
        gr.Warning(note[0].upper() + note[1:] + ".")
    return m


def _edit_settings(engine, inpaint) -> tuple:
    """Edit options, the generation size and the models (base model "auto": the inpainting one)."""
    with gr.Accordion("Edit settings", open=True):
        dilation, feather = mask_edge_sliders("edit")
        crop = gr.Checkbox(False, label="Crop the reference to its subject",
                           info="Cuts a plain background off the reference before SeeCoder sees it", elem_id="edit-crop")
        max_side = max_side_slider(engine, "edit", "photo")
    models = AutoBaseModels(seecoder_picker(engine), base_model_picker(engine, inpaint, "edit"))
    return EditOptions(dilation, feather, crop), max_side, models


def build(engine) -> None:
    inpaint = inpainting_base_model(engine)

    with gr.Tab(task_spec("edit_with_reference").label, id="edit"):
        gr.Markdown(
            "Fill a region of any photo with the content of a **reference** image: an object, a texture, a garment. "
            "Upload the **photo** and the **reference**, then paint the region to fill on the photo, or upload a mask "
            "(white = change). The reference conditions the picture through SeeCoder; "
            + (f"the inpainting model **{inpaint}** fills the region." if inpaint else
               "latent blending keeps everything outside the mask.")
            + " Outside the mask (plus dilation and feathering) the photo is returned unchanged, at its own size."
        )
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    photo = image_input(label="Photo", sources=["upload", "clipboard"], height=300,
                                        elem_id="edit-photo")
                    reference = image_input(label="Reference", sources=["upload", "clipboard"], height=300,
                                            elem_id="edit-reference")
                editor = EDIT_CANVAS.editor(label="Mask: paint the region to fill on the photo",
                                            elem_id="edit-mask-editor")
                mask_upload = mask_upload_input("edit")
                run, stop = run_buttons("Edit", "edit")
                options, max_side, models = _edit_settings(engine, inpaint)
                controls = sampler_controls(engine, size=False, elem_prefix="edit")
                reference_options = section_controls(EditSettings, REFERENCE, "edit")  # the reference's strength
                loras = lora_pickers(engine, "edit", controls)
                last = last_section(EditSettings, "edit")
                appended = appended_section(EditSettings, "edit", inside=paint_on(reference, "edit"))  # settings added since the API was published
                live = live_previews(engine, "edit", outputs=4)  # the event's outputs
                settings_from_png(models, controls, options, reference_options, last, appended, fields={"max_side": max_side},
                                  elem_id="edit-load-png")
                mask = hidden_mask("edit")
            with gr.Column():
                gallery = results_gallery("Results", elem_id="edit-gallery")
                info = gr.Markdown(elem_id="edit-info")
                used = results_gallery("Mask and reference as used", height=240,
                                  elem_id="edit-used")
                example = [EXAMPLES / "coffee.jpg", EXAMPLES / "chelsea.jpg", EXAMPLES / "edit_coffee_mask.png"]
                if all(p.is_file() for p in example):  # the mask comes with it: one click, then Edit
                    gr.Examples(examples=[[str(p) for p in example]], inputs=[photo, reference, mask_upload],
                                label="Example photo, reference and mask", elem_id="edit-examples")
        connect_editor(EDIT_CANVAS, photo, editor, mask_upload, load_photo, read_uploaded_mask, "photo")
        take_mask = editor_to_mask(EDIT_CANVAS, load_photo)

        def present(result, pictures, settings):
            return result.images, result.extras, edit_info(result.info, EditSettings), settings.seed

        api = task_endpoint(engine, "edit_with_reference", EditImages(photo, reference, mask), models, options, controls,
                            ("max_side", max_side), reference_options, loras, last,
                            present=present, appended=appended, previews=live)
        taken = run.click(take_mask, inputs=[editor, photo], outputs=[mask], api_visibility="private")
        event = taken.success(
            api.fn, inputs=api.inputs, outputs=[gallery, used, info, controls.seed], api_name="edit_reference",
            show_progress_on=[gallery, used, info],
        )
        stop_cancels(stop, taken, event)
