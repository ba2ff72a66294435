"""The commands: ``generate`` (Image Variation, Reference + ControlNet, Multi-Reference, a
folder, a redo from a PNG), ``tryon``, ``edit`` and ``app``; each runs a task of the one list
(``prompt_free.catalog``) and writes its PNGs with their metadata."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .. import settings
from ..errors import PromptFreeError
from ..catalog import BY_NAME, TaskRequest, spec
from .options import (
    EXIT_FAILED,
    EXIT_OK,
    IMAGE_SUFFIXES,
    UsageError,
    _existing_file,
    declared_values,
    list_references,
    parse_control,
    parse_size,
)
from .folder import check_ray_options, generate_on_ray, still_to_do
from .run import Processes, _engine, _names, _out_dir, _print_lora_notes, _report, _sampler_settings, _write, processes

def _settings(settings_type, args, engine, **given):
    """``settings_type`` from the sampler's options, every declared option it has, and ``given``."""
    return settings_type(**{**_sampler_settings(args, engine), **declared_values(args, settings_type), **given})


def _run(engine, task: str, settings, call: dict):
    """(result, task, settings, call): one run of the task ``task`` (``prompt_free.catalog``)."""
    return spec(task).run(engine, settings, call), task, settings, call


def _run_request(engine, request):
    """(result, task, settings, call): one run of a ``TaskRequest``."""
    return request.run(engine), request.task, request.settings, request.call


def _control_specs(args, controls):
    from ..tasks import ControlSpec

    mode = "preprocess" if args.control_mode == "preprocess" else "use as-is"
    return [ControlSpec(name, path, mode, scale=args.control_scale, check_map=not args.no_check_maps)
            for name, path in controls]


def _request_one(engine, args, reference: Optional[str], controls, width, height) -> TaskRequest:
    """The request of one reference: Image Variation, or Reference + ControlNet with controls
    (run here, or on a Ray actor with --ray)."""
    from ..tasks import ControlSettings, VariationSettings

    given = {"reference": reference} if reference is not None else {}
    given.update({k: getattr(args, k) for k in ("embedding", "init_image") if getattr(args, k, None)})
    if controls:
        s = _settings(ControlSettings, args, engine, width=width, height=height)
        return TaskRequest("reference_control", s, {**given, "controls": _control_specs(args, controls)})
    size = (width, height) if width is not None else (512, 512)
    s = _settings(VariationSettings, args, engine, width=size[0], height=size[1])
    return TaskRequest("image_variation", s, given)


def _check_embedding(args) -> None:
    """--embedding: with at most one --reference (then the init image's default), not with a
    folder or several references; its SeeCoder becomes --seecoder when that is not given."""
    if args.reference_dir or len(args.reference) > 1:
        raise UsageError("--embedding takes the place of one reference: not with --reference-dir or several --reference")
    from ..embeddings import load

    saved = load(_existing_file(args.embedding, "embedding"), "embedding")
    if args.seecoder is None and saved.seecoder:
        args.seecoder = saved.seecoder  # the base model that goes with it, and no mismatch note


def multi_reference_inputs(args) -> list:
    """The ``Reference``s of the --reference, --weight and --mask options (checked, files exist)."""
    from ..tasks import Reference

    refs = args.reference
    if len(refs) > settings.MAX_REFERENCES:
        raise UsageError(f"at most {settings.MAX_REFERENCES} --reference can be blended, got {len(refs)}")
    if args.prompt.strip():
        raise UsageError("--prompt works with one --reference; Multi-Reference (several --reference) takes no prompt")
    if len(args.weight) > len(refs):
        raise UsageError(f"{len(args.weight)} --weight for {len(refs)} --reference: give at most one weight per "
                         "reference, in their order")
    masks: Dict[int, str] = {}
    for k, path in args.mask:
        if k == 0:
            raise UsageError(f"--mask {path}: give it after the --reference it belongs to, or as --mask K=PATH "
                             "(K: the reference's number, from 1)")
        if not 1 <= k <= len(refs):
            raise UsageError(f"--mask {k}=...: there is no reference {k} (there are {len(refs)})")
        if k in masks:
            raise UsageError(f"reference {k} has two --mask; give one")
        masks[k] = _existing_file(path, f"mask of reference {k}")
    weights = list(args.weight) + [float(settings.REFERENCE_WEIGHT.default)] * (len(refs) - len(args.weight))
    return [Reference(_existing_file(r, f"reference image {i}"), w, masks.get(i))
            for i, (r, w) in enumerate(zip(refs, weights), 1)]


