"""One declaration per setting: a dataclass field whose metadata says everything else needs.

A task's settings are dataclasses. A field declared with ``setting(...)`` carries its range
(``prompt_free.settings.Range``: the check, the slider's bounds and step), its label and help
text, its CLI option, its UI section and how a non-neutral value is reported (the run's info
line and the PNG's ``parameters`` text). The UI control, the CLI option, the range check, the
info note and the metadata entry are derived from it (``prompt_free.app.fields``, ``prompt_free.cli``,
``tasks.common.begin``, ``tasks.common.sampler_info``, ``prompt_free.metadata``), so a new
setting is one field declaration plus its use in the task or the reference builder.

Sections name where a setting shows and in which order it joins an endpoint:
``REFERENCE`` (the reference's options, after the sampler's settings), ``LAST`` (after the
LoRAs, before the ``previews`` parameter) and ``APPENDED`` (after ``previews``: every setting
added since the endpoints were published, in declaration order, so existing calls keep their
parameters' places and get the neutral value). A new setting of an existing task takes
``APPENDED`` unless it only shows in the CLI (no section).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..settings import Range

REFERENCE = "reference"  # the reference's options (strength, text, blocks)
LAST = "last"  # after the LoRAs, before the previews checkbox (quick mode)
APPENDED = "appended"  # after the previews checkbox: settings added since the endpoints were published
SECTIONS = (REFERENCE, LAST, APPENDED)
KEY = "prompt_free.setting"  # the key of a field's metadata that holds its SettingInfo


@dataclass(frozen=True)
class SettingInfo:
    """What one setting is: its label and help (UI and CLI), its range, the choices of a
    text setting, its CLI option, its UI section and how a non-neutral value is noted."""

    label: str
    help: str = ""
    range: Optional[Range] = None
    choices: Optional[Tuple[Any, ...]] = None
    cli: Optional[str] = None  # e.g. "--deep-cache"; None: not an option of its own
    metavar: Optional[str] = None
    section: Optional[str] = None  # REFERENCE / LAST / APPENDED; None: shown by the tab itself
    ui_label: Optional[str] = None  # the UI's label when it differs from ``label``
    ui_id: Optional[str] = None  # the UI control's elem_id after the tab's prefix (default: the name, dashed)
    ui_info: Optional[str] = None  # the text under the UI control when it differs from ``help``
    note: Optional[str] = None  # the info line's note for a non-neutral value, e.g. "quick mode N={value} (approximate)"
    png_note: Optional[Tuple[str, str]] = None  # (key, "{value} ...") of the PNG's parameters for a non-neutral value
    neutral: Any = None  # the value that changes nothing (the default unless given)
    image: bool = False  # an image input (a path, bytes or a PIL image; None: none), not a scalar


def setting(default, *, label: str, help: str = "", range: Optional[Range] = None, choices: Sequence[Any] = None,
            cli: Optional[str] = None, metavar: Optional[str] = None, section: Optional[str] = None,
            ui_label: Optional[str] = None, ui_id: Optional[str] = None, ui_info: Optional[str] = None,
            note: Optional[str] = None, png_note: Optional[Tuple[str, str]] = None, neutral: Any = dataclasses.MISSING,
            image: bool = False) -> dataclasses.Field:
    """A settings dataclass field with its ``SettingInfo`` (see the module docstring). ``image``:
    the setting is an image (default None): an image upload in the UI, a file option in the CLI,
    recorded in the PNG by name and sha256 like the call's images (``image_fields``)."""
    if section is not None and section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; one of {SECTIONS}")
    info = SettingInfo(label, help, range, tuple(choices) if choices is not None else None, cli, metavar, section,
                       ui_label, ui_id, ui_info, note, png_note, default if neutral is dataclasses.MISSING else neutral,
                       image)
    return dataclasses.field(default=default, metadata={KEY: info})


def info_of(field: dataclasses.Field) -> Optional[SettingInfo]:
    return field.metadata.get(KEY)


def declared(cls) -> Iterator[Tuple[str, SettingInfo]]:
    """(name, info) of every field of ``cls`` (a settings dataclass or instance) declared with
    ``setting``, in field order."""
    for f in dataclasses.fields(cls):
        info = info_of(f)
        if info is not None:
            yield f.name, info


def image_fields(cls) -> List[str]:
    """The names of the settings of ``cls`` that are images (``setting(..., image=True)``)."""
    return [name for name, info in declared(cls) if info.image]


def in_section(cls, section: str) -> List[Tuple[str, SettingInfo]]:
    """The settings of ``cls`` shown in ``section``, in field order."""
    return [(name, info) for name, info in declared(cls) if info.section == section]


def with_cli(cls) -> List[Tuple[str, SettingInfo]]:
    """The settings of ``cls`` that are CLI options of their own."""
    return [(name, info) for name, info in declared(cls) if info.cli]


def checked(settings, skip=()) -> Dict[str, Any]:
    """{name: value in range} for every ranged setting of ``settings`` (an instance) but those in
    ``skip`` (checked elsewhere); ``InvalidSettingError`` naming the first out of range."""
    return {name: info.range.check(getattr(settings, name), info.range.what)
            for name, info in declared(settings) if info.range is not None and name not in skip
            and not (info.neutral is None and getattr(settings, name) is None)}  # None: an optional setting off


def notes(settings_type, values: Mapping[str, Any], kind: str = "note") -> Iterator[Tuple[str, Any, str]]:
    """(name, value, text) of each setting ``settings_type`` declares whose value in ``values`` (a
    mapping: a settings instance's fields, a run's info, a PNG record's settings) is not neutral
    and that says so: its ``note``, or with ``kind="png_note"`` the text of its ``png_note``
    (``{value}`` filled in). The one rule for the info line, the UI and the PNG's parameters."""
    for name, info in declared(settings_type):
        value = values.get(name)
        text = info.note if kind == "note" else (info.png_note[1] if info.png_note else None)
        if text and value is not None and _differs(value, info.neutral):
            yield name, value, text.format(value=_num(value))


def _differs(value, neutral) -> bool:
    """``value != neutral`` for any value (an image setting may hold an array: not neutral unless None)."""
    if neutral is None:
        return value is not None
    if isinstance(value, (np.ndarray, bytes, bytearray)) or hasattr(value, "mode"):
        return True
    return value != neutral


def values_of(settings) -> Dict[str, Any]:
    """A settings instance's field values by name (for ``notes``)."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)
