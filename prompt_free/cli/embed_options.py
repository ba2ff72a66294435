"""The options of saved embeddings and of the start from an image: ``prompt-free embed``'s parser
and ``generate``'s ``--embedding`` / ``--init-image`` (``cli.embed`` runs the command). Imports
nothing of the CLI, so ``options`` can add them."""

from __future__ import annotations

from .. import settings


def add_generate_options(src, g) -> None:
    """``generate``'s ``--embedding`` (among what it generates from, ``src``) and ``--init-image``."""
    src.add_argument("--embedding", metavar="E", help="a saved embedding (prompt-free embed) used instead of encoding "
                                                      "a reference (then --reference is optional: the init image)")
    g.add_argument("--init-image", metavar="IMG", help="what --denoise-strength below 1 starts from (default: the "
                                                       "reference)")


def add_embed_parser(sub) -> None:
    from ..embeddings import AVERAGE, MODES

    p = sub.add_parser("embed", help="save a reference's SeeCoder embedding, or combine saved ones (.safetensors)",
                       description="Write a reference's SeeCoder context and its unconditional context as a "
                                   ".safetensors file (generate --embedding uses it instead of the reference), or "
                                   "combine several such files with weights.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference", metavar="IMG", help="the reference image to encode")
    src.add_argument("--combine", nargs="+", metavar="E", help="two or more embedding files to combine")
    p.add_argument("--reference-mask", metavar="M", help="with --reference: a source mask (white = the part of the "
                   "reference to use), as generate's --reference-mask")
    p.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                   help="with --combine: one weight per file, in their order (default 1 each)")
    p.add_argument("--mode", choices=list(MODES), default=AVERAGE,
                   help="with --combine: add, subtract (the first minus the others), average (weighted mean), "
                        "norm_average (weighted mean, each token rescaled to the inputs' mean norm); default average")
    p.add_argument("--seecoder", help="with --reference: a SeeCoder of checkpoints.yaml (default: the profile's)")
    p.add_argument("--profile", choices=["auto", "real", "tiny"], default=settings.profile(),
                   help="real, tiny or auto (env PFD_PROFILE)")
    p.add_argument("--checkpoints", default=settings.checkpoints_path(), help="path of checkpoints.yaml")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    p.add_argument("--precision", choices=settings.PRECISIONS, default=None, help="the models' precision (env PFD_PRECISION)")
    p.add_argument("--out", required=True, metavar="E.safetensors", help="the file to write")
    p.set_defaults(no_progress=True)
