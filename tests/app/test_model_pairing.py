"""Picking a SeeCoder that checkpoints.yaml pairs with a base model (SeeCoder-Anime -> Anything-v4)
sets the base model picker; leaving it goes back to the default; a user's own choice stays."""

from __future__ import annotations

import gradio as gr

from prompt_free.app.model_pickers import model_pickers, paired_base_model
from prompt_free.engine import Engine
from prompt_free.registry import DEFAULT_CHECKPOINTS, Registry


def test_the_anime_seecoder_brings_its_base_model_and_leaving_it_restores_the_default():
    real = Registry.load(DEFAULT_CHECKPOINTS, "real")
    assert paired_base_model(real, "SeeCoder-Anime", "Stable Diffusion v1.5") == "Anything-v4"
    assert paired_base_model(real, "SeeCoder-Anime", "DreamShaper 8") == "Anything-v4"
    assert paired_base_model(real, "SeeCoder", "Anything-v4") == "Stable Diffusion v1.5"
    assert paired_base_model(real, "SeeCoder-PA", "DreamShaper 8") == "DreamShaper 8"


def test_the_seecoder_picker_drives_the_base_model_picker():
    engine = Engine(Registry.load(DEFAULT_CHECKPOINTS, "real"), device="cpu")
    with gr.Blocks() as demo:
        models = model_pickers(engine)
    assert models.base_model.value == "Stable Diffusion v1.5"
    wired = [d for d in demo.fns.values()
             if [t[0] for t in d.targets] == [models.seecoder._id] and d.outputs == [models.base_model]]
    assert len(wired) == 1
    assert wired[0].fn("SeeCoder-Anime", "Stable Diffusion v1.5") == "Anything-v4"
