"""The command line: ``prompt-free`` (console script) and ``python -m prompt_free``.

    prompt-free generate --reference IMG [--control canny=MAP ...] [--seed N] [--steps N]
                         [--guidance G] [--size WxH] [--num-images N] [--base-model NAME]
                         [--seecoder NAME] [--profile tiny|real|auto] --out DIR
    prompt-free generate --reference-dir DIR --out OUT ...      (a folder, with a progress bar;
                         under ``accelerate launch`` the references are split across processes)
    prompt-free generate --from-png OUT.png --out DIR           (redo a picture from its metadata)
    prompt-free generate --reference A --reference B [--weight W ...] [--mask K=MASK ...]
                         [--blend average|concatenate|regions] ...   (Multi-Reference, up to 4)
    prompt-free generate ... [--reference-strength S] [--prompt TEXT --prompt-mode concat|style
                         --prompt-weight W] [--blocks all|style|layout] [--lora NAME[=SCALE] ...]
                         (a few-step LoRA's entry sets --steps/--sampler/--guidance not given)
    prompt-free edit --photo P --mask M --reference R --out DIR  (Edit with a reference)
    prompt-free tryon --person P --garment G [--mask M|upper body|...] --out DIR
    prompt-free download ...                                    (= python -m prompt_free.download)
    prompt-free app ...                                         (= python app.py)

Each command calls the library's task functions (``prompt_free.tasks``), writes PNGs with their
metadata (``prompt_free.metadata``) and prints where they went and how long it took. A problem
with the input is one line on stderr and exit code 1 (2 for a usage error), never a traceback.

File names do not depend on the number of processes: ``<reference stem>-s<seed>.png`` for each
image (image i of a run has seed + i) and ``<reference stem>-s<seed>-map<k>.png`` for the control
maps; several references: ``<first reference's stem>-multi-s<seed>.png``; ``edit`` / ``tryon``:
``<photo stem>-edit-s<seed>.png`` / ``-tryon-`` and ``...-extra<k>.png`` for the extra pictures;
``--from-png`` writes the picture under the PNG's own name.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import settings
from .errors import PromptFreeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(PromptFreeError):
    """A bad command-line value (exit code 2)."""


# ----------------------------------------------------------------------------- parsing helpers
def parse_size(text: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """``512x768`` or ``512`` (square) -> (width, height); None -> (None, None)."""
    if text is None:
        return None, None
    parts = text.lower().replace("×", "x").split("x")
    try:
        if len(parts) == 1:
            w = h = int(parts[0])
        elif len(parts) == 2:
            w, h = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise UsageError(f"--size must be WIDTHxHEIGHT (e.g. 512x768) or one number, got {text!r}") from None
    return int(settings.SIZE.check(w, "width")), int(settings.SIZE.check(h, "height"))


def parse_control(text: str) -> Tuple[str, str]:
    """``canny=edges.png`` -> ("canny", "edges.png")."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise UsageError(f"--control must be NAME=PATH (a ControlNet of checkpoints.yaml and its control image), got {text!r}")
    return name.strip(), path.strip()


def parse_lora(text: str) -> Tuple[str, float]:
    """``"My style=0.8"`` -> ("My style", 0.8); ``"My style"`` -> ("My style", 1.0)."""
    name, sep, scale = text.rpartition("=")
    if not sep:
        name, scale = text, ""
    name = name.strip()
    if not name:
        raise UsageError(f"--lora must be NAME or NAME=SCALE (a LoRA of checkpoints.yaml), got {text!r}")
    if not scale.strip():
        return name, float(settings.LORA_SCALE.default)
    try:
        return name, float(scale)
    except ValueError:
        raise UsageError(f"--lora {text!r}: the scale after '=' must be a number, e.g. {name}=0.8") from None


class _MaskAction(argparse.Action):
    """``--mask PATH`` belongs to the ``--reference`` given last before it; ``--mask K=PATH`` to
    reference K (1-based). Stored as (K, PATH) pairs; K 0: no --reference came before it."""

    def __call__(self, parser, namespace, value, option_string=None):
        key, sep, path = value.partition("=")
        if sep and key.strip().isdigit():
            pair = (int(key.strip()), path.strip())
        else:
            pair = (len(getattr(namespace, "reference", None) or []), value.strip())
        items = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, items + [pair])


