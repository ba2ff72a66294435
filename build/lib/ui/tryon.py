"""Virtual Try-On tab: dress the person of a photo in the garment of another photo.

The mask (the region to change) is painted on the person photo in an image editor, made there
by "Make mask" from the person's pose (upper body / lower body / full outfit) and then
editable, or uploaded as an image (white = change; it is loaded into the editor). When nothing
is painted, the chosen automatic mask is used.

API (``/virtual_tryon``), inputs in order:
    person (image file), garment (image file), mask (image file, white = change, or None),
    mask_mode ("mask image" | "upper body" | "lower body" | "full outfit"; used when mask is
    None), seecoder, base_model ("auto": the inpainting model when configured), dilation (px),
    feather (px), crop_garment, keep_pose, guidance, steps, seed, randomize_seed, num_images,
    scheduler, max_side (longest side of the generation, 64..1536)
outputs: gallery (results at the person photo's size), gallery (mask, pose map and garment as
used), info (markdown), seed used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from prompt_free import masks as M
from prompt_free.errors import PromptFreeError
from prompt_free.metadata import tag
from prompt_free.settings import MASK_PX, TRYON_MAX_SIDE
from prompt_free.tasks.tryon import (
    MASK_IMAGE,
    TryOnSettings,
    auto_mask,
    inpainting_base_model,
    load_person,
    virtual_tryon,
)

from .endpoint import InputGroup, endpoint, handle_errors
from .uploads import image_input, mask_editor
from .widgets import (
    ModelPickers,
    format_info,
    progress_callback,
    run_buttons,
    sampler_controls,
    seecoder_picker,
    slider,
    stop_cancels,
    ui_defaults,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
AUTO_BASE = "auto"
CANVAS = (512, 768)  # the mask editor's fixed canvas (w, h); photos are letterboxed into it
BRUSH_COLOR = "#ff00ff"
MASK_MODE_CHOICES = [("painted / uploaded mask only", MASK_IMAGE)] + [(m, m) for m in M.MASK_MODES]


def _fit(size):
    """Where a photo of ``size`` sits in the editor's fixed canvas: (w, h, left, top)."""
    w, h = size
    s = min(CANVAS[0] / w, CANVAS[1] / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    return nw, nh, (CANVAS[0] - nw) // 2, (CANVAS[1] - nh) // 2


def _on_canvas(img: Image.Image, size) -> Image.Image:
    """``img`` (any size, resized to the photo's place) on a transparent canvas."""
    nw, nh, left, top = _fit(size)
    out = Image.new("RGBA", CANVAS, (0, 0, 0, 0))
    out.paste(img.convert("RGBA").resize((nw, nh), Image.LANCZOS if img.mode != "RGBA" else Image.NEAREST), (left, top))
    return out


def _editor_value(person: Image.Image, mask=None):
    """Editor value: the person photo letterboxed into the fixed canvas, and the mask (bool,
    person size) as a translucent layer in the same place. (The editor aligns server-set layers
    with the background reliably only when both are exactly canvas-sized.)"""
    layers = [_on_canvas(M.mask_overlay(mask), person.size)] if mask is not None else []
    return {"background": _on_canvas(person, person.size), "layers": layers, "composite": None}


def editor_mask(value, person_size):
    """The painted pixels of the editor's layers, mapped back onto the person photo of
    ``person_size``, as a mask image (white = change); None when nothing is painted."""
    if not value or not isinstance(value, dict):
        return None
    m = M.layers_mask(value.get("layers") or [])
    if m is None:
        return None
    w, h = person_size
    if (m.shape[1], m.shape[0]) == CANVAS:
        nw, nh, left, top = _fit(person_size)
        m = m[top:top + nh, left:left + nw]
    if (m.shape[1], m.shape[0]) != (w, h):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
    return M.mask_to_image(m) if m.any() else None


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
    editor = mask_editor(
        type="numpy", image_mode="RGBA", label="Mask: paint the region to change on the person",
        sources=(), transforms=(), format="png", layers=False, height=420,
        canvas_size=CANVAS, fixed_canvas=True,
        brush=gr.Brush(colors=[(BRUSH_COLOR, 0.6)], color_mode="fixed"), eraser=gr.Eraser(),
        elem_id="tryon-mask-editor",
    )
    with gr.Row():
        mask_mode = gr.Dropdown(MASK_MODE_CHOICES, value=M.UPPER_BODY, label="Automatic mask",
                                info="From the pose (OpenPose); used when nothing is painted",
                                elem_id="tryon-mask-mode")
        make = gr.Button("Make mask", elem_id="tryon-make-mask")
    with gr.Accordion("Upload a mask instead (white = change)", open=False):
        mask_upload = image_input(label="Mask image", sources=["upload", "clipboard"],
                                  height=200, elem_id="tryon-mask-upload")
    return person, garment, editor, mask_mode, make, mask_upload


def _tryon_settings(engine, inpaint) -> tuple:
    """Try-on options, the generation size and the models (base model "auto": the inpainting one)."""
    with gr.Accordion("Try-on settings", open=True):
        with gr.Row():
            dilation = slider(MASK_PX, "Mask dilation (px)", elem_id="tryon-dilation")
            feather = slider(MASK_PX, "Edge feathering (px)", info="Soft paste-back band outside the dilated mask",
                             elem_id="tryon-feather")
        with gr.Row():
            crop = gr.Checkbox(True, label="Crop the garment photo to the garment", elem_id="tryon-crop")
            keep_pose = gr.Checkbox(True, label="Keep pose (openpose ControlNet)",
                                    info="Needs the OpenPose detector weights", elem_id="tryon-keep-pose")
        max_side = slider(TRYON_MAX_SIDE, "Longest side of the generation (px)",
                          value=ui_defaults(engine)["tryon_max_side"],
                          info="The result is pasted back at the person photo's own size", elem_id="tryon-max-side")
    seecoder = seecoder_picker(engine)
    base_model = gr.Dropdown(
        [(f"auto ({inpaint})" if inpaint else "auto (default base model)", AUTO_BASE)]
        + engine.registry.names("base_models"),
        value=AUTO_BASE, label="Base model",
        info="Inpainting models (9-channel UNet) fill the mask; others use latent blending",
        elem_id="tryon-base-model",
    )
    return TryOnOptions(dilation, feather, crop, keep_pose), max_side, ModelPickers(seecoder, base_model)


def _mask_editor_events(engine, person, editor, mask_mode, make, mask_upload) -> None:
    """The person photo fills the editor; "Make mask" and a mask upload paint the editor's layer."""

    def person_to_editor(path):
        if not path:
            return None
        try:
            return _editor_value(load_person(path))
        except PromptFreeError:
            return None  # the run reports the unreadable photo

    person.change(person_to_editor, inputs=[person], outputs=[editor], queue=False, api_visibility="private")

    @handle_errors
    def make_mask(path, mode, progress=gr.Progress()):
        if not path:
            raise gr.Error("Upload the person photo first.")
        if mode == MASK_IMAGE:
            raise gr.Error("Choose an automatic mask (upper body, lower body or full outfit) to make one.")
        progress(0.1, desc="Detecting the pose")
        img = load_person(path)
        return _editor_value(img, M.load_mask(auto_mask(engine, img, mode)))

    make.click(make_mask, inputs=[person, mask_mode], outputs=[editor], api_visibility="private")

    @handle_errors
    def upload_mask(path, mask_path):
        if not mask_path:
            return gr.update()
        if not path:
            raise gr.Error("Upload the person photo first, then the mask.")
        img = load_person(path)
        return _editor_value(img, M.load_mask(mask_path, img.size))

    mask_upload.upload(upload_mask, inputs=[person, mask_upload], outputs=[editor], api_visibility="private")


def build(engine) -> None:
    inpaint = inpainting_base_model(engine)

    with gr.Tab("Virtual Try-On", id="tryon"):
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
                options, max_side, models = _tryon_settings(engine, inpaint)
                controls = sampler_controls(engine, size=False)
                run, stop = run_buttons("Try on", "tryon")
                mask = image_input(format="png", visible=False, label="Mask (API)",
                                   elem_id="tryon-mask")
            with gr.Column():
                gallery = gr.Gallery(label="Results", format="png", columns=2, elem_id="tryon-gallery")
                info = gr.Markdown(elem_id="tryon-info")
                used = gr.Gallery(label="Mask, pose and garment as used", format="png", columns=3, height=240,
                                  elem_id="tryon-used")

        examples = [[str(EXAMPLES / "tryon_person.png"), str(EXAMPLES / f"tryon_garment_{g}.png")]
                    for g in ("shirt", "trousers") if (EXAMPLES / f"tryon_garment_{g}.png").is_file()]
        if examples and (EXAMPLES / "tryon_person.png").is_file():
            gr.Examples(examples=examples, inputs=[person, garment], label="Example person and garments")
        _mask_editor_events(engine, person, editor, mask_mode, make, mask_upload)

        @handle_errors
        def take_mask(value, path):
            if not path:
                return None  # the run reports the missing photo
            return editor_mask(value, load_person(path).size)

        def generate(images, models, options, sampler, max_side, progress):
            seed = sampler.pick_seed()
            base_model = None if models.base_model in (None, "", AUTO_BASE) else models.base_model
            settings = TryOnSettings(base_model=base_model, seecoder=models.seecoder, **options.settings(),
                                     **sampler.settings(seed), max_side=max_side)
            mask = images.mask_or_mode()
            result = virtual_tryon(engine, images.person, images.garment, mask, settings,
                                   progress=progress_callback(progress))
            tag(engine, result, "virtual_tryon", settings,
                {"person": images.person, "garment": images.garment, "mask": mask}, keep_paths=False)
            return result.images, result.extras, _info(result.info), seed

        api = endpoint(generate, TryOnImages(person, garment, mask, mask_mode), models, options, controls,
                       ("max_side", max_side))
        taken = run.click(take_mask, inputs=[editor, person], outputs=[mask], api_visibility="private")
        event = taken.success(
            api.fn, inputs=api.inputs, outputs=[gallery, used, info, controls.seed], api_name="virtual_tryon",
        )
        stop_cancels(stop, taken, event)


def _info(info: dict) -> str:
    parts = [format_info(info)]
    gw, gh = info.get("generation_size", (None, None))
    if gw:
        parts.append(f"generated at {gw}x{gh} with **{info['base_model']}** ({info['method']}); "
                     f"mask: {info['mask']}; pose control: {info['controlnet'] or 'off'}")
    for note in info.get("notes", []):
        parts.append(f"note: {note}")
    return "  \n".join(p for p in parts if p)
