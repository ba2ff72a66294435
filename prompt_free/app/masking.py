"""The mask editor and shared controls of the inpainting tabs (Edit with a Reference,
Virtual Try-On).

The photo sits letterboxed in an image editor with a fixed canvas; the user paints the region
to change with a brush, or uploads a mask image (white = change), which is loaded into the
editor as an editable layer. When the tab runs, the painted pixels are mapped back onto the
photo's own pixels and handed to the endpoint as a hidden mask image, so an API call and a
browser run take the same path. (The editor aligns server-set layers with the background
reliably only when both are exactly canvas-sized, hence the fixed canvas.)
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import gradio as gr
import numpy as np
from PIL import Image

from prompt_free import masks as M
from prompt_free.errors import PromptFreeError
from prompt_free.settings import MASK_PX, TRYON_MAX_SIDE

from .endpoint import handle_errors
from .uploads import image_input, mask_editor
from .fields import slider
from .model_pickers import ModelPickers
from .widgets import format_info, ui_defaults

BRUSH_COLOR = "#ff00ff"


class MaskCanvas:
    """Where photos sit in an editor of canvas ``size`` (w, h), and the way back."""

    def __init__(self, size: Tuple[int, int]):
        self.size = (int(size[0]), int(size[1]))

    def fit(self, photo_size) -> Tuple[int, int, int, int]:
        """Where a photo of ``photo_size`` sits in the canvas: (w, h, left, top)."""
        w, h = photo_size
        cw, ch = self.size
        s = min(cw / w, ch / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        return nw, nh, (cw - nw) // 2, (ch - nh) // 2

    def place(self, img: Image.Image, photo_size) -> Image.Image:
        """``img`` (any size, resized to the photo's place) on a transparent canvas."""
        nw, nh, left, top = self.fit(photo_size)
        out = Image.new("RGBA", self.size, (0, 0, 0, 0))
        resample = Image.LANCZOS if img.mode != "RGBA" else Image.NEAREST
        out.paste(img.convert("RGBA").resize((nw, nh), resample), (left, top))
        return out

    def editor_value(self, photo: Image.Image, mask: Optional[np.ndarray] = None) -> dict:
        """Editor value: the photo in the canvas, and the mask (bool, photo size) as a
        translucent layer in the same place."""
        layers = [self.place(M.mask_overlay(mask), photo.size)] if mask is not None else []
        return {"background": self.place(photo, photo.size), "layers": layers, "composite": None}

    def mask_of(self, value, photo_size) -> Optional[Image.Image]:
        """The painted pixels of the editor's layers, mapped back onto the photo of
        ``photo_size``, as a mask image (white = change); None when nothing is painted."""
        if not value or not isinstance(value, dict):
            return None
        m = M.layers_mask(value.get("layers") or [])
        if m is None:
            return None
        w, h = photo_size
        if (m.shape[1], m.shape[0]) == self.size:
            nw, nh, left, top = self.fit(photo_size)
            m = m[top:top + nh, left:left + nw]
        if (m.shape[1], m.shape[0]) != (w, h):
            m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        return M.mask_to_image(m) if m.any() else None

    def editor(self, *, label: str, elem_id: str, height: int = 420) -> gr.ImageEditor:
        """The editor: one brush layer in ``BRUSH_COLOR``, an eraser, no uploads of its own."""
        return mask_editor(
            type="numpy", image_mode="RGBA", label=label, sources=(), transforms=(), format="png", layers=False,
            height=height, canvas_size=self.size, fixed_canvas=True,
            brush=gr.Brush(colors=[(BRUSH_COLOR, 0.6)], color_mode="fixed"), eraser=gr.Eraser(), elem_id=elem_id,
        )


def connect_editor(canvas: MaskCanvas, photo: gr.Image, editor: gr.ImageEditor, mask_upload: gr.Image,
                   load_photo: Callable[[str], Image.Image],
                   read_mask: Callable[[str, Tuple[int, int]], np.ndarray], photo_name: str,
                   mask_refills: Sequence[str] = ("change",)) -> None:
    """The photo fills the editor, with the uploaded mask (read by ``read_mask(path, photo size)``,
    a bool mask at the photo's size) as its painted layer when there is one. The photo's change
    and the mask input's ``mask_refills`` events fill it the same way, so an example that sets the
    photo and the mask together paints the mask whichever change comes last. (An input that the
    editor itself writes refills only on ``upload``/``clear``: a refill on its own change would
    race the strokes painted meanwhile.)"""

    def fill(path, mask_path):
        if not path:
            return None if not mask_path else gr.update()
        try:
            img = load_photo(path)
        except PromptFreeError:
            return None  # the run reports the unreadable photo
        if not mask_path:
            return canvas.editor_value(img)
        try:
            return canvas.editor_value(img, read_mask(mask_path, img.size))
        except PromptFreeError:
            return canvas.editor_value(img)  # the upload's own event says what is wrong with it

    @handle_errors
    def upload_mask(path, mask_path):
        if mask_path and not path:
            raise gr.Error(f"Upload the {photo_name} first, then the mask.")
        if not mask_path:
            return gr.update()
        img = load_photo(path)
        return canvas.editor_value(img, read_mask(mask_path, img.size))

    for change in (photo.change, *(getattr(mask_upload, event) for event in mask_refills)):
        change(fill, inputs=[photo, mask_upload], outputs=[editor], queue=False, api_visibility="private")
    mask_upload.upload(upload_mask, inputs=[photo, mask_upload], outputs=[editor], api_visibility="private")


def editor_to_mask(canvas: MaskCanvas, load_photo: Callable[[str], Image.Image]):
    """The handler that turns the editor's painted layer into the hidden mask image before a run."""

    @handle_errors
    def take_mask(value, path):
        if not path:
            return None  # the run reports the missing photo
        return canvas.mask_of(value, load_photo(path).size)

    return take_mask


# ----------------------------------------------------------------------------- shared controls
AUTO_BASE = "auto"  # base model choice: the inpainting model when configured, else the default


def mask_upload_input(prefix: str) -> gr.Image:
    """The "upload a mask instead" input (elem_id ``<prefix>-mask-upload``) in its accordion."""
    with gr.Accordion("Upload a mask instead (white = change)", open=False):
        return image_input(label="Mask image", sources=["upload", "clipboard"], height=200,
                           elem_id=f"{prefix}-mask-upload")


def hidden_mask(prefix: str) -> gr.Image:
    """The endpoint's mask image input: the editor's painted layer goes there before a run."""
    return image_input(format="png", visible=False, label="Mask (API)", elem_id=f"{prefix}-mask")


def mask_edge_sliders(prefix: str) -> Tuple[gr.Slider, gr.Slider]:
    """(dilation, feathering) of the mask in pixels (``<prefix>-dilation`` / ``-feather``)."""
    with gr.Row():
        dilation = slider(MASK_PX, "Mask dilation (px)", elem_id=f"{prefix}-dilation")
        feather = slider(MASK_PX, "Edge feathering (px)", info="Soft paste-back band outside the dilated mask",
                         elem_id=f"{prefix}-feather")
    return dilation, feather


def max_side_slider(engine, prefix: str, photo_name: str) -> gr.Slider:
    return slider(TRYON_MAX_SIDE, "Longest side of the generation (px)", value=ui_defaults(engine)["tryon_max_side"],
                  info=f"The result is pasted back at the {photo_name}'s own size", elem_id=f"{prefix}-max-side")


def base_model_picker(engine, inpaint: Optional[str], prefix: str) -> gr.Dropdown:
    """Base models with "auto" first: the inpainting model ``inpaint`` when there is one."""
    return gr.Dropdown(
        [(f"auto ({inpaint})" if inpaint else "auto (default base model)", AUTO_BASE)]
        + engine.registry.names("base_models"),
        value=AUTO_BASE, label="Base model",
        info="Inpainting models (9-channel UNet) fill the mask; others use latent blending",
        elem_id=f"{prefix}-base-model",
    )


def requested_base(value) -> Optional[str]:
    """The picker's value as the task's ``base_model`` (None: auto)."""
    return None if value in (None, "", AUTO_BASE) else value


class AutoBaseModels(ModelPickers):
    """The models of an inpainting tab: the base model "auto" is the task's None (the inpainting one)."""

    def settings(self) -> dict:
        return {"base_model": requested_base(self.base_model), "seecoder": self.seecoder}


def edit_info(info: dict, settings_type, *extra: str) -> str:
    """The info text of an inpainting tab: timings, size, method, ``extra`` parts, notes."""
    parts = [format_info(info, settings_type)]
    gw, gh = info.get("generation_size", (None, None))
    if gw:
        parts.append("; ".join((f"generated at {gw}x{gh} with **{info['base_model']}** ({info['method']})", *extra)))
    for note in info.get("notes", []):
        parts.append(f"note: {note}")
    return "  \n".join(p for p in parts if p)