def _generate_multi(engine, args, references, controls, width, height):
    """Several references through Multi-Reference (with ControlNets when --control is given)."""
    from ..tasks import MultiReferenceSettings

    s = _settings(MultiReferenceSettings, args, engine, width=width, height=height, blend=args.blend,
                  controls=_control_specs(args, controls))
    init = {"init_image": args.init_image} if args.init_image else {}
    return _run(engine, "multi_reference", s, {"references": references, **init})


def cmd_generate(args) -> int:
    check_ray_options(args)
    if args.overwrite and not args.reference_dir:
        raise UsageError("--overwrite goes with --reference-dir (other runs always write their pictures)")
    if args.from_png:
        if args.reference_dir:
            raise UsageError("--from-png and --reference-dir cannot be used together")
        if len(args.reference) > 1:
            raise UsageError("with --from-png, --reference replaces the one recorded reference; for the references "
                             "of a Multi-Reference picture use --input references[K].image=PATH (K from 0)")
        return cmd_redo(args)
    if args.embedding:
        _check_embedding(args)
    elif bool(args.reference) == bool(args.reference_dir):
        raise UsageError("give one of --reference IMG, --reference-dir DIR, --embedding E or --from-png PNG")
    if args.init_image:
        _existing_file(args.init_image, "init image")
    multi = len(args.reference) > 1
    if not multi and (args.weight or args.mask or args.blend != "average"):
        raise UsageError("--weight, --mask and --blend blend several references: give two or more --reference")
    proc = processes()
    width, height = parse_size(args.size)
    controls = [parse_control(c) for c in args.control]
    if len(controls) > settings.MAX_CONTROLS:
        raise UsageError(f"at most {settings.MAX_CONTROLS} --control can be given, got {len(controls)}")
    for _, path in controls:
        _existing_file(path, "control image")
    references = multi_reference_inputs(args) if multi else None
    if multi:
        refs = [Path(references[0].image)]
    elif args.embedding and not args.reference:
        refs = [None]
    else:
        refs = [Path(_existing_file(args.reference[0], "reference image"))] if args.reference else list_references(args.reference_dir)
    out = _out_dir(args.out)
    if args.reference_dir:
        refs = still_to_do(refs, args, out, note=proc.main)
        proc.wait()  # every process has its list before any writes a picture
    t0 = time.perf_counter()
    engine = _engine(args, proc, device="cpu" if args.ray else None)
    if engine.registry.is_tiny and proc.main:
        print(f"profile {engine.profile}: small random-weight models, the pictures are not meaningful", file=sys.stderr)
    _print_lora_notes(engine, args, proc)

    written: List[Path] = []
    if multi:  # one run for all the references; named after the first
        from ..metadata import tag

        result, task, s, call = _generate_multi(engine, args, references, controls, width, height)
        tag(engine, result, task, s, call, keep_paths=True)
        written += _write(_names(f"{refs[0].stem}-multi", result), out)
        refs = []

    def request_of(ref):
        return _request_one(engine, args, None if ref is None else str(ref), controls, width, height)

    bar = bool(args.reference_dir) and not args.no_progress
    if args.ray:
        done, failures = generate_on_ray(engine, args, refs, request_of, out,
                                         lambda items, total: _progress(items, proc, total, bar=bar))
    else:
        done, failures = _generate_here(engine, args, proc, refs, request_of, out, bar)
    written += done
    _report(written, out, time.perf_counter() - t0, proc, list_files=not args.reference_dir)
    for f in failures:
        print(f"skipped {f}", file=sys.stderr)
    proc.wait()
    return EXIT_FAILED if failures else EXIT_OK


