"""Reference + ControlNet tab: content and style from a reference image, structure from one or
two control images (pose, edges, depth ...) through ControlNets.

API (``/reference_control``), inputs in order:
    reference, seecoder, base_model,
    type_1, image_1, mode_1, preprocessor_1, scale_1, start_1, end_1,
    use_second, type_2, image_2, mode_2, preprocessor_2, scale_2, start_2, end_2,
    check_maps, guidance, steps, width, height, seed, randomize_seed, num_images, scheduler
outputs: gallery (the results, then the control maps used), info (markdown), seed used.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from prompt_free.errors import PromptFreeError
from prompt_free.tasks.control import (
    MODE_AS_IS,
    MODE_PREPROCESS,
    MODES,
    ControlSettings,
    ControlSpec,
    controlnet_choices,
    default_preprocessor,
    follow_size,
    reference_control,
)

from .widgets import format_info, handle_errors, preprocessor_follows_controlnet, model_pickers, pick_seed, progress_callback, sampler_controls, ui_defaults

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"

def _preprocessor_choices():
    """(label, name) of every detector."""
    from prompt_free import detectors

    return [(f"{spec.label} [{name}]", name) for name, spec in detectors.SPECS.items()]


def _annotator_note(mode, name, registry=None) -> str:
    """A warning under the preprocessor when its detector weights cannot be found."""
    if mode != MODE_PREPROCESS or not name or name == "none":
        return ""
    try:
        from prompt_free import detectors

        if detectors.available(name, registry):
            return ""
    except Exception as e:  # noqa: BLE001 - a note, never an error
        return f"&#9888; The '{name}' detector cannot be used here ({type(e).__name__})."
    return (
        f"&#9888; The weights of the **{name}** detector were not found: put the lllyasviel/Annotators files in a "
        "folder named by `PFD_ANNOTATOR_DIR`, or run where the Hugging Face Hub is reachable. Meanwhile, upload a "
        f"ready map and choose **{MODE_AS_IS}**."
    )


def _control_block(engine, i: int, choices, default_type: str):
    """Widgets of ControlNet ``i`` (1-based)."""
    pre_choices = _preprocessor_choices()
    preprocessors = [n for _, n in pre_choices]
    pre_default = default_preprocessor(engine, default_type)
    if pre_default not in preprocessors:
        pre_default = preprocessors[0]
    kind = gr.Dropdown(choices, value=default_type, label=f"ControlNet {i} type", elem_id=f"control-type-{i}",
                       info="What the control image fixes: pose, edges, depth ...")
    image = gr.Image(type="filepath", label=f"Control image {i}", sources=["upload", "clipboard"], height=280,
                     elem_id=f"control-image-{i}")
    with gr.Row():
        mode = gr.Radio(list(MODES), value=MODE_AS_IS, label=f"Control image {i} is", elem_id=f"control-mode-{i}",
                        info="use as-is: a ready map (skeleton, edges ...); preprocess: a picture to detect it from")
        pre = gr.Dropdown(pre_choices, value=pre_default, label="Preprocessor", elem_id=f"control-preprocessor-{i}",
                          info="Detector for 'preprocess' (default: the ControlNet's own)")
    note = gr.Markdown(elem_id=f"control-note-{i}")
    with gr.Row():
        scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Conditioning scale", elem_id=f"control-scale-{i}")
        start = gr.Slider(0, 1, value=0.0, step=0.01, label="Control start", info="fraction of the steps")
        end = gr.Slider(0, 1, value=1.0, step=0.01, label="Control end", info="fraction of the steps")

    preprocessor_follows_controlnet(engine, kind, pre, preprocessors)
    for trigger in (mode.change, pre.change):
        trigger(lambda m, n: _annotator_note(m, n, engine.registry), inputs=[mode, pre], outputs=[note], queue=False, api_visibility="private")
    return [kind, image, mode, pre, scale, start, end]


def build(engine) -> None:
    d = ui_defaults(engine)
    tiny = engine.registry.is_tiny
    choices = controlnet_choices(engine)
    if not choices:
        return  # no ControlNet in checkpoints.yaml: no tab
    first_type = engine.defaults.get("controlnet") if engine.defaults.get("controlnet") in choices else choices[0]
    second_type = "depth" if "depth" in choices else choices[min(1, len(choices) - 1)]

    with gr.Tab("Reference + ControlNet", id="control"):
        gr.Markdown(
            "Content and style come from the **reference image** (SeeCoder); the structure comes from a "
            "**control image** through a ControlNet: a pose skeleton, an edge map, a depth map ... Upload a ready map "
            f"and keep **{MODE_AS_IS}**, or upload a picture and choose **{MODE_PREPROCESS}** to detect the map. "
            "The output size follows the first control image (you can change it)."
        )
        with gr.Row():
            with gr.Column():
                reference = gr.Image(type="filepath", label="Reference image", sources=["upload", "clipboard"],
                                     height=280, elem_id="control-reference")
                seecoder, base_model = model_pickers(engine)
                with gr.Group():
                    first = _control_block(engine, 1, choices, first_type)
                use_second = gr.Checkbox(False, label="Add a second ControlNet (e.g. pose + depth)",
                                         elem_id="control-use-2")
                with gr.Group(visible=False) as second_group:
                    second = _control_block(engine, 2, choices, second_type)
                check_maps = gr.Checkbox(True, label="Check that as-is maps look like their ControlNet's kind",
                                         elem_id="control-check-maps")
                controls = sampler_controls(engine)
                run = gr.Button("Generate", variant="primary", elem_id="control-run")
            with gr.Column():
                gallery = gr.Gallery(label="Results, then the control maps used", format="png", columns=2,
                                     elem_id="control-gallery")
                info = gr.Markdown(elem_id="control-info")

        use_second.change(lambda on: gr.update(visible=bool(on)), inputs=[use_second], outputs=[second_group],
                          queue=False, api_visibility="private")

        def size_follows(path):
            """Width/height sliders follow an uploaded first control image."""
            if not path:
                return gr.update(), gr.update()
            try:
                if tiny:  # the offline demo stays small: scale into the default size, keep the ratio
                    w, h = follow_size(path, lo=d["size_min"], hi=d["size"], keep_aspect=True)
                else:
                    w, h = follow_size(path, lo=max(512, d["size_min"]), hi=d["size_max"])
            except PromptFreeError:
                return gr.update(), gr.update()  # the run reports the unreadable image
            return w, h

        first[1].change(size_follows, inputs=[first[1]], outputs=[controls.width, controls.height],
                        queue=False, api_visibility="private")

        _examples(reference, first, use_second, second)

        @handle_errors
        def generate(reference_image, seecoder, base_model,
                     type1, image1, mode1, preprocessor1, scale1, start1, end1,
                     use_second, type2, image2, mode2, preprocessor2, scale2, start2, end2,
                     check_maps, guidance, steps, width, height, seed, randomize_seed, num_images, scheduler,
                     progress=gr.Progress()):
            seed = pick_seed(seed, randomize_seed)
            specs = [ControlSpec(type1, image1, mode1, preprocessor1, scale1, start1, end1, check_map=bool(check_maps))]
            if use_second:
                specs.append(ControlSpec(type2, image2, mode2, preprocessor2, scale2, start2, end2, check_map=bool(check_maps)))
            result = reference_control(
                engine, reference_image, specs,
                ControlSettings(base_model=base_model, seecoder=seecoder, guidance=guidance, steps=steps,
                                width=width, height=height, seed=seed, num_images=num_images, scheduler=scheduler),
                progress=progress_callback(progress),
            )
            return result.images + result.extras, _info(result.info), seed

        run.click(
            generate,
            inputs=[reference, seecoder, base_model, *first, use_second, *second, check_maps, *controls.inputs()],
            outputs=[gallery, info, controls.seed],
            api_name="reference_control",
        )


def _info(info: dict) -> str:
    parts = [format_info(info)]
    for i, c in enumerate(info.get("controls", []), 1):
        how = f"preprocessed with {c['preprocessor']}" if c.get("preprocessor") else "as-is"
        parts.append(f"ControlNet {i}: **{c['controlnet']}** ({how}), scale {c['scale']:g}, "
                     f"steps {c['start']:.0%}–{c['end']:.0%}")
    return "  \n".join(p for p in parts if p)


def _examples(reference, first, use_second, second) -> None:
    rows = [
        ("astronaut.jpg", "openpose", "pose_standing.png", False, None),
        ("chelsea.jpg", "openpose", "pose_arms_up.png", False, None),
        ("astronaut.jpg", "openpose", "pose_two_people.png", False, None),
        ("coffee.jpg", "canny", "canny_house.png", False, None),
        ("rocket.jpg", "scribble", "scribble_rocket.png", False, None),
        ("chelsea.jpg", "depth", "depth_spheres.png", False, None),
        ("astronaut.jpg", "openpose", "pose_standing.png", True, "depth_spheres.png"),
    ]
    choices = first[0].choices
    names = {c[1] if isinstance(c, (tuple, list)) else c for c in choices}
    second_default = second[0].value
    examples = []
    for ref, kind, control, two, control2 in rows:
        paths = [EXAMPLES / ref, EXAMPLES / control] + ([EXAMPLES / control2] if control2 else [])
        if kind not in names or (two and "depth" not in names) or not all(p.is_file() for p in paths):
            continue
        examples.append([str(EXAMPLES / ref), kind, str(EXAMPLES / control), MODE_AS_IS, two,
                         "depth" if two else second_default, str(EXAMPLES / control2) if control2 else None,
                         MODE_AS_IS])
    if examples:
        gr.Examples(
            examples=examples,
            inputs=[reference, first[0], first[1], first[2], use_second, second[0], second[1], second[2]],
            label="Examples: reference + control map (drawn maps, used as-is)",
            visible_columns=[0, 1, 2, 6],  # reference, type, control image 1, control image 2
            elem_id="control-examples",
        )
