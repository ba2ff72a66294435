"""The SeeCoder and base model pickers of the tabs; a SeeCoder paired with a base model in
checkpoints.yaml (SeeCoder-Anime) brings it along."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .endpoint import InputGroup


@dataclass
class ModelPickers(InputGroup):
    seecoder: gr.Dropdown
    base_model: gr.Dropdown

    def settings(self) -> dict:
        return {"base_model": self.base_model, "seecoder": self.seecoder}


def seecoder_picker(engine) -> gr.Dropdown:
    reg = engine.registry
    return gr.Dropdown(reg.names("seecoders"), value=reg.defaults["seecoder"], label="SeeCoder",
                       info="SeeCoder-PA keeps layout better; SeeCoder-Anime suits anime base models.")


def model_pickers(engine) -> ModelPickers:
    reg = engine.registry
    seecoder = seecoder_picker(engine)
    base_model = gr.Dropdown(reg.names("base_models"), value=reg.base_model_for(reg.defaults["seecoder"]),
                             label="Base model", info="Any SD 1.x model from checkpoints.yaml.")
    seecoder.input(lambda name, base: paired_base_model(reg, name, base), inputs=[seecoder, base_model],
                   outputs=[base_model], queue=False, api_visibility="private")
    return ModelPickers(seecoder, base_model)


def paired_base_model(registry, seecoder: str, current: str) -> str:
    """The base model after picking ``seecoder``: the one its entry pairs it with (SeeCoder-Anime:
    an anime model); leaving a pairing goes back to the profile's default; else ``current`` stays."""
    pairing = {n: registry.entry("seecoders", n).option("base_model") for n in registry.names("seecoders")}
    if pairing.get(seecoder):
        return pairing[seecoder]
    return registry.defaults["base_model"] if current in pairing.values() else current
