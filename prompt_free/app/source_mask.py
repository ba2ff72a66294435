"""Paint the source mask on the reference (issue 26): the Edit tab's mask editor
(``masking.MaskCanvas``, its canvas, brush and mask extraction) in a tab's "More reference
controls", on the tab's reference. What is painted fills the tab's ``reference_mask`` upload (the
endpoint's parameter, unchanged): API users upload a mask file, browser users paint one or upload
it, and both reach the task the same way. An uploaded mask is shown in the editor as its painted
layer, so painting goes on from it; erasing everything leaves no mask (the whole reference).
"""

from __future__ import annotations

from typing import Tuple

import gradio as gr
import numpy as np

from prompt_free import masks as M
from prompt_free.images import prepare_reference

from .masking import MaskCanvas, connect_editor, editor_to_mask

SOURCE_CANVAS = MaskCanvas((512, 512))  # references are often square; others are letterboxed into it


def load_reference(path):
    return prepare_reference(path, "reference image")


def read_source_mask(path, size: Tuple[int, int]) -> np.ndarray:
    """An uploaded source mask at the reference's ``size`` (stretched as the task stretches it)."""
    return M.fit_source_mask(M.load_mask(path, what=M.SOURCE_MASK), size)


def source_mask_painter(reference: gr.Image, reference_mask: gr.Image, prefix: str) -> gr.ImageEditor:
    """The editor ``<prefix>-reference-mask-editor`` (in an accordion, closed) showing ``reference``;
    a stroke (the editor's ``input``: the user's own edits, not the server's refills) writes the
    painted part, mapped back onto the reference's pixels, into ``reference_mask``."""
    with gr.Accordion("Paint the source mask on the reference", open=False, elem_id=f"{prefix}-reference-mask-paint"):
        editor = SOURCE_CANVAS.editor(label="Source mask: paint the part of the reference to use", height=360,
                                      elem_id=f"{prefix}-reference-mask-editor")
    connect_editor(SOURCE_CANVAS, reference, editor, reference_mask, load_reference, read_source_mask, "reference image",
                   mask_refills=("clear",))  # an upload refills through its own event; strokes write the mask
    editor.input(editor_to_mask(SOURCE_CANVAS, load_reference), inputs=[editor, reference], outputs=[reference_mask],
                 queue=False, api_visibility="private", show_progress="hidden", trigger_mode="always_last")
    return editor


def paint_on(reference: gr.Image, prefix: str):
    """``appended_section``'s ``inside``: the painter on ``reference`` for the section's ``reference_mask``."""
    return lambda group: source_mask_painter(reference, group["reference_mask"], prefix)


__all__ = ["SOURCE_CANVAS", "paint_on", "source_mask_painter"]