def _existing_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise UsageError(f"{what} '{path}' does not exist")
    return path


def list_references(folder: str) -> List[Path]:
    """The images of a folder (not recursive), sorted by name, so every process sees the same list."""
    d = Path(folder)
    if not d.is_dir():
        raise UsageError(f"--reference-dir '{folder}' is not a folder")
    refs = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not refs:
        raise UsageError(f"--reference-dir '{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in refs]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise UsageError(f"--reference-dir '{folder}': several images share the name {', '.join(twins)} "
                         "(outputs are named by the reference's stem); rename them")
    return refs


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and where to find the options) instead of the usage block."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _sampler_options(p: argparse.ArgumentParser, *, size: bool = True) -> None:
    p.add_argument("--seed", type=int, default=int(settings.SEED.default),
                   help=f"seed of the first image; image i gets seed + i (default {int(settings.SEED.default)})")
    # None: not given, so a few-step LoRA's own settings (its checkpoints.yaml entry) may apply
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default 50, or the --lora entry's own steps)")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance scale (default 2.0, the paper's, or the --lora entry's own guidance)")
    if size:
        p.add_argument("--size", metavar="WxH", help="output size, e.g. 512x768 (default 512x512; with --control: "
                                                     "follows the first control image)")
    p.add_argument("--num-images", type=int, default=int(settings.NUM_IMAGES.default), help="images per reference (default 1)")
    p.add_argument("--sampler", default=None, help="sampler name (default DDIM, the paper's, or the --lora entry's own)")
    p.add_argument("--deep-cache", type=int, default=int(settings.DEEP_CACHE.default), metavar="N",
                   help="quick mode, APPROXIMATE: the UNet's deep features are computed every N steps and reused in "
                        f"between (2 or 3: faster, slightly different pictures); default 1: off, exact "
                        f"({int(settings.DEEP_CACHE.lo)}..{int(settings.DEEP_CACHE.hi)})")
    p.add_argument("--base-model", help="a base model of checkpoints.yaml (default: the profile's)")
    p.add_argument("--seecoder", help="a SeeCoder of checkpoints.yaml (default: the profile's)")


def _reference_options(p: argparse.ArgumentParser) -> None:
    """What every task takes besides the sampler's settings: the reference's strength, LoRAs."""
    p.add_argument("--reference-strength", type=float, default=settings.REFERENCE_STRENGTH.default, metavar="S",
                   help="how strongly the reference conditions the picture (guidance between none and the "
                        "reference; default 1.0: the reference as encoded)")
    p.add_argument("--lora", action="append", default=[], metavar="NAME[=SCALE]",
                   help=f"a LoRA of checkpoints.yaml and its scale (default 1.0); at most {settings.MAX_LORAS}")


def _engine_options(p: argparse.ArgumentParser, *, profile_default=True) -> None:
    p.add_argument("--profile", choices=["auto", "real", "tiny"], default=settings.profile() if profile_default else None,
                   help="real: checkpoints.yaml models; tiny: offline random-weight models; auto: real when available "
                        "(env PFD_PROFILE)")
    p.add_argument("--checkpoints", default=settings.checkpoints_path(), help="path of checkpoints.yaml (env PFD_CHECKPOINTS)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present; under accelerate: the process's)")
    p.add_argument("--precision", choices=settings.PRECISIONS, default=None,
                   help="the models' precision (env PFD_PRECISION; default auto: fp16 on CUDA, bf16 on a CPU with AMX or AVX-512 BF16, "
                        "else fp32; the tiny profile fp32)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the PNGs into (created when missing)")


