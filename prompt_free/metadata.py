"""How a picture was made, written into its PNG and read back (``prompt-free generate --from-png``).

Every PNG the app or the CLI writes carries two text chunks:

* ``parameters``: one A1111-style line (``Steps: 50, Sampler: DDIM, CFG scale: 2, Seed: 20, Size:
  512x512, Model hash: ..., Model: ...``), so that existing tools (A1111's "PNG Info", image
  browsers) show the settings;
* ``prompt-free``: a JSON record with everything needed to redo it: the task, its settings
  dataclass (every field, recorded generically, so a new option is recorded without a change
  here), the task call's other arguments (images as name, path and sha256; ControlNet specs with
  their maps as hashes), which output of the run the picture is, the models (names and what the
  registry can tell cheaply: pinned sha256, the hub's blob hash, the snapshot revision; for the
  tiny profile its builder and seed), the profile and the project's version.

``describe`` builds the record of one run, ``attach`` puts it on the run's PIL images (Gradio's
PNG writer and ``save_png`` copy a PIL image's text ``info`` into the file), ``read`` reads it
back, ``redo_call`` turns a record into the task call that makes the same picture (checking the
input files against their recorded hashes).

The app records input files by name only (a server's directories never leave it); the CLI
records their paths as well, so ``--from-png`` finds them again.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from PIL import Image, PngImagePlugin

from . import tasks
from .errors import InputImageError, PromptFreeError
from .fingerprints import is_image_like, file_sha256, input_record, model_record, pixels_sha256
from .catalog import BY_NAME, TASKS
from .tasks.fields import declared, image_fields, notes
from .version import __version__

PARAMETERS_CHUNK = "parameters"  # A1111's key
JSON_CHUNK = "prompt-free"
FORMAT = 1  # the record's layout; bumped when a field changes meaning
OUTPUT_KINDS = ("images", "extras")


class MetadataError(PromptFreeError):
    """A PNG without a readable record, or a record that cannot be redone here."""


def _plain(value, keep_paths: bool, files: bool = True):
    """A JSON-able copy of a task argument: dataclasses by field (with their type's name),
    images as ``input_record``s, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"__type__": type(value).__name__}
        out.update({f.name: _plain(getattr(value, f.name), keep_paths, files) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, Mapping):
        return {str(k): _plain(v, keep_paths, files) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, keep_paths, files) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        if files and os.path.isfile(value):  # a task argument that names a file is an image input
            return input_record(value, keep_paths)
        return value
    if is_image_like(value):
        return input_record(value, keep_paths)
    return repr(value)


def _holds_dataclasses(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_holds_dataclasses(v) for v in value)
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def settings_record(settings, keep_paths: bool = True) -> Dict[str, Any]:
    """Every field of a task's settings dataclass (so new options are recorded automatically).
    Plain strings are names, never files; a field holding dataclasses (Multi-Reference's
    ``controls``: ControlSpecs) is recorded as a call argument, its images as input records, and
    so is an image setting (``setting(..., image=True)``, e.g. the negative reference image)."""
    images = set(image_fields(settings))
    return {f.name: _plain(getattr(settings, f.name), keep_paths,
                           files=f.name in images or _holds_dataclasses(getattr(settings, f.name)))
            for f in dataclasses.fields(settings)}


def recorded_controls(rec: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The recorded ControlNet specs of a run: the call's ``controls`` (Reference + ControlNet) or
    the settings' (Multi-Reference); each keyed for ``redo_call`` overrides as ``controls[i].image``."""
    for where in (rec.get("call") or {}, rec.get("settings") or {}):
        found = [c for c in where.get("controls") or [] if isinstance(c, Mapping)]
        if found:
            return found
    return []


def _models(engine, settings, info: Mapping[str, Any], call: Mapping[str, Any],
            settings_rec: Mapping[str, Any]) -> Dict[str, Any]:
    reg = engine.registry
    seecoder = info.get("seecoder") or getattr(settings, "seecoder", None) or engine.defaults.get("seecoder")
    names = {
        "seecoder": seecoder,
        "base_model": info.get("base_model") or getattr(settings, "base_model", None) or reg.base_model_for(seecoder),
    }
    out: Dict[str, Any] = {
        "seecoder": model_record(reg, "seecoders", names["seecoder"]),
        "base_model": model_record(reg, "base_models", names["base_model"]),
    }
    controlnets = [c["controlnet"] for c in recorded_controls({"call": call, "settings": settings_rec})
                   if c.get("controlnet")]
    for key in ("controlnet",):  # try-on's pose ControlNet, the comparison's structure one
        if isinstance(info.get(key), str):
            controlnets.append(info[key])
        elif isinstance(call.get(key), str):
            controlnets.append(call[key])
    if controlnets:
        out["controlnets"] = [model_record(reg, "controlnets", n) for n in dict.fromkeys(controlnets)]
    return out


# ----------------------------------------------------------------------------- records
def input_records(settings, call: Mapping[str, Any], keep_paths: bool = True) -> Dict[str, Any]:
    """The ``settings`` and ``call`` parts of a run's record (image inputs as ``input_record``s).
    Computed where the files are, they let a run elsewhere on the files' bytes
    (``TaskRequest.portable``, the Ray batch) record its inputs as a run here does."""
    return {"settings": settings_record(settings, keep_paths),
            "call": {k: _plain(v, keep_paths) for k, v in call.items()}}


def describe(engine, task: str, settings, call: Mapping[str, Any], info: Mapping[str, Any], *,
             keep_paths: bool = True, inputs: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The record of one run of ``task`` (a function name in ``prompt_free.tasks``) with
    ``settings`` (its dataclass) and the call's other arguments ``call`` (e.g. ``reference``,
    ``controls``); ``info`` is the result's info. ``inputs``: the ``input_records`` of the request
    as made where its files are (default: of ``settings`` and ``call``). The picture's own place
    is added by ``attach``."""
    inputs = inputs if inputs is not None else input_records(settings, call, keep_paths)
    plain_call, settings_rec = inputs["call"], inputs["settings"]
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - a dependency
        torch_version = None
    return {
        "format": FORMAT,
        "project": "prompt-free-diffusion",
        "version": __version__,
        "task": task,
        "settings_type": type(settings).__name__,
        "settings": settings_rec,
        "call": plain_call,
        "profile": engine.profile,
        "models": _models(engine, settings, info, plain_call, settings_rec),
        "run": {k: info[k] for k in ("seeds", "width", "height", "steps", "guidance", "scheduler", "balance_bias")
                if k in info},
        "device": engine.device.type,
        "precision": getattr(engine, "precision", None),
        "torch": torch_version,
    }


def for_output(record: Mapping[str, Any], kind: str, index: int) -> Dict[str, Any]:
    """``record`` for output ``index`` of ``result.<kind>`` (``images`` or ``extras``)."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"output kind must be one of {OUTPUT_KINDS}")
    out = dict(record)
    out["output"] = {"kind": kind, "index": int(index)}
    seeds = (record.get("run") or {}).get("seeds") or []
    if kind == "images" and index < len(seeds):
        out["seed"] = seeds[index]
    return out


def attach(result, record: Mapping[str, Any]) -> list:
    """Puts both chunks on every picture of a task result (``images``, then ``extras``) and
    returns ``result.images + result.extras``. Gradio's PNG writer copies a PIL image's text
    ``info`` into the file; ``save_png`` writes them too."""
    pictures = []
    for kind in OUTPUT_KINDS:
        for i, img in enumerate(getattr(result, kind, None) or []):
            if isinstance(img, Image.Image):
                rec = for_output(record, kind, i)
                img.info[PARAMETERS_CHUNK] = parameters_text(rec)
                img.info[JSON_CHUNK] = json.dumps(rec, sort_keys=True)
            pictures.append(img)
    return pictures


def tag(engine, result, task: str, settings, call: Mapping[str, Any], *, keep_paths: bool = True,
        inputs: Optional[Mapping[str, Any]] = None) -> list:
    """``attach(result, describe(...))``: the one call a caller makes after a task."""
    return attach(result, describe(engine, task, settings, call, result.info, keep_paths=keep_paths, inputs=inputs))


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def parameters_text(rec: Mapping[str, Any]) -> str:
    """The A1111-style ``parameters`` text of a record (first line: the prompt when the settings
    have one; last line: ``key: value`` pairs)."""
    s = rec.get("settings") or {}
    run = rec.get("run") or {}
    models = rec.get("models") or {}
    pairs: List[Tuple[str, Any]] = [
        ("Steps", run.get("steps", s.get("steps"))),
        ("Sampler", run.get("scheduler", s.get("scheduler"))),
        ("CFG scale", run.get("guidance", s.get("guidance"))),
        ("Seed", rec.get("seed", s.get("seed"))),
        ("Size", f"{run['width']}x{run['height']}" if "width" in run else None),
    ]
    base = models.get("base_model") or {}
    if base.get("sha256"):
        pairs.append(("Model hash", base["sha256"][:10]))
    pairs.append(("Model", base.get("name")))
    seecoder = models.get("seecoder") or {}
    pairs.append(("SeeCoder", seecoder.get("name")))
    if seecoder.get("sha256"):
        pairs.append(("SeeCoder hash", seecoder["sha256"][:10]))
    ref = (rec.get("call") or {}).get("reference")
    for key, recorded in (("Reference hash", ref), ("Reference mask hash", s.get("reference_mask")),
                          ("Layout image hash", s.get("layout_image"))):
        if isinstance(recorded, Mapping) and (recorded.get("sha256") or recorded.get("pixels_sha256")):
            pairs.append((key, (recorded.get("sha256") or recorded.get("pixels_sha256"))[:10]))
    for i, c in enumerate(recorded_controls(rec)):
        module = c.get("preprocessor") if c.get("mode") == "preprocess" else "none"
        image = c.get("image") or {}
        h = (image.get("sha256") or image.get("pixels_sha256") or "")[:10] if isinstance(image, Mapping) else ""
        pairs.append((f"ControlNet {i}", '"' + ", ".join(
            f"{k}: {_num(v)}" for k, v in (("Module", module), ("Model", c.get("controlnet")), ("Weight", c.get("scale")),
                                           ("Guidance Start", c.get("start")), ("Guidance End", c.get("end")),
                                           ("Map hash", h)) if v not in (None, "")) + '"'))
    pairs += _setting_notes(rec)  # e.g. quick mode is never silent: an approximate picture says so
    pairs.append(("Balance bias", run.get("balance_bias")))  # the balance's calibration (``balance``)
    pairs += [("Task", rec.get("task")), ("Profile", rec.get("profile")),
              ("Version", f"prompt-free-diffusion {rec.get('version')}")]
    line = ", ".join(f"{k}: {_num(v)}" for k, v in pairs if v not in (None, ""))
    prompt = s.get("prompt") if isinstance(s.get("prompt"), str) else ""
    negative = s.get("negative_prompt") if isinstance(s.get("negative_prompt"), str) else ""
    head = prompt + (f"\nNegative prompt: {negative}" if negative else "")
    return f"{head}\n{line}" if head else line


def _setting_notes(rec: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """(key, text) of the recorded settings that are not neutral and say so in the PNG's
    parameters (the ``png_note`` of their declaration, ``tasks.fields``)."""
    spec = BY_NAME.get(str(rec.get("task")))
    if spec is None:
        return []
    infos = dict(declared(spec.settings_type))
    return [(infos[name].png_note[0], text) for name, _, text in
            notes(spec.settings_type, rec.get("settings") or {}, "png_note")]


def pnginfo(img: Image.Image) -> PngImagePlugin.PngInfo:
    """The PNG text chunks of ``img.info`` (what Gradio writes too)."""
    info = PngImagePlugin.PngInfo()
    for key, value in img.info.items():
        if isinstance(key, str) and isinstance(value, str):
            info.add_text(key, value)
    return info


def save_png(img: Image.Image, path) -> Path:
    """Writes ``img`` as a PNG with its metadata chunks, atomically (a temporary file, then a
    rename), so a reader never sees half a file. Returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    img.save(tmp, format="PNG", pnginfo=pnginfo(img))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- reading
def read(source) -> Dict[str, Any]:
    """The JSON record of a PNG written by the app or the CLI (a path, bytes or PIL image);
    ``MetadataError`` when there is none."""
    from .images import open_image

    # PNG only: the records are PNG text chunks, so no other decoder need ever see this upload
    img = source if isinstance(source, Image.Image) else open_image(source, "settings PNG", formats=("PNG",))
    raw = img.info.get(JSON_CHUNK)
    name = os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "the image"
    if not raw:
        has_a1111 = PARAMETERS_CHUNK in img.info
        raise MetadataError(f"'{name}' carries no Prompt-Free settings (no '{JSON_CHUNK}' text chunk"
                            + ("; it has an A1111 'parameters' chunk from another tool)" if has_a1111 else ")"))
    try:
        rec = json.loads(raw)
    except ValueError:
        raise MetadataError(f"'{name}': its '{JSON_CHUNK}' chunk is not valid JSON") from None
    _check_shape(rec, name)
    if rec.get("format", 0) > FORMAT:
        raise MetadataError(f"'{name}' was written by a newer version ({rec.get('version')}) in record format "
                            f"{rec.get('format')}; this version reads format {FORMAT}")
    return rec


def _check_shape(rec, name: str) -> None:
    """The record's parts have the JSON types their readers expect (redo, the app's "Load
    settings"), so a crafted chunk is a ``MetadataError`` here and not a TypeError later."""
    if not isinstance(rec, dict) or not isinstance(rec.get("task"), str) or not isinstance(rec.get("settings"), dict):
        raise MetadataError(f"'{name}': its '{JSON_CHUNK}' chunk is not a Prompt-Free record")
    fmt = rec.get("format", 0)
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise MetadataError(f"'{name}': its record format {fmt!r} is not a whole number")
    for key in ("call", "models", "output"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            raise MetadataError(f"'{name}': its record's '{key}' is not a mapping")


# ----------------------------------------------------------------------------- redoing
@dataclasses.dataclass
class RedoCall:
    """A task call rebuilt from a record: ``fn(engine, **kwargs, settings=settings)``; the picture is
    ``getattr(result, output_kind)[output_index]``."""

    task: str
    fn: Callable
    kwargs: Dict[str, Any]
    settings: Any
    output_kind: str
    output_index: int
    record: Dict[str, Any]

    def run(self, engine):
        result = self.fn(engine, **self.kwargs, settings=self.settings)
        pictures = getattr(result, self.output_kind)
        if self.output_index >= len(pictures):
            raise MetadataError(f"the run made {len(pictures)} {self.output_kind}; the record names number "
                                f"{self.output_index + 1}")
        return result, pictures[self.output_index]


def _check_file(path, rec: Mapping[str, Any], what: str) -> str:
    if not os.path.isfile(path):
        raise InputImageError(f"{what} '{os.path.basename(os.fspath(path))}' does not exist")
    if rec.get("sha256"):
        got = file_sha256(path)
        if got != rec["sha256"]:
            raise InputImageError(
                f"{what} '{os.path.basename(os.fspath(path))}' is not the file the picture was made from: its sha256 is "
                f"{got[:12]}..., the record says {rec['sha256'][:12]}... (recorded name '{rec.get('name')}')")
    elif rec.get("pixels_sha256"):
        from .images import open_image

        got = pixels_sha256(open_image(path, what))
        if got != rec["pixels_sha256"]:
            raise InputImageError(f"{what} '{os.path.basename(os.fspath(path))}' does not have the pixels the picture "
                                  "was made from (its pixel hash differs from the record's)")
    return os.fspath(path)


def _resolve_input(rec: Mapping[str, Any], what: str, override, flag: str):
    """A recorded image input: the override when given, else the recorded path; either is
    checked against the recorded hash."""
    if override is not None:
        return _check_file(override, rec, what)
    path = rec.get("path")
    if path and os.path.isfile(path):
        return _check_file(path, rec, what)
    where = f" (recorded at {path})" if path else ""
    raise InputImageError(f"{what} '{rec.get('name', '?')}'{where} is not available here: give it with {flag}")


def _rebuild(value, what: str, overrides: Mapping[str, Any], key: str, types: Mapping[str, type]):
    if isinstance(value, Mapping) and value.get("input"):
        flag = ("--control NAME=PATH" if key.startswith("controls") else "--reference PATH" if key == "reference"
                else f"--input {key}=PATH")
        return _resolve_input(value, what, overrides.get(key), flag)
    if isinstance(value, Mapping) and value.get("__type__"):
        cls = types.get(str(value["__type__"]))
        if cls is None:
            raise MetadataError(f"the record has a {value['__type__']} this version does not know")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: _rebuild(v, what, overrides, f"{key}.{k}", types) for k, v in value.items()
                  if k != "__type__" and k in fields}
        return cls(**kwargs)
    if isinstance(value, list):
        return [_rebuild(v, f"{what} {i + 1}", overrides, f"{key}[{i}]", types) for i, v in enumerate(value)]
    return value


def _holds_records(value) -> bool:
    if isinstance(value, list):
        return any(_holds_records(v) for v in value)
    return isinstance(value, Mapping) and bool(value.get("__type__") or value.get("input"))


def _settings_from(cls, values: Mapping[str, Any], version=None, overrides: Optional[Mapping[str, Any]] = None,
                   types: Optional[Mapping[str, type]] = None):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise MetadataError(f"the record has settings this version does not know: {', '.join(unknown)} "
                            f"(the picture was made by version {version or '?'}; this is {__version__})")
    kwargs = {}
    for k, v in values.items():
        default = fields[k].default
        if _holds_records(v):  # e.g. Multi-Reference's ControlSpecs, their images checked as inputs
            v = _rebuild(v, "control image" if k == "controls" else k.replace("_", " "), overrides or {}, k, types or {})
        kwargs[k] = tuple(v) if isinstance(default, tuple) and isinstance(v, list) else v
    return cls(**kwargs)


def redo_call(rec: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None) -> RedoCall:
    """The task call that makes the recorded picture again. ``overrides``: files for image
    inputs whose recorded paths are gone, by argument name (``reference``, ``person``) or
    ``controls[0].image``; each is checked against its recorded hash."""
    overrides = dict(overrides or {})
    task = rec.get("task")
    spec = BY_NAME.get(str(task))
    if spec is None:
        raise MetadataError(f"the record's task '{task}' is not a task of this version")
    known = {name for t in TASKS for name in (t.settings_name, *t.types)}
    types = {name: getattr(tasks, name) for name in known}
    settings_cls = types.get(str(rec.get("settings_type")))
    if settings_cls is None:
        raise MetadataError(f"the record's settings type '{rec.get('settings_type')}' is not known here")
    settings = _settings_from(settings_cls, rec.get("settings") or {}, rec.get("version"), overrides, types)
    kwargs = {}
    for name, value in (rec.get("call") or {}).items():
        what = name.replace("_", " ") + (" image" if "image" not in name and name not in ("controls", "embedding") else "")
        kwargs[name] = _rebuild(value, "control image" if name == "controls" else what, overrides, name, types)
    out = rec.get("output") or {"kind": "images", "index": 0}
    index = out.get("index", 0)
    if not isinstance(out.get("kind"), str) or out["kind"] not in OUTPUT_KINDS:
        raise MetadataError(f"the record names an unknown output '{out.get('kind')}'")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise MetadataError(f"the record's output number {index!r} is not a whole number from 0")
    return RedoCall(str(task), spec.fn, kwargs, settings, out["kind"], index, dict(rec))


def check_models(engine, rec: Mapping[str, Any]) -> List[str]:
    """Differences between the recorded models and this engine's (warnings: the pixels may differ)."""
    notes = []
    if rec.get("profile") and rec["profile"] != engine.profile:
        notes.append(f"the picture was made with the '{rec['profile']}' profile, this run uses '{engine.profile}'")
    if rec.get("precision") and rec["precision"] != getattr(engine, "precision", None):
        notes.append(f"the picture was made in {rec['precision']}, this run uses {engine.precision} "
                     f"(--precision {rec['precision']} for the recorded one)")
    models = rec.get("models") or {}
    pairs = [("seecoders", models.get("seecoder")), ("base_models", models.get("base_model"))]
    pairs += [("controlnets", c) for c in models.get("controlnets") or []]
    for kind, was in pairs:
        if not isinstance(was, Mapping) or not was.get("name"):
            continue
        now = model_record(engine.registry, kind, was["name"])
        for key in ("sha256", "git_oid", "revision", "tiny", "seed"):
            if key in was and now is not None and key in now and now[key] != was[key]:
                notes.append(f"model '{was['name']}' differs from the recorded one ({key} {now[key]} vs {was[key]})")
    return notes