def _generate_here(engine, args, proc: Processes, refs, request_of, out: Path, bar: bool):
    """The references in this process (its share of them under accelerate). Returns (written
    paths, "name: problem" lines of a folder's references that failed)."""
    from ..metadata import tag

    written: List[Path] = []
    failures: List[str] = []
    with proc.split(refs) as mine:
        for ref in _progress(mine, proc, bar=bar):
            try:
                result, task, s, call = _run_request(engine, request_of(ref))
            except PromptFreeError as e:
                if not args.reference_dir:
                    raise
                failures.append(f"{ref.name}: {e}")
                continue
            tag(engine, result, task, s, call, keep_paths=True)
            written += _write(_names(Path(args.embedding).stem if ref is None else ref.stem, result), out)
    return written, failures


def _progress(items, proc: Processes, total=None, *, bar: bool = True):
    """``items`` with the folder's bar on stderr (``total``: for an iterator), or as they are."""
    if not bar:
        return items
    from tqdm.auto import tqdm

    desc = f"process {proc.index + 1}/{proc.count}" if proc.count > 1 else "references"
    return tqdm(items, desc=desc, unit="image", position=proc.index, file=sys.stderr, dynamic_ncols=True, total=total)


def recorded_inputs(value, key: str = ""):
    """The names ``--input`` takes for the image inputs of a recorded call: ``reference``,
    ``mask``, ``references[1].mask`` ... (the keys ``metadata.redo_call`` overrides by)."""
    if isinstance(value, dict) and value.get("input"):
        yield key
    elif isinstance(value, dict):
        for k, v in value.items():
            if k != "__type__":
                yield from recorded_inputs(v, f"{key}.{k}" if key else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from recorded_inputs(v, f"{key}[{i}]")


def _redo_overrides(args, rec) -> Dict[str, str]:
    from ..metadata import recorded_controls
    from ..tasks.fields import image_fields

    overrides: Dict[str, str] = {}
    if args.reference:
        overrides["reference"] = _existing_file(args.reference[0], "reference image")
    if getattr(args, "reference_mask", None):  # the recorded reference mask, when its path is gone
        overrides["reference_mask"] = _existing_file(args.reference_mask, "reference mask")
    known = set(recorded_inputs(rec.get("call") or {})) | set(recorded_inputs(rec.get("settings") or {}))
    task = BY_NAME.get(str(rec.get("task")))
    for name in image_fields(task.settings_type) if task is not None else ():
        given = getattr(args, name, None)  # an image setting's own option (--negative-image PATH) names its file again
        if given and name not in known:
            raise UsageError(f"the picture was made without a {name.replace('_', ' ')}; --from-png redoes it as "
                             "recorded")
        if given:
            overrides[name] = _existing_file(given, name.replace("_", " "))
    for text in args.input:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"--input must be NAME=PATH, got {text!r}")
        if name.strip() not in known:
            raise UsageError(f"--input {name.strip()}=...: the record has no input '{name.strip()}' "
                             f"(it has: {', '.join(sorted(known)) or 'none'})")
        overrides[name.strip()] = _existing_file(path.strip(), name.strip())
    recorded = recorded_controls(rec)
    given = [parse_control(c) for c in args.control]
    for name, path in given:
        _existing_file(path, "control image")
        index = next((i for i, c in enumerate(recorded) if c.get("controlnet") == name
                      and f"controls[{i}].image" not in overrides), None)
        if index is None:
            names = ", ".join(c.get("controlnet", "?") for c in recorded) or "none"
            raise UsageError(f"--control {name}=...: the picture used no ControlNet '{name}' (it used: {names})")
        overrides[f"controls[{index}].image"] = path
    return overrides