def build_parser() -> argparse.ArgumentParser:
    # the choices and defaults are the library's (these imports load torch: only when parsing)
    from .blocks import PRESETS as BLOCK_PRESETS
    from .tasks.edit import EditSettings
    from .tasks.multi_reference import BLENDS
    from .tasks.text_image import PROMPT_MODES

    edit_defaults = EditSettings()
    p = _Parser(prog="prompt-free", description="Prompt-Free Diffusion from the command line.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("generate", help="Image Variation, or Reference + ControlNet with --control",
                       description="New images from a reference image (Image Variation), with structure from control "
                                   "images when --control is given (Reference + ControlNet).")
    src = g.add_argument_group("what to generate from (one of)")
    src.add_argument("--reference", metavar="IMG", action="append", default=[],
                     help="the reference image; give it up to "
                          f"{settings.MAX_REFERENCES} times to blend several (Multi-Reference); with --from-png: the "
                          "reference when its recorded path is gone")
    src.add_argument("--reference-dir", metavar="DIR", help="every image of a folder (with a progress bar; split across "
                                                            "processes under accelerate launch)")
    src.add_argument("--from-png", metavar="PNG", help="redo a picture from its metadata (settings, models, inputs)")
    g.add_argument("--control", action="append", default=[], metavar="NAME=MAP",
                   help="a ControlNet of checkpoints.yaml and its control image, e.g. canny=edges.png (at most "
                        f"{settings.MAX_CONTROLS}); with --from-png: the control images when their recorded paths are gone")
    g.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                   help="with --from-png: the file of a recorded input whose path is gone, by its name in the record "
                        "(person, garment, mask, structure ...; --reference and --control cover the others)")
    g.add_argument("--control-mode", choices=["as-is", "preprocess"], default="as-is",
                   help="the control images are ready maps (as-is) or pictures a detector turns into maps (preprocess)")
    g.add_argument("--control-scale", type=float, default=settings.CONTROL_SCALE.default,
                   help="conditioning scale of every ControlNet (default 1.0)")
    g.add_argument("--no-check-maps", action="store_true", help="do not refuse as-is maps that do not look like their kind")
    _reference_options(g)
    g.add_argument("--prompt", default="", metavar="TEXT",
                   help="an optional text prompt mixed with the reference (one reference only; default none)")
    g.add_argument("--prompt-mode", choices=list(PROMPT_MODES), default=PROMPT_MODES[0],
                   help="concat: the prompt's tokens before the reference's; style: the reference in the style "
                        "blocks, the text in the others (default concat)")
    g.add_argument("--prompt-weight", type=float, default=settings.PROMPT_WEIGHT.default, metavar="W",
                   help="weight of the prompt's tokens (default 1.0)")
    g.add_argument("--blocks", choices=list(BLOCK_PRESETS), default=BLOCK_PRESETS[0],
                   help="the UNet blocks the reference goes to (default all)")
    multi = g.add_argument_group("Multi-Reference (two or more --reference)")
    multi.add_argument("--weight", type=float, action="append", default=[], metavar="W",
                       help="the weight of each reference, in the order of the --reference options (0: left out; "
                            "default 1.0 each)")
    multi.add_argument("--mask", action=_MaskAction, default=[], metavar="PATH|K=PATH",
                       help="a region mask (white = where the reference applies) for the --reference given just "
                            "before it, or for reference K; used by --blend regions, where every reference after "
                            "the first needs one")
    multi.add_argument("--blend", choices=list(BLENDS), default=BLENDS[0],
                       help="how the references are blended (default average)")
    _sampler_options(g)
    _engine_options(g, profile_default=False)

    t = sub.add_parser("tryon", help="Virtual Try-On: dress a person in a garment",
                       description="Dress the person of a photo in the garment of another photo.")
    t.add_argument("--person", required=True, metavar="IMG", help="photo of the person")
    t.add_argument("--garment", required=True, metavar="IMG", help="photo of the garment")
    t.add_argument("--mask", help="a mask image (white = change), or 'upper body', 'lower body', 'full outfit' "
                                  "(drawn from the detected pose; default upper body)")
    t.add_argument("--max-side", type=int, default=int(settings.TRYON_MAX_SIDE.default),
                   help="longest side of the generation (default 768)")
    t.add_argument("--no-pose", action="store_true", help="no openpose ControlNet (the pose is not kept)")
    t.add_argument("--control-scale", type=float, default=settings.CONTROL_SCALE.default, help="pose ControlNet scale")
    _reference_options(t)
    _sampler_options(t, size=False)
    _engine_options(t)

    e = sub.add_parser("edit", help="Edit with a reference: fill the masked region of a photo",
                       description="Fill the masked region of a photo with the content of a reference image.")
    e.add_argument("--photo", required=True, metavar="IMG", help="the photo to edit")
    e.add_argument("--mask", required=True, metavar="IMG", help="a mask image: white = the region to fill (resized to "
                                                                 "the photo when its size differs)")
    e.add_argument("--reference", required=True, metavar="IMG", help="the image whose content fills the region")
    e.add_argument("--crop-reference", action="store_true", help="crop the reference to its subject (plain background)")
    e.add_argument("--dilation", type=int, default=edit_defaults.dilation,
                   help=f"grow the mask by this many pixels (default {edit_defaults.dilation})")
    e.add_argument("--feather", type=int, default=edit_defaults.feather,
                   help=f"fade the paste-back edge over this many pixels (default {edit_defaults.feather})")
    e.add_argument("--max-side", type=int, default=int(settings.TRYON_MAX_SIDE.default),
                   help="longest side of the generation (default 768)")
    _reference_options(e)
    _sampler_options(e, size=False)
    _engine_options(e)

    sub.add_parser("download", help="pre-fetch model files (python -m prompt_free.download; --help there)", add_help=False)
    sub.add_parser("app", help="start the Gradio app (python app.py; --help there)", add_help=False)
    return p


