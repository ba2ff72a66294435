"""Virtual Try-On tab: dress the person of a photo in the garment of another photo.

The mask (the region to change) is painted on the person photo in an image editor, made there
by "Make mask" from the person's pose (upper body / lower body / full outfit) and then
editable, or uploaded as an image (white = change; it is loaded into the editor). When nothing
is painted, the chosen automatic mask is used.

API ``/virtual_tryon``: its parameters are pinned in ``tests/pins/api.json`` (``gradio_client``'s
``view_api()`` lists them with their types).
outputs: gallery (results at the person photo's size), gallery (mask, pose map and garment as
used), info (markdown), seed used.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from prompt_free.catalog import spec as task_spec
from prompt_free import detectors
from prompt_free import masks as M
from prompt_free.tasks.fields import REFERENCE
from prompt_free.tasks.tryon import (
    MASK_IMAGE,
    TryOnSettings,
    auto_mask,
    inpainting_base_model,
    load_person,
)

from . import runner as runners
from .endpoint import InputGroup, handle_errors
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

MASK_MODE_CHOICES = [("painted / uploaded mask only", MASK_IMAGE)] + [(m, m) for m in M.MASK_MODES]
TRYON_CANVAS = MaskCanvas((512, 768))  # portrait: people; photos are letterboxed into it
CANVAS = TRYON_CANVAS.size
_editor_value = TRYON_CANVAS.editor_value
editor_mask = TRYON_CANVAS.mask_of


@dataclass
class TryOnImages(InputGroup):
    """The person and garment photos and the mask (the hidden image the editor's mask goes to)."""

    person: gr.Image
    garment: gr.Image
    mask: gr.Image
    mask_mode: gr.Dropdown

    API_NAMES = {"person": "person_image", "garment": "garment_image", "mask": "mask_image"}

    def mask_or_mode(self):
        return self.mask if self.mask else (self.mask_mode or MASK_IMAGE)

    def contribute(self, request) -> None:
        request.call.update(person=self.person, garment=self.garment, mask=self.mask_or_mode())


@dataclass
class TryOnOptions(InputGroup):
    dilation: gr.Slider
    feather: gr.Slider
    crop_garment: gr.Checkbox
    keep_pose: gr.Checkbox

    API_NAMES = {"dilation": "mask_dilation", "feather": "mask_feather"}

    def settings(self) -> dict:
        return {"dilation": self.dilation, "feather": self.feather, "crop_garment": bool(self.crop_garment),
                "pose_control": bool(self.keep_pose)}


def _photos_and_mask_editor() -> tuple:
    """Person and garment photos, the mask editor, the automatic mask and the mask upload."""
    with gr.Row():
        person = image_input(label="Person photo", sources=["upload", "clipboard"],
                             height=300, elem_id="tryon-person")
        garment = image_input(label="Garment photo", sources=["upload", "clipboard"],
                              height=300, elem_id="tryon-garment")
    editor = TRYON_CANVAS.editor(label="Mask: paint the region to change on the person", elem_id="tryon-mask-editor")
    with gr.Row():
        mask_mode = gr.Dropdown(MASK_MODE_CHOICES, value=M.UPPER_BODY, label="Automatic mask",
                                info="From the pose (OpenPose); used when nothing is painted",
                                elem_id="tryon-mask-mode")
        make = gr.Button("Make mask", elem_id="tryon-make-mask")
    mask_upload = mask_upload_input("tryon")
    return person, garment, editor, mask_mode, make, mask_upload


def _tryon_settings(engine, inpaint) -> tuple:
    """Try-on options, the generation size and the models (base model "auto": the inpainting one)."""
    with gr.Accordion("Try-on settings", open=True):
        dilation, feather = mask_edge_sliders("tryon")
        with gr.Row():
            crop = gr.Checkbox(True, label="Crop the garment photo to the garment", elem_id="tryon-crop")
            pose_found = pose_detector_found(engine)  # offline without its weights: off, so a run needs none
            keep_pose = gr.Checkbox(pose_found, label="Keep pose (openpose ControlNet)",
                                    info="Needs the OpenPose detector weights" + ("" if pose_found else " (not found here)"),
                                    elem_id="tryon-keep-pose")
        max_side = max_side_slider(engine, "tryon", "person photo")
        reference = section_controls(TryOnSettings, REFERENCE, "tryon")  # the garment's strength
    models = AutoBaseModels(seecoder_picker(engine), base_model_picker(engine, inpaint, "tryon"))
    return TryOnOptions(dilation, feather, crop, keep_pose), max_side, reference, models


def pose_detector_found(engine) -> bool:
    """Whether the pose detector's weights are here (local folders or the hub cache; no network)."""
    try:
        return detectors.available("openpose", engine.registry)
    except Exception:  # noqa: BLE001 - a default, never an error
        return False


def _mask_editor_events(engine, person, editor, mask_mode, make, mask_upload) -> None:
    """The person photo fills the editor; "Make mask" and a mask upload paint the editor's layer."""
    connect_editor(TRYON_CANVAS, person, editor, mask_upload, load_person,
                   lambda mask_path, size: M.load_mask(mask_path, size), "person photo")
    runner = runners.current()  # the pose detector runs where the tab's tasks run

    @handle_errors
    def make_mask(path, mode, progress=gr.Progress()):
        if not path:
            raise gr.Error("Upload the person photo first.")
        if mode == MASK_IMAGE:
            raise gr.Error("Choose an automatic mask (upper body, lower body or full outfit) to make one.")
        progress(0.1, desc="Detecting the pose")
        img = load_person(path)
        return _editor_value(img, M.load_mask(runner.call(engine, auto_mask, img, mode)))

    make.click(make_mask, inputs=[person, mask_mode], outputs=[editor], api_visibility="private")


def _examples(person, garment, mask_upload) -> None:
    # each example brings its mask, so it runs without the pose detector's weights (offline)
    rows = [("tryon_garment_shirt.png", "tryon_person_mask.png"),
            ("tryon_garment_trousers.png", "tryon_person_mask_lower.png")]
    examples = [[str(EXAMPLES / "tryon_person.png"), str(EXAMPLES / g), str(EXAMPLES / m)] for g, m in rows
                if all((EXAMPLES / f).is_file() for f in ("tryon_person.png", g, m))]
    if examples:
        gr.Examples(examples=examples, inputs=[person, garment, mask_upload], label="Example person and garments",
                    elem_id="tryon-examples")


def build(engine) -> None:
    inpaint = inpainting_base_model(engine)

    with gr.Tab(task_spec("virtual_tryon").label, id="tryon"):
        gr.Markdown(
            "Dress a person in a garment from a photo. Upload the **person** and the **garment**, then mark the region "
            "to change: paint it on the person, click **Make mask** for an automatic mask from the pose (editable "
            "afterwards), or upload a mask (white = change). Nothing painted: the automatic mask is used. The garment "
            "photo (cropped to the garment) conditions the picture through SeeCoder; an openpose ControlNet keeps the "
            "pose; "
            + (f"the inpainting model **{inpaint}** fills the region." if inpaint else
               "latent blending keeps everything outside the mask.")
            + " Outside the mask (plus dilation and feathering) the photo is returned unchanged, at its own size."
        )
        with gr.Row():
            with gr.Column():
                person, garment, editor, mask_mode, make, mask_upload = _photos_and_mask_editor()
                run, stop = run_buttons("Try on", "tryon")
                options, max_side, reference, models = _tryon_settings(engine, inpaint)
                controls = sampler_controls(engine, size=False)
                loras = lora_pickers(engine, "tryon", controls)
                last = last_section(TryOnSettings, "tryon")
                appended = appended_section(TryOnSettings, "tryon", inside=paint_on(garment, "tryon"))  # settings added since the API was published
                live = live_previews(engine, "tryon", outputs=4)  # the event's outputs
                settings_from_png(models, controls, options, reference, last, appended, fields={"max_side": max_side},
                                  elem_id="tryon-load-png")
                mask = hidden_mask("tryon")
            with gr.Column():
                gallery = results_gallery("Results", elem_id="tryon-gallery")
                info = gr.Markdown(elem_id="tryon-info")
                used = results_gallery("Mask, pose and garment as used", columns=3, height=240,
                                  elem_id="tryon-used")
                _examples(person, garment, mask_upload)
        _mask_editor_events(engine, person, editor, mask_mode, make, mask_upload)

        take_mask = editor_to_mask(TRYON_CANVAS, load_person)

        def present(result, pictures, settings):
            return result.images, result.extras, _info(result.info), settings.seed

        api = task_endpoint(engine, "virtual_tryon", TryOnImages(person, garment, mask, mask_mode), models, options,
                            controls, ("max_side", max_side), reference, loras, last,
                            present=present, appended=appended, previews=live)
        taken = run.click(take_mask, inputs=[editor, person], outputs=[mask], api_visibility="private")
        event = taken.success(
            api.fn, inputs=api.inputs, outputs=[gallery, used, info, controls.seed], api_name="virtual_tryon",
            show_progress_on=[gallery, used, info],
        )
        stop_cancels(stop, taken, event)


def _info(info: dict) -> str:
    return edit_info(info, TryOnSettings, f"mask: {info['mask']}", f"pose control: {info['controlnet'] or 'off'}")