def cmd_redo(args) -> int:
    from ..metadata import check_models, read, redo_call, save_png, tag

    src = _existing_file(args.from_png, "--from-png file")
    rec = read(src)
    call = redo_call(rec, _redo_overrides(args, rec))
    out = _out_dir(args.out)
    t0 = time.perf_counter()
    proc = Processes()
    engine = _engine(args, proc, profile=args.profile or rec.get("profile"))
    for note in check_models(engine, rec):
        print(f"warning: {note}; the pixels may differ", file=sys.stderr)
    result, _ = call.run(engine)
    tag(engine, result, call.task, call.settings, call.kwargs, keep_paths=True)
    picture = getattr(result, call.output_kind)[call.output_index]
    path = save_png(picture, out / Path(src).name)
    _report([path], out, time.perf_counter() - t0, proc)
    return EXIT_OK


def cmd_tryon(args) -> int:
    from ..tasks import TryOnSettings

    person = _existing_file(args.person, "person photo")
    garment = _existing_file(args.garment, "garment photo")
    mask = args.mask
    if mask is not None and os.path.splitext(mask)[1].lower() in IMAGE_SUFFIXES:
        _existing_file(mask, "mask image")
    out = _out_dir(args.out)
    t0 = time.perf_counter()
    proc = Processes()
    engine = _engine(args, proc)
    _print_lora_notes(engine, args, proc)
    s = _settings(TryOnSettings, args, engine, max_side=args.max_side, pose_control=not args.no_pose,
                  control_scale=args.control_scale)
    call = {"person": person, "garment": garment, "mask": mask}
    return _run_edit(engine, proc, t0, out, "virtual_tryon", call, s, f"{Path(person).stem}-tryon")


def cmd_edit(args) -> int:
    from ..tasks import EditSettings

    photo = _existing_file(args.photo, "photo")
    mask = _existing_file(args.mask, "mask image")
    reference = _existing_file(args.reference, "reference image")
    out = _out_dir(args.out)
    t0 = time.perf_counter()
    proc = Processes()
    engine = _engine(args, proc)
    _print_lora_notes(engine, args, proc)
    s = _settings(EditSettings, args, engine, max_side=args.max_side, dilation=args.dilation, feather=args.feather,
                  crop_reference=args.crop_reference)
    call = {"photo": photo, "mask": mask, "reference": reference}
    return _run_edit(engine, proc, t0, out, "edit_with_reference", call, s, f"{Path(photo).stem}-edit")


def _run_edit(engine, proc, t0, out, task: str, call: dict, s, stem: str) -> int:
    """The tail both editing commands share: run the task ``task`` with ``call`` and ``s``, tag its
    PNGs, write results and extras as ``<stem>-s<seed>...``, report, print the task's notes."""
    from ..metadata import tag

    result = spec(task).run(engine, s, call)
    tag(engine, result, task, s, call, keep_paths=True)
    paths = _write(_extra_names(stem, result), out)
    _report(paths, out, time.perf_counter() - t0, proc)
    for note in result.info.get("notes") or []:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def _extra_names(stem: str, result) -> List[Tuple[str, object]]:
    """``<stem>-s<seed>.png`` per image, ``<stem>-s<seed>-extra<k>.png`` for the extras (masks ...)."""
    seeds = result.info.get("seeds") or []
    named = [(f"{stem}-s{seeds[i] if i < len(seeds) else i}.png", img) for i, img in enumerate(result.images)]
    named += [(f"{stem}-s{seeds[0] if seeds else 0}-extra{k + 1}.png", img) for k, img in enumerate(result.extras)]
    return named


def cmd_app(argv: Sequence[str]) -> int:
    """``prompt-free app``: the Gradio app (``prompt_free.app``; needs the ``app`` extra: without
    it a ``MissingExtraError`` saying how to install it)."""
    from ..extras import require

    require("app", "prompt-free app")
    from ..app.main import main as app_main

    return app_main(list(argv))
