"""``prompt-free export``'s parser (``cli.export`` runs the command). Imports nothing of the CLI,
so ``options`` can add it."""

from __future__ import annotations

from .. import settings


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write the models as diffusers folders: OUT/prior (PromptFreePriorPipeline) "
                                      "and OUT/base (StableDiffusionPipeline without text encoder)",
                       description="Write the profile's SeeCoder as a PromptFreePriorPipeline folder (OUT/prior, with "
                                   "a model card) and its base model as a diffusers StableDiffusionPipeline folder "
                                   "without text encoder (OUT/base, DDIM as Image Variation), offline; --controlnet "
                                   "adds ControlNetModel folders (OUT/controlnets/NAME). docs/diffusers.md shows how "
                                   "to use them.")
    p.add_argument("--seecoder", help="a SeeCoder of checkpoints.yaml (default: the profile's)")
    p.add_argument("--base-model", help="a base model of checkpoints.yaml (default: the one the SeeCoder's entry pairs "
                                        "it with, else the profile's)")
    p.add_argument("--controlnet", action="append", default=[], metavar="NAME",
                   help="also write this ControlNet of checkpoints.yaml to OUT/controlnets/NAME (repeatable)")
    p.add_argument("--profile", choices=["auto", "real", "tiny"], default=settings.profile(),
                   help="real, tiny or auto (env PFD_PROFILE)")
    p.add_argument("--checkpoints", default=settings.checkpoints_path(), help="path of checkpoints.yaml")
    p.add_argument("--precision", choices=settings.PRECISIONS, default="fp32",
                   help="the written weights' precision (default fp32; auto: the engine's rule for this machine)")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write prior/ and base/ into (created "
                                                               "when missing; prior/ and base/ must not exist yet)")
    p.set_defaults(no_progress=True, device="cpu")