# ----------------------------------------------------------------------------- processes
@dataclass
class Processes:
    """This process's place among the ones ``accelerate launch`` / torchrun started."""

    index: int = 0
    count: int = 1
    state: object = None  # accelerate's PartialState when there are several

    @property
    def main(self) -> bool:
        return self.index == 0

    def split(self, items: Sequence):
        """This process's share of ``items`` (accelerate's ``split_between_processes``, no padding:
        no item is done twice), as a context manager."""
        if self.state is None:
            from contextlib import nullcontext

            return nullcontext(list(items))
        return self.state.split_between_processes(list(items), apply_padding=False)

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def processes() -> Processes:
    """Several processes when launched by accelerate or torchrun (``WORLD_SIZE`` > 1). Without
    CUDA each must ask for the CPU backend, else it sees itself as rank 0 of 1."""
    if settings.world_size() <= 1:
        return Processes()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state)


# ----------------------------------------------------------------------------- commands
def _engine(args, proc: Processes, profile: Optional[str] = None):
    from . import threads
    from .engine import Engine

    if proc.count <= 1:  # under accelerate each process shares the cores; torch's default is kept
        threads.configure()

    device = args.device
    if device is None and proc.state is not None:
        device = str(proc.state.device)
    return Engine.from_profile(profile or args.profile or settings.profile(), args.checkpoints, device=device,
                               precision=args.precision)


def _out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder '{path}': {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"cannot write into the output folder '{path}'")
    return out


def _sampler_settings(args, engine, width=None, height=None) -> dict:
    loras = tuple(parse_lora(t) for t in args.lora)
    s = dict(seed=args.seed, num_images=args.num_images, base_model=args.base_model, seecoder=args.seecoder,
             reference_strength=args.reference_strength, loras=loras, deep_cache=args.deep_cache,
             **lora_sampler(args, engine, loras))
    if width is not None:
        s.update(width=width, height=height)
    return s


def lora_sampler(args, engine, loras) -> Dict[str, object]:
    """steps, guidance and scheduler of a run: those given on the command line, else those of a
    --lora entry that carries them (a few-step LoRA), else the paper's. Two LoRAs that set one of
    them differently need it given (``UsageError``)."""
    from .sampling import DEFAULT_SCHEDULER

    given = {"steps": args.steps, "guidance": args.guidance, "scheduler": args.sampler}
    out = {"steps": int(settings.STEPS.default), "guidance": settings.GUIDANCE.default, "scheduler": DEFAULT_SCHEDULER}
    from_lora: Dict[str, Tuple[str, object]] = {}
    for name, scale in loras:
        if scale == 0:  # a LoRA at scale 0 is no LoRA (lora.LoraPatch)
            continue
        for key, value in engine.registry.entry("loras", name).sampler_preset.items():
            if key in from_lora and from_lora[key][1] != value and given[key] is None:
                option = "--sampler" if key == "scheduler" else f"--{key}"
                raise UsageError(f"LoRAs '{from_lora[key][0]}' and '{name}' set different {key} ({from_lora[key][1]} "
                                 f"and {value}): give {option}")
            from_lora.setdefault(key, (name, value))
    out.update({k: v for k, (_, v) in from_lora.items()})
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _print_lora_notes(engine, args, proc) -> None:
    """What each --lora entry sets (its sampler) and whether it is validated with SeeCoder context."""
    if not proc.main:
        return
    for name, scale in (parse_lora(t) for t in args.lora):
        note = engine.registry.entry("loras", name).lora_note() if scale != 0 else ""
        if note:
            overridden = [o for o, v in (("--steps", args.steps), ("--guidance", args.guidance), ("--sampler", args.sampler))
                          if v is not None]
            print(f"note: {note}" + (f" ({', '.join(overridden)} given: used instead)" if overridden else ""),
                  file=sys.stderr)


