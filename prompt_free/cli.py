"""The command line: ``prompt-free`` (console script) and ``python -m prompt_free``.

    prompt-free generate --reference IMG [--control canny=MAP ...] [--seed N] [--steps N]
                         [--guidance G] [--size WxH] [--num-images N] [--base-model NAME]
                         [--seecoder NAME] [--profile tiny|real|auto] --out DIR
    prompt-free generate --reference-dir DIR --out OUT ...      (a folder, with a progress bar;
                         under ``accelerate launch`` the references are split across processes)
    prompt-free generate --from-png OUT.png --out DIR           (redo a picture from its metadata)
    prompt-free tryon --person P --garment G [--mask M|upper body|...] --out DIR
    prompt-free download ...                                    (= python -m prompt_free.download)
    prompt-free app ...                                         (= python app.py)

Each command calls the library's task functions (``prompt_free.tasks``), writes PNGs with their
metadata (``prompt_free.metadata``) and prints where they went and how long it took. A problem
with the input is one line on stderr and exit code 1 (2 for a usage error), never a traceback.

File names do not depend on the number of processes: ``<reference stem>-s<seed>.png`` for each
image (image i of a run has seed + i) and ``<reference stem>-s<seed>-map<k>.png`` for the control
maps; ``--from-png`` writes the picture under the PNG's own name.
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
    p.add_argument("--steps", type=int, default=int(settings.STEPS.default), help="denoising steps (default 50)")
    p.add_argument("--guidance", type=float, default=settings.GUIDANCE.default, help="guidance scale (default 2.0, the paper's)")
    if size:
        p.add_argument("--size", metavar="WxH", help="output size, e.g. 512x768 (default 512x512; with --control: "
                                                     "follows the first control image)")
    p.add_argument("--num-images", type=int, default=int(settings.NUM_IMAGES.default), help="images per reference (default 1)")
    p.add_argument("--sampler", default=None, help="sampler name (default DDIM, the paper's)")
    p.add_argument("--base-model", help="a base model of checkpoints.yaml (default: the profile's)")
    p.add_argument("--seecoder", help="a SeeCoder of checkpoints.yaml (default: the profile's)")


def _engine_options(p: argparse.ArgumentParser, *, profile_default=True) -> None:
    p.add_argument("--profile", choices=["auto", "real", "tiny"], default=settings.profile() if profile_default else None,
                   help="real: checkpoints.yaml models; tiny: offline random-weight models; auto: real when available "
                        "(env PFD_PROFILE)")
    p.add_argument("--checkpoints", default=settings.checkpoints_path(), help="path of checkpoints.yaml (env PFD_CHECKPOINTS)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present; under accelerate: the process's)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the PNGs into (created when missing)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prompt-free", description="Prompt-Free Diffusion from the command line.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("generate", help="Image Variation, or Reference + ControlNet with --control",
                       description="New images from a reference image (Image Variation), with structure from control "
                                   "images when --control is given (Reference + ControlNet).")
    src = g.add_argument_group("what to generate from (one of)")
    src.add_argument("--reference", metavar="IMG", help="the reference image (with --from-png: the reference when "
                                                        "its recorded path is gone)")
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
    _sampler_options(t, size=False)
    _engine_options(t)

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
    from .engine import Engine

    device = args.device
    if device is None and proc.state is not None:
        device = str(proc.state.device)
    return Engine.from_profile(profile or args.profile or settings.profile(), args.checkpoints, device=device)


def _out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the output folder '{path}': {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"cannot write into the output folder '{path}'")
    return out


def _sampler_settings(args, width=None, height=None) -> dict:
    from .sampling import DEFAULT_SCHEDULER

    s = dict(seed=args.seed, steps=args.steps, guidance=args.guidance, num_images=args.num_images,
             scheduler=args.sampler or DEFAULT_SCHEDULER, base_model=args.base_model, seecoder=args.seecoder)
    if width is not None:
        s.update(width=width, height=height)
    return s


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


def _generate_one(engine, args, reference: str, controls, width, height):
    """One reference through Image Variation or Reference + ControlNet; returns (result, task
    name, settings, call) for the metadata."""
    from .tasks import ControlSettings, ControlSpec, VariationSettings, image_variation, reference_control

    if controls:
        mode = "preprocess" if args.control_mode == "preprocess" else "use as-is"
        specs = [ControlSpec(name, path, mode, scale=args.control_scale, check_map=not args.no_check_maps)
                 for name, path in controls]
        s = ControlSettings(**_sampler_settings(args, width, height))
        return reference_control(engine, reference, specs, s), "reference_control", s, {"reference": reference, "controls": specs}
    s = VariationSettings(**_sampler_settings(args, *((width, height) if width is not None else (512, 512))))
    return image_variation(engine, reference, s), "image_variation", s, {"reference": reference}


def cmd_generate(args) -> int:
    if args.from_png:
        if args.reference_dir:
            raise UsageError("--from-png and --reference-dir cannot be used together")
        return cmd_redo(args)
    if bool(args.reference) == bool(args.reference_dir):
        raise UsageError("give one of --reference IMG, --reference-dir DIR or --from-png PNG")
    proc = processes()
    width, height = parse_size(args.size)
    controls = [parse_control(c) for c in args.control]
    if len(controls) > settings.MAX_CONTROLS:
        raise UsageError(f"at most {settings.MAX_CONTROLS} --control can be given, got {len(controls)}")
    for _, path in controls:
        _existing_file(path, "control image")
    refs = [Path(_existing_file(args.reference, "reference image"))] if args.reference else list_references(args.reference_dir)
    out = _out_dir(args.out)
    t0 = time.perf_counter()
    engine = _engine(args, proc)
    if engine.registry.is_tiny and proc.main:
        print(f"profile {engine.profile}: small random-weight models, the pictures are not meaningful", file=sys.stderr)

    from .metadata import tag

    written: List[Path] = []
    failures: List[str] = []
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


def _redo_overrides(args, rec) -> Dict[str, str]:
    overrides: Dict[str, str] = {}
    if args.reference:
        overrides["reference"] = _existing_file(args.reference, "reference image")
    known = set(rec.get("call") or {})
    for text in args.input:
        name, sep, path = text.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UsageError(f"--input must be NAME=PATH, got {text!r}")
        if name.strip() not in known:
            raise UsageError(f"--input {name.strip()}=...: the record has no input '{name.strip()}' "
                             f"(it has: {', '.join(sorted(known)) or 'none'})")
        overrides[name.strip()] = _existing_file(path.strip(), name.strip())
    recorded = [c for c in (rec.get("call") or {}).get("controls") or []]
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
    from .metadata import tag
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
    s = TryOnSettings(**_sampler_settings(args), max_side=args.max_side, pose_control=not args.no_pose,
                      control_scale=args.control_scale)
    call = {"person": person, "garment": garment, "mask": mask}
    result = virtual_tryon(engine, person, garment, mask, s)
    tag(engine, result, "virtual_tryon", s, call, keep_paths=True)
    stem = Path(person).stem
    seeds = result.info.get("seeds") or []
    named = [(f"{stem}-tryon-s{seeds[i] if i < len(seeds) else i}.png", img) for i, img in enumerate(result.images)]
    named += [(f"{stem}-tryon-s{seeds[0] if seeds else 0}-extra{k + 1}.png", img) for k, img in enumerate(result.extras)]
    paths = _write(named, out)
    _report(paths, out, time.perf_counter() - t0, proc)
    for note in result.info.get("notes") or []:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_app(argv: Sequence[str]) -> int:
    try:
        import app
    except ImportError:
        root = Path(__file__).resolve().parent.parent
        if not (root / "app.py").is_file():
            raise UsageError("the app is not installed: pip install 'prompt-free-diffusion[app]'") from None
        sys.path.insert(0, str(root))
        import app
    return app.main(list(argv))


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
        return {"generate": cmd_generate, "tryon": cmd_tryon}[args.command](args)
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
