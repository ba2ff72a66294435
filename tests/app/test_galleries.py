"""The results show whole pictures: every gallery of the app fits its pictures in (a non-square
picture is not cropped to a square thumbnail)."""

from __future__ import annotations

import gradio as gr


def test_every_gallery_shows_whole_pictures(app):
    _, demo, _ = app
    galleries = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert len(galleries) >= 6  # a result gallery per tab at least
    assert all(g.object_fit == "contain" for g in galleries), [g.elem_id for g in galleries if g.object_fit != "contain"]