def _write(pictures_by_name: Sequence[Tuple[str, object]], out: Path) -> List[Path]:
    from .metadata import save_png

    return [save_png(img, out / name) for name, img in pictures_by_name]


def _names(stem: str, result) -> List[Tuple[str, object]]:
    seeds = result.info.get("seeds") or []
    named = [(f"{stem}-s{seeds[i] if i < len(seeds) else i}.png", img) for i, img in enumerate(result.images)]
    base = seeds[0] if seeds else 0
    named += [(f"{stem}-s{base}-map{k + 1}.png", img) for k, img in enumerate(result.extras)]
    return named


def _report(paths: Sequence[Path], out: Path, seconds: float, proc: Processes, *, list_files: bool = True) -> None:
    if list_files:
        for p in paths:
            print(p)
    who = f"process {proc.index + 1}/{proc.count}: " if proc.count > 1 else ""
    print(f"{who}wrote {len(paths)} file(s) to {out} in {seconds:.1f} s", flush=True)


def _text_options(args) -> dict:
    """The prompt and block options of Image Variation and Reference + ControlNet."""
    return dict(prompt=args.prompt, prompt_mode=args.prompt_mode, prompt_weight=args.prompt_weight, blocks=args.blocks)


def _control_specs(args, controls):
    from .tasks import ControlSpec

    mode = "preprocess" if args.control_mode == "preprocess" else "use as-is"
    return [ControlSpec(name, path, mode, scale=args.control_scale, check_map=not args.no_check_maps)
            for name, path in controls]


def _generate_one(engine, args, reference: str, controls, width, height):
    """One reference through Image Variation or Reference + ControlNet; returns (result, task
    name, settings, call) for the metadata."""
    from .tasks import ControlSettings, VariationSettings, image_variation, reference_control

    if controls:
        specs = _control_specs(args, controls)
        s = ControlSettings(**_sampler_settings(args, engine, width, height), **_text_options(args))
        return reference_control(engine, reference, specs, s), "reference_control", s, {"reference": reference, "controls": specs}
    s = VariationSettings(**_sampler_settings(args, engine, *((width, height) if width is not None else (512, 512))),
                          **_text_options(args))
    return image_variation(engine, reference, s), "image_variation", s, {"reference": reference}


def multi_reference_inputs(args) -> list:
    """The ``Reference``s of the --reference, --weight and --mask options (checked, files exist)."""
    from .tasks import Reference

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
    from .tasks import MultiReferenceSettings, multi_reference

    s = MultiReferenceSettings(**_sampler_settings(args, engine), width=width, height=height, blend=args.blend,
                               controls=_control_specs(args, controls), blocks=args.blocks)
    return multi_reference(engine, references, s), "multi_reference", s, {"references": references}


