"""The "Saved embeddings" accordion (Image Variation): save the reference's SeeCoder embedding
(a download), load one (the ``embedding`` upload, used instead of encoding the reference) and
combine two or more with weights and a mode (a download). The library part is
``prompt_free.embeddings``; other tabs take the ``embedding`` upload in their appended section."""

from __future__ import annotations

from typing import Any, Dict, List

import gradio as gr

from prompt_free import embeddings

from . import cache_files
from . import runner as runners
from .endpoint import handle_errors


def embedding_upload(prefix: str) -> gr.File:
    """The ``embedding`` parameter's upload (a .safetensors file made by ``prompt-free embed`` or here)."""
    return gr.File(label="Saved embedding (.safetensors, optional): used instead of encoding the reference",
                   file_types=[".safetensors"], type="filepath", elem_id=f"{prefix}-embedding")


def saved_embeddings(engine, prefix: str, reference, seecoder) -> Dict[str, Any]:
    """The accordion; returns ``{"embedding": upload}`` for the tab's appended section."""
    runner = runners.current()  # the encoding runs where the tab's tasks run
    with gr.Accordion("Saved embeddings", open=False, elem_id=f"{prefix}-embeddings"):
        upload = embedding_upload(prefix)
        save = gr.Button("Save the reference's embedding", size="sm", elem_id=f"{prefix}-embedding-save")
        saved = gr.File(label="Embedding of the reference (download)", interactive=False,
                        elem_id=f"{prefix}-embedding-saved")
        parts = gr.File(label="Embeddings to combine (two or more)", file_count="multiple",
                        file_types=[".safetensors"], type="filepath", elem_id=f"{prefix}-embedding-parts")
        with gr.Row():
            weights = gr.Textbox(label="Weights", placeholder="1, 1 (one per file; empty: 1 each)",
                                 elem_id=f"{prefix}-embedding-weights")
            mode = gr.Dropdown(list(embeddings.MODES), value=embeddings.AVERAGE, label="Mode",
                               info="norm_average: the average, each token rescaled to the inputs' mean norm",
                               elem_id=f"{prefix}-embedding-mode")
        combine = gr.Button("Combine", size="sm", elem_id=f"{prefix}-embedding-combine")
        combined = gr.File(label="Combined embedding (download)", interactive=False,
                           elem_id=f"{prefix}-embedding-combined")

    @handle_errors
    def save_embedding(ref, name):
        if not ref:
            raise gr.Error("upload a reference image first: its embedding is what is saved")
        made = runner.call(engine, embeddings.encode, ref, name)
        return cache_files.save_bytes(made.to_bytes(), "embedding.safetensors", saved.GRADIO_CACHE)

    @handle_errors
    def combine_embeddings(files, text, how):
        loaded = [embeddings.load(f, "embedding") for f in (files or [])]
        made = embeddings.combine(loaded, parse_weights(text), how)
        return cache_files.save_bytes(made.to_bytes(), f"{made.settings['mode']}.safetensors", combined.GRADIO_CACHE)

    save.click(save_embedding, inputs=[reference, seecoder], outputs=[saved], api_name=f"{prefix}_save_embedding")
    combine.click(combine_embeddings, inputs=[parts, weights, mode], outputs=[combined],
                  api_name=f"{prefix}_combine_embeddings")
    return {"embedding": upload}


def parse_weights(text) -> List[float]:
    """"1, 0.5" -> [1.0, 0.5]; empty -> [] (1 each)."""
    items = [t for t in str(text or "").replace(";", ",").replace(" ", ",").split(",") if t.strip()]
    try:
        return [float(t) for t in items]
    except ValueError:
        raise gr.Error(f"the weights must be numbers separated by commas, got {text!r}") from None
