"""Comparison tab: Prompt-Free side by side with the text-based alternatives, in one click.

Same reference, structure image, ControlNet, base model, seed and settings for every column:
(1) Prompt-Free (SeeCoder + structure ControlNet), (2) Dual-ControlNet (shuffle content
ControlNet + structure ControlNet + CLIP text), (3) IP-Adapter (only when configured).

API (``/compare``), inputs in order:
    reference, structure, controlnet, mode, preprocessor, seecoder, base_model,
    use_prompt_free, use_dual_controlnet, use_ip_adapter, prompt, negative_prompt,
    content_scale, ip_adapter_scale, guidance, steps, width, height, seed, randomize_seed, scheduler
outputs: prompt_free_image, dual_controlnet_image, ip_adapter_image, prompt_free_stats,
    dual_controlnet_stats, ip_adapter_stats, differences (markdown), side_by_side (file),
    maps (gallery: structure map, shuffled reference), seed used.
A switched-off column returns no image and "switched off".
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from prompt_free.errors import PromptFreeError
from prompt_free.tasks.compare import (
    DUAL_CONTROLNET,
    IP_ADAPTER,
    METHOD_LABELS,
    METHODS,
    PROMPT_FREE,
    CompareSettings,
    compare,
    differences,
    ip_adapter_names,
)
from prompt_free.tasks.control import MODE_AS_IS, MODE_PREPROCESS, MODES, controlnet_choices, default_preprocessor, follow_size

from .widgets import handle_errors, preprocessor_follows_controlnet, model_pickers, pick_seed, progress_callback, sampler_controls, ui_defaults

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
ELEM = {PROMPT_FREE: "prompt-free", DUAL_CONTROLNET: "dual", IP_ADAPTER: "ip"}
OFF = "*switched off*"
IP_NOT_CONFIGURED = (
    "IP-Adapter column: *not configured*. Add an entry under `ip_adapters:` in checkpoints.yaml "
    "(e.g. h94/IP-Adapter `models/ip-adapter_sd15.safetensors`) to compare with it."
)
_DOWNLOAD_DIR = None


def _preprocessor_names():
    from prompt_free import detectors

    return list(detectors.SPECS)


def _gib(n) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def column_stats(col) -> str:
    """'**wall 1.23 s** · peak GPU memory 2.10 GiB' and the parts of the wall time."""
    t = dict(col.timings)
    wall = t.pop("wall", 0.0)
    mem = _gib(col.peak_memory) if col.peak_memory is not None else "n/a on CPU"
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in t.items())
    return f"**wall {wall:.2f} s** · peak GPU memory {mem}" + (f"  \n<small>{parts}</small>" if parts else "")


def differences_table(result) -> str:
    rows = differences(result)
    if not rows:
        return ""
    head = ["method", "conditioning", "controlnets", "text encoder", "image encoder"]
    titles = ["Method", "Content comes from", "ControlNets", "Text encoder", "Image encoder"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[h]).replace("|", "\\|") for h in head) + " |")
    info = result.info
    lines.append("")
    lines.append(
        f"Same for every column: seed {info['seed']}, {info['width']}x{info['height']}, {info['steps']} steps, "
        f"guidance {info['guidance']:g}, {info['scheduler']}, base model {info['base_model']}, structure ControlNet "
        f"**{info['controlnet']}** ({'preprocessed' if info['mode'] == MODE_PREPROCESS else 'as-is'}); the UNet, VAE and "
        "structure ControlNet are the same loaded objects."
    )
    return "\n".join(lines)


def _save_side_by_side(image, seed) -> str:
    global _DOWNLOAD_DIR
    if _DOWNLOAD_DIR is None or not os.path.isdir(_DOWNLOAD_DIR):
        _DOWNLOAD_DIR = tempfile.mkdtemp(prefix="pfd-compare-")
    fd, path = tempfile.mkstemp(prefix=f"prompt-free-comparison-seed{seed}-", suffix=".png", dir=_DOWNLOAD_DIR)
    with os.fdopen(fd, "wb") as f:
        image.save(f, format="PNG")
    return path


def build(engine) -> None:
    d = ui_defaults(engine)
    tiny = engine.registry.is_tiny
    choices = controlnet_choices(engine)
    if not choices:
        return  # no structure ControlNet in checkpoints.yaml: no tab
    default_type = engine.defaults.get("controlnet") if engine.defaults.get("controlnet") in choices else choices[0]
    preprocessors = _preprocessor_names()
    pre_default = default_preprocessor(engine, default_type)
    pre_default = pre_default if pre_default in preprocessors else preprocessors[0]
    ip_names = ip_adapter_names(engine)
    content_cn = engine.defaults.get("content_controlnet") or "shuffle"

    with gr.Tab("Dual-ControlNet Comparison", id="compare"):
        gr.Markdown(
            "**Prompt-Free vs. the alternatives, in one click.** Every column uses the same reference image, "
            "structure image and ControlNet, base model, seed and settings; only how the reference's content "
            f"reaches the model differs: **Prompt-Free** uses SeeCoder; **Dual-ControlNet** uses a *{content_cn}* "
            "content ControlNet on the reference plus the CLIP text encoder (prompt empty by default)"
            + ("; **IP-Adapter** adds image tokens from a CLIP image encoder." if ip_names else ".")
        )
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    reference = gr.Image(type="filepath", label="Reference image (content, style)",
                                         sources=["upload", "clipboard"], height=240, elem_id="compare-reference")
                    structure = gr.Image(type="filepath", label="Structure image", sources=["upload", "clipboard"],
                                         height=240, elem_id="compare-structure")
                with gr.Row():
                    kind = gr.Dropdown(choices, value=default_type, label="Structure ControlNet",
                                       elem_id="compare-type")
                    mode = gr.Radio(list(MODES), value=MODE_AS_IS, label="Structure image is", elem_id="compare-mode",
                                    info="use as-is: a ready map; preprocess: a picture to detect it from")
                    pre = gr.Dropdown(preprocessors, value=pre_default, label="Preprocessor",
                                      elem_id="compare-preprocessor", allow_custom_value=True,
                                      info="Detector for 'preprocess' (default: the ControlNet's own)")
                seecoder, base_model = model_pickers(engine)
                with gr.Group():
                    gr.Markdown("**Columns** (a switched-off column does no work)")
                    with gr.Row():
                        use_pf = gr.Checkbox(True, label=METHOD_LABELS[PROMPT_FREE], elem_id="compare-use-prompt-free")
                        use_dual = gr.Checkbox(True, label=METHOD_LABELS[DUAL_CONTROLNET], elem_id="compare-use-dual")
                        use_ip = gr.Checkbox(bool(ip_names), label=METHOD_LABELS[IP_ADAPTER], interactive=bool(ip_names),
                                             elem_id="compare-use-ip")
                    if not ip_names:
                        gr.Markdown(IP_NOT_CONFIGURED, elem_id="compare-ip-note")
                with gr.Accordion("Baseline settings (text-based columns)", open=False):
                    prompt = gr.Textbox("", label="Prompt (optional)", placeholder="empty: no text, as Prompt-Free",
                                        elem_id="compare-prompt")
                    negative = gr.Textbox("", label="Negative prompt", elem_id="compare-negative",
                                          info="The unconditional half of classifier-free guidance")
                    with gr.Row():
                        content_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Content ControlNet scale")
                        ip_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="IP-Adapter scale", visible=bool(ip_names))
                controls = sampler_controls(engine, num_images=False)
                for name in ("guidance", "steps", "width", "height", "seed"):  # ids for tests and styling
                    getattr(controls, name).elem_id = f"compare-{name}"
                run = gr.Button("Compare", variant="primary", elem_id="compare-run")
        outputs_img, outputs_stats = {}, {}
        with gr.Row(equal_height=True):
            for m in METHODS:
                with gr.Column(visible=(m != IP_ADAPTER or bool(ip_names)), min_width=200):
                    outputs_img[m] = gr.Image(type="pil", format="png", label=METHOD_LABELS[m], interactive=False,
                                              elem_id=f"compare-image-{ELEM[m]}")
                    outputs_stats[m] = gr.Markdown(elem_id=f"compare-stats-{ELEM[m]}")
        diff = gr.Markdown(elem_id="compare-differences")
        with gr.Row():
            download = gr.File(label="Download: all results side by side (PNG)", elem_id="compare-download")
            maps = gr.Gallery(label="Maps used: structure, shuffled reference", format="png", columns=2, height=200,
                              elem_id="compare-maps")

        preprocessor_follows_controlnet(engine, kind, pre, preprocessors)

        def size_follows(path):
            if not path:
                return gr.update(), gr.update()
            try:
                if tiny:
                    w, h = follow_size(path, lo=d["size_min"], hi=d["size"], keep_aspect=True)
                else:
                    w, h = follow_size(path, lo=max(512, d["size_min"]), hi=d["size_max"])
            except PromptFreeError:
                return gr.update(), gr.update()
            return w, h

        structure.change(size_follows, inputs=[structure], outputs=[controls.width, controls.height],
                         queue=False, api_visibility="private")
        _examples(reference, structure, kind, mode, choices)

        @handle_errors
        def run_compare(reference_image, structure_image, structure_controlnet, structure_mode, preprocessor,
                        seecoder, base_model, prompt_free_column, dual_controlnet_column, ip_adapter_column,
                        prompt, negative_prompt, content_scale, ip_adapter_scale, guidance, steps, width, height,
                        seed, randomize_seed, scheduler, progress=gr.Progress()):
            seed = pick_seed(seed, randomize_seed)
            methods = [m for m, on in ((PROMPT_FREE, prompt_free_column), (DUAL_CONTROLNET, dual_controlnet_column), (IP_ADAPTER, ip_adapter_column)) if on]
            if not methods:
                raise gr.Error("All columns are switched off: tick at least one method to compare.")
            if IP_ADAPTER in methods and not ip_names:
                raise gr.Error("The IP-Adapter column is not available: no IP-Adapter is configured in checkpoints.yaml.")
            result = compare(
                engine, reference_image, structure_image, structure_controlnet, mode=structure_mode, preprocessor=preprocessor,
                settings=CompareSettings(
                    base_model=base_model, seecoder=seecoder, guidance=guidance, steps=steps, width=width,
                    height=height, seed=seed, scheduler=scheduler, methods=tuple(methods), prompt=prompt or "",
                    negative_prompt=negative_prompt or "", content_scale=content_scale, ip_adapter_scale=ip_adapter_scale,
                ),
                progress=progress_callback(progress, "Comparing"),
            )
            images = [result.columns[m].image if m in result.columns else None for m in METHODS]
            stats = [column_stats(result.columns[m]) if m in result.columns else OFF for m in METHODS]
            used_maps = list(result.extras) + [x for c in result.columns.values() for x in c.extras]
            return (*images, *stats, differences_table(result), _save_side_by_side(result.side_by_side, seed),
                    used_maps, seed)

        c = controls
        run.click(
            run_compare,
            inputs=[reference, structure, kind, mode, pre, seecoder, base_model, use_pf, use_dual, use_ip,
                    prompt, negative, content_scale, ip_scale, c.guidance, c.steps, c.width, c.height, c.seed,
                    c.randomize, c.scheduler],
            outputs=[*(outputs_img[m] for m in METHODS), *(outputs_stats[m] for m in METHODS), diff, download, maps,
                     c.seed],
            api_name="compare",
        )


def _examples(reference, structure, kind, mode, choices) -> None:
    rows = [
        ("astronaut.jpg", "pose_standing.png", "openpose"),
        ("chelsea.jpg", "pose_arms_up.png", "openpose"),
        ("coffee.jpg", "canny_house.png", "canny"),
        ("rocket.jpg", "scribble_rocket.png", "scribble"),
    ]
    examples = [
        [str(EXAMPLES / ref), str(EXAMPLES / struct), cn, MODE_AS_IS]
        for ref, struct, cn in rows
        if cn in choices and (EXAMPLES / ref).is_file() and (EXAMPLES / struct).is_file()
    ]
    if examples:
        gr.Examples(examples=examples, inputs=[reference, structure, kind, mode],
                    label="Examples: reference + ready structure map (as-is)")