def cmd_generate(args) -> int:
    if args.from_png:
        if args.reference_dir:
            raise UsageError("--from-png and --reference-dir cannot be used together")
        if len(args.reference) > 1:
            raise UsageError("with --from-png, --reference replaces the one recorded reference; for the references "
                             "of a Multi-Reference picture use --input references[K].image=PATH (K from 0)")
        return cmd_redo(args)
    if bool(args.reference) == bool(args.reference_dir):
        raise UsageError("give one of --reference IMG, --reference-dir DIR or --from-png PNG")
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
    else:
        refs = [Path(_existing_file(args.reference[0], "reference image"))] if args.reference else list_references(args.reference_dir)
    out = _out_dir(args.out)
    t0 = time.perf_counter()
    engine = _engine(args, proc)
    if engine.registry.is_tiny and proc.main:
        print(f"profile {engine.profile}: small random-weight models, the pictures are not meaningful", file=sys.stderr)
    _print_lora_notes(engine, args, proc)

    from .metadata import tag

    written: List[Path] = []
    failures: List[str] = []
    if multi:  # one run for all the references; named after the first
        result, task, s, call = _generate_multi(engine, args, references, controls, width, height)
        tag(engine, result, task, s, call, keep_paths=True)
        written += _write(_names(f"{refs[0].stem}-multi", result), out)
        refs = []
    with proc.split(refs) as mine:
        bar = _progress(mine, proc) if args.reference_dir else mine
        for ref in bar:
            try:
                result, task, s, call = _generate_one(engine, args, str(ref), controls, width, height)
            except PromptFreeError as e:
                if not args.reference_dir:
                    raise
                failures.append(f"{ref.name}: {e}")
                continue
            tag(engine, result, task, s, call, keep_paths=True)
            written += _write(_names(ref.stem, result), out)
    _report(written, out, time.perf_counter() - t0, proc, list_files=not args.reference_dir)
    for f in failures:
        print(f"skipped {f}", file=sys.stderr)
    proc.wait()
    return EXIT_FAILED if failures else EXIT_OK


def _progress(items, proc: Processes):
    from tqdm.auto import tqdm

    desc = f"process {proc.index + 1}/{proc.count}" if proc.count > 1 else "references"
    return tqdm(items, desc=desc, unit="image", position=proc.index, file=sys.stderr, dynamic_ncols=True)


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
    from .metadata import recorded_controls

    overrides: Dict[str, str] = {}
    if args.reference:
        overrides["reference"] = _existing_file(args.reference[0], "reference image")
    known = set(recorded_inputs(rec.get("call") or {})) | set(recorded_inputs(rec.get("settings") or {}))
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
    from .metadata import check_models, read, redo_call, save_png, tag

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
    from .tasks import TryOnSettings, virtual_tryon

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
    s = TryOnSettings(**_sampler_settings(args, engine), max_side=args.max_side, pose_control=not args.no_pose,
                      control_scale=args.control_scale)
    call = {"person": person, "garment": garment, "mask": mask}
    return _run_edit(engine, proc, t0, out, virtual_tryon, call, s, f"{Path(person).stem}-tryon")


def cmd_edit(args) -> int:
    from .tasks import EditSettings, edit_with_reference

    photo = _existing_file(args.photo, "photo")
    mask = _existing_file(args.mask, "mask image")
    reference = _existing_file(args.reference, "reference image")
    out = _out_dir(args.out)
    t0 = time.perf_counter()
    proc = Processes()
    engine = _engine(args, proc)
    _print_lora_notes(engine, args, proc)
    s = EditSettings(**_sampler_settings(args, engine), max_side=args.max_side, dilation=args.dilation, feather=args.feather,
                     crop_reference=args.crop_reference)
    call = {"photo": photo, "mask": mask, "reference": reference}
    return _run_edit(engine, proc, t0, out, edit_with_reference, call, s, f"{Path(photo).stem}-edit")


def _run_edit(engine, proc, t0, out, task, call: dict, s, stem: str) -> int:
    """The tail both editing commands share: run ``task(engine, **call, settings=s)``, tag its
    PNGs, write results and extras as ``<stem>-s<seed>...``, report, print the task's notes."""
    from .metadata import tag

    result = task(engine, **call, settings=s)
    tag(engine, result, task.__name__, s, call, keep_paths=True)
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
    """``prompt-free app``: the Gradio app (``prompt_free.app``; needs the ``app`` extra)."""
    try:
        import gradio  # noqa: F401 - the app extra's one dependency of its own
    except ImportError:
        raise UsageError("the app needs the 'app' extra: pip install 'prompt-free-diffusion[app]'") from None
    from .app.main import main as app_main

    return app_main(list(argv))


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "download":  # its own parser, options and exit codes
        from .download import main as download_main

        return download_main(argv[1:])
    if argv and argv[0] == "app":
        try:
            return cmd_app(argv[1:])
        except PromptFreeError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        settings.check_environment()
        return {"generate": cmd_generate, "tryon": cmd_tryon, "edit": cmd_edit}[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except PromptFreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(f"error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
