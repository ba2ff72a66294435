"""UI controls derived from the settings' declarations (``prompt_free.tasks.fields``).

A declared setting needs no UI code of its own: ``setting_control`` makes its control (a slider
over its range, a dropdown of its choices, a text box, a checkbox) with its label and help, and
``section_controls`` the group of a section (the reference's options, the last parameters)
that a tab adds to its endpoint. Labels of a choice's values are UI wording (``CHOICE_LABELS``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import gradio as gr

from prompt_free.blocks import PRESET_LABELS
from prompt_free.settings import Range
from prompt_free.tasks.fields import APPENDED, LAST, REFERENCE, SettingInfo, in_section, notes
from prompt_free.tasks.text_image import CONCAT, STYLE_MODE

from .endpoint import InputGroup
from .uploads import image_input

# (label, value) of the values of a choice setting, by field name; a setting not listed shows its values
CHOICE_LABELS = {
    "prompt_mode": [("concat: text tokens + reference tokens", CONCAT),
                    ("style: text in the layout blocks, reference in the style blocks", STYLE_MODE)],
    "blocks": [(label, preset) for preset, label in PRESET_LABELS.items()],
}
RADIO = {"prompt_mode"}  # choice settings shown as radio buttons (few, long labels)


def bound(x):
    """2.0 -> 2 (the slider, its API description and Gradio's range messages show '2')."""
    return int(x) if float(x).is_integer() else x


def slider(r: Range, label: str, *, value=None, lo=None, hi=None, **kwargs) -> gr.Slider:
    """A slider over the setting ``r``: ``r.lo``..``r.slider_hi`` in steps of ``r.step``, at
    ``r.default``; ``value``/``lo``/``hi`` override (the tiny profile starts smaller)."""
    return gr.Slider(bound(r.lo if lo is None else lo), bound(r.slider_hi if hi is None else hi),
                     value=r.default if value is None else value, step=bound(r.step), label=label, **kwargs)


def elem_id(prefix: str, name: str, info: SettingInfo) -> str:
    return f"{prefix}-{info.ui_id or name.replace('_', '-')}"


def setting_control(name: str, decl: SettingInfo, prefix: str, **overrides) -> Any:
    """The control of one declared setting (elem_id ``<prefix>-<ui_id or name>``); ``overrides``:
    the component's own keywords (a placeholder, another ``info``)."""
    kwargs = dict(label=decl.ui_label or decl.label, elem_id=elem_id(prefix, name, decl))
    text = decl.ui_info if decl.ui_info is not None else decl.help
    if text:
        kwargs["info"] = text
    kwargs.update(overrides)
    if decl.image:  # an upload that reaches the tasks' one opener (its path, undecoded); gr.Image has no info
        kwargs.pop("info", None)
        return image_input(sources=["upload", "clipboard"], height=kwargs.pop("height", 200), **kwargs)
    if decl.range is not None and decl.neutral is None:  # optional (empty: off)
        return optional_number(decl.range, **kwargs)
    if decl.range is not None:
        return slider(decl.range, value=decl.neutral, **kwargs)
    if decl.choices is not None:
        choices = CHOICE_LABELS.get(name, list(decl.choices))
        widget = gr.Radio if name in RADIO else gr.Dropdown
        return widget(choices, value=decl.neutral, **kwargs)
    if isinstance(decl.neutral, bool):
        return gr.Checkbox(decl.neutral, **kwargs)
    return gr.Textbox(decl.neutral, max_lines=3, **kwargs)


def optional_number(r: Range, *, label: str, elem_id: str, info: Optional[str] = None) -> gr.Number:
    """An optional setting over ``r`` (None: off). Its parameter is a hidden ``gr.Number``: a
    rendered one shows and sends 0 for an empty value (Gradio 6.31), which would turn the setting
    on at 0. Users set it with a checkbox ``<elem_id>-on`` and a slider ``<elem_id>-value`` that
    write the number (None when unchecked); a value set on the number (a PNG's settings) sets them."""
    number = gr.Number(value=None, minimum=bound(r.lo), maximum=bound(r.hi), step=bound(r.step), label=label,
                       visible=False, elem_id=elem_id)
    with gr.Row():
        on = gr.Checkbox(False, label=f"{label}: on", elem_id=f"{elem_id}-on", scale=1)
        value = slider(r, label, info=info, elem_id=f"{elem_id}-value", scale=3)

    def write(enabled, v):
        return v if enabled else None

    def show(n):
        return gr.update(value=n is not None), (gr.update() if n is None else gr.update(value=n))

    for event in (on.change, value.change):
        event(write, inputs=[on, value], outputs=[number], queue=False, api_visibility="private")
    number.change(show, inputs=[number], outputs=[on, value], queue=False, api_visibility="private")
    return number


class SettingsGroup(InputGroup):
    """The controls of some declared settings, by field name (their public parameter names);
    ``settings()`` gives their values (of a handler's group) as settings keywords, whole numbers
    for integer ranges."""

    def __init__(self, controls: Mapping[str, Any], infos: Mapping[str, SettingInfo]):
        self.controls = dict(controls)
        self.infos = dict(infos)

    def items(self) -> List[Tuple[str, Any]]:
        return list(self.controls.items())

    def with_values(self, values: Sequence[Any]) -> "SettingsGroup":
        if len(values) != len(self.controls):
            raise ValueError(f"SettingsGroup: {len(self.controls)} values expected, got {len(values)}")
        return SettingsGroup(dict(zip(self.controls, values)), self.infos)

    def settings(self) -> Dict[str, Any]:
        out = {}
        for name, value in self.controls.items():
            r = self.infos[name].range
            out[name] = int(value) if r is not None and r.integer and value is not None else value
        return out

    def __getitem__(self, name: str):
        return self.controls[name]

    def __contains__(self, name: str) -> bool:
        return name in self.controls


def section_controls(settings_type, section: str, prefix: str, *, exclude: Sequence[str] = (),
                     layout: Optional[Sequence[Sequence[str]]] = None,
                     overrides: Optional[Mapping[str, Mapping[str, Any]]] = None) -> SettingsGroup:
    """The controls of the settings ``settings_type`` declares in ``section``, in field order.
    ``layout``: groups of field names shown side by side in a row (the rest one per line);
    ``overrides``: a control's own keywords by field name (UI wording such as a placeholder)."""
    chosen = [(n, i) for n, i in in_section(settings_type, section) if n not in exclude]
    overrides = overrides or {}
    rows = {name: row for row in (layout or ()) for name in row}
    controls, done = {}, set()
    for name, info in chosen:
        if name in done:
            continue
        row = [n for n in rows.get(name, (name,)) if n in dict(chosen)]
        if len(row) > 1:
            with gr.Row():
                for n in row:
                    controls[n] = setting_control(n, dict(chosen)[n], prefix, **overrides.get(n, {}))
        else:
            controls[name] = setting_control(name, info, prefix, **overrides.get(name, {}))
        done.update(row)
    return SettingsGroup({n: controls[n] for n, _ in chosen}, dict(chosen))


def setting_notes(info: Mapping[str, Any], settings_type) -> List[str]:
    """The info line's notes of the declared settings a run's ``info`` reports at a value that
    is not neutral (e.g. "quick mode N=2 (approximate)", "reference strength 0.5")."""
    return [text for _, _, text in notes(settings_type, info)]


def reference_section(settings_type, prefix: str, *, title: str, open: bool = False,
                      others: str = "the other blocks get the prompt, or nothing") -> SettingsGroup:
    """The reference's options ``settings_type`` declares (strength; the optional prompt, its mode
    and weight, and the blocks where it has them) in an accordion ``title``, closed (advanced:
    the neutral values give the plain reference's picture); elem_ids
    ``<prefix>-strength``, ``-prompt``, ``-prompt-mode``, ``-prompt-weight``, ``-blocks``."""
    wording = {
        "prompt": dict(placeholder="empty: no text, the reference alone",
                       info="Loads the base model's CLIP text encoder; at most 75 CLIP tokens"),
        "prompt_weight": dict(info="0: the empty prompt, 1: the prompt"),
        "blocks": dict(info="Style only keeps the reference's colours and materials, not its layout "
                            f"(InstantStyle's blocks); {others}"),
    }
    with gr.Accordion(title, open=open, elem_id=f"{prefix}-options"):
        return section_controls(settings_type, REFERENCE, prefix, layout=[("prompt_mode", "prompt_weight")],
                                overrides=wording)


def last_section(settings_type, prefix: str) -> SettingsGroup:
    """The settings that end every endpoint before its ``previews`` parameter (quick mode), in an
    accordion ``<prefix>-quick``, closed (advanced: the neutral value is the exact picture)."""
    with gr.Accordion("Quick mode", open=False, elem_id=f"{prefix}-quick"):
        return section_controls(settings_type, LAST, prefix)


class AppendedInputs(InputGroup):
    """The appended section: its declared settings, then inputs that are arguments of the task
    call (``embedding``, ``init_image``: files), public parameters in that order. A file left
    empty is not passed (the task's default)."""

    def __init__(self, declared: SettingsGroup, files: Mapping[str, Any]):
        self.declared, self.files = declared, dict(files)

    def items(self) -> List[Tuple[str, Any]]:
        return self.declared.items() + list(self.files.items())

    def with_values(self, values: Sequence[Any]) -> "AppendedInputs":
        n = len(self.declared.items())
        if len(values) != n + len(self.files):
            raise ValueError(f"AppendedInputs: {n + len(self.files)} values expected, got {len(values)}")
        return AppendedInputs(self.declared.with_values(values[:n]), dict(zip(self.files, values[n:])))

    def settings(self) -> Dict[str, Any]:
        return self.declared.settings()

    def contribute(self, request) -> None:
        request.settings.update(self.settings())
        request.call.update({name: value for name, value in self.files.items() if value is not None})


def appended_section(settings_type, prefix: str, *, files: Optional[Mapping[str, Any]] = None,
                     init_image: bool = False, inside: Optional[Callable[[SettingsGroup], Any]] = None):
    """The settings added since the endpoints were published (``APPENDED``): their parameters
    follow ``previews`` (``task_endpoint(..., appended=...)``). Empty when a task has none; else
    in an accordion ``<prefix>-more``, closed (advanced: their neutral values change nothing).
    ``files``: upload components made elsewhere (the ``embedding`` of the Saved embeddings
    accordion), by parameter name; ``init_image``: an image upload for what a denoise strength
    below 1 starts from. Their parameters follow the settings'. ``inside(group)``: more components
    made in the accordion after the settings' controls (the source-mask painter of ``source_mask``)."""
    files = dict(files or {})
    if not in_section(settings_type, APPENDED) and not files and not init_image:
        return section_controls(settings_type, APPENDED, prefix)
    with gr.Accordion("More reference controls", open=False, elem_id=f"{prefix}-more"):
        group = section_controls(settings_type, APPENDED, prefix, layout=[("reference_start", "reference_end"),
                                                                          ("negative_strength", "negative_mode")])
        if inside is not None:
            inside(group)
        if init_image:
            from .uploads import image_input

            files["init_image"] = image_input(label="Init image (optional): what a denoise strength below 1 starts "
                                                    "from; default: the reference", sources=["upload", "clipboard"],
                                              elem_id=f"{prefix}-init-image")
    return AppendedInputs(group, files) if files else group
