"""The command line's options: parsing helpers and the parser of every command.

The options of declared settings (``tasks.fields``: strength, text, blocks, quick mode) are
derived from their declarations (``add_declared``); the rest are the commands' own.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional, Tuple

from .. import settings
from ..errors import PromptFreeError
from ..tasks.fields import APPENDED, LAST, REFERENCE, in_section, with_cli
from .embed_options import add_embed_parser, add_generate_options
from .export_options import add_export_parser

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


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


def _sampler_options(p: argparse.ArgumentParser, settings_type, *, size: bool = True) -> None:

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
    add_declared(p, settings_type, LAST)  # quick mode
    add_declared(p, settings_type, APPENDED)  # settings added since
    p.add_argument("--base-model", help="a base model of checkpoints.yaml (default: the profile's)")
    p.add_argument("--seecoder", help="a SeeCoder of checkpoints.yaml (default: the profile's)")


def _reference_options(p: argparse.ArgumentParser, settings_type) -> None:
    """What every task takes besides the sampler's settings: the reference's options declared
    by ``settings_type`` (strength; text and blocks where it has them), LoRAs."""
    add_declared(p, settings_type, REFERENCE)
    p.add_argument("--lora", action="append", default=[], metavar="NAME[=SCALE]",
                   help=f"a LoRA of checkpoints.yaml and its scale (default 1.0); at most {settings.MAX_LORAS}")


def add_declared(p, settings_type, section: str) -> None:
    """The CLI options of the settings ``settings_type`` declares in ``section`` (``tasks.fields``):
    name, type, default, choices and help from the one declaration."""
    for name, info in in_section(settings_type, section):
        if not info.cli:
            continue
        default = info.neutral
        kind = (int if info.range.integer else float) if info.range is not None else type(default)
        if info.image:  # a file, opened by the task (a missing one is its clear InputImageError)
            kind = str
        p.add_argument(info.cli, dest=name, type=kind, default=default, metavar=info.metavar,
                       choices=list(info.choices) if info.choices else None, help=info.help)


def declared_values(args, settings_type) -> dict:
    """The values of the declared options of ``settings_type`` that ``args`` holds, by field name."""
    return {name: getattr(args, name) for name, info in with_cli(settings_type) if hasattr(args, name)}


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
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars on stderr (shown by default: the denoising steps of each run, and the "
                        "--reference-dir folder's; under accelerate launch only the folder's)")


def _folder_options(src, p: argparse.ArgumentParser) -> None:
    """--reference-dir (in the group ``src``) and its own options: redo what is done, or run the
    folder on a Ray cluster."""
    src.add_argument("--reference-dir", metavar="DIR", help="every image of a folder (with a progress bar; split across "
                                                            "processes under accelerate launch or Ray actors with --ray)")
    folder = p.add_argument_group("a folder (--reference-dir)")
    folder.add_argument("--overwrite", action="store_true",
                        help="redo the references whose pictures are already in --out (default: skip them, so a run "
                             "again after a stop finishes the rest)")
    folder.add_argument("--ray", action="store_true",
                        help="run the folder on a Ray cluster with Ray Data, one engine per actor (needs the serve "
                             "extra; docs/scale-out.md)")
    folder.add_argument("--ray-address", metavar="ADDR",
                        help="with --ray: join the Ray cluster at ADDR ('auto': the one 'ray start' runs on this "
                             "machine; default: start one on this machine)")
    folder.add_argument("--ray-actors", type=int, metavar="N",
                        help="with --ray: how many engines (Ray actors) share the folder (default: one per GPU of "
                             "the cluster on CUDA, one per machine on the CPU, each with an equal share of its CPUs)")


def build_parser() -> argparse.ArgumentParser:
    # the choices and defaults are the library's (these imports load torch: only when parsing)
    from ..tasks import ControlSettings, EditSettings, TryOnSettings
    from ..tasks.multi_reference import BLENDS

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
    _folder_options(src, g)  # --reference-dir and its own options
    src.add_argument("--from-png", metavar="PNG", help="redo a picture from its metadata (settings, models, inputs)")
    add_generate_options(src, g)  # --embedding, --init-image
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
    _reference_options(g, ControlSettings)  # strength, the optional prompt, blocks
    multi = g.add_argument_group("Multi-Reference (two or more --reference)")
    multi.add_argument("--weight", type=float, action="append", default=[], metavar="W",
                       help="the weight of each reference, in the order of the --reference options (0: left out; "
                            "default 1.0 each)")
    multi.add_argument("--mask", action=_MaskAction, default=[], metavar="PATH|K=PATH",
                       help="a region mask (white = where the reference applies) for the --reference given just "
                            "before it, or for reference K; used by --blend regions, where every reference after "
                            "the first needs one")
    multi.add_argument("--blend", choices=list(BLENDS), default=BLENDS[0], help="how the references are blended (default average)")
    _sampler_options(g, ControlSettings)
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
    _reference_options(t, TryOnSettings)
    _sampler_options(t, TryOnSettings, size=False)
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
    _reference_options(e, EditSettings)
    _sampler_options(e, EditSettings, size=False)
    _engine_options(e)
    _other_commands(sub)
    return p


def _other_commands(sub) -> None:
    """The commands with parsers of their own: embed, export, and download / app (their own --help)."""
    add_embed_parser(sub)
    add_export_parser(sub)
    sub.add_parser("download", help="pre-fetch model files (python -m prompt_free.download; --help there)", add_help=False)
    sub.add_parser("app", help="start the Gradio app (python app.py; --help there)", add_help=False)
