"""The folders of ``prompt-free export`` on the tiny profile, written by the real command in-process,
and diffusers' own pipelines loaded from them (text_encoder=None, tokenizer=None: the base folder has none)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from prompt_free import cli
from tests.helpers.app import EXAMPLES

SIZE = 64  # pixels: the tiny models at their smallest, a few steps (tests stay fast)
STEPS = 3


def export_tiny(out: Path, *options: str) -> Path:
    """``prompt-free export --profile tiny [options] --out OUT``; returns OUT."""
    code = cli.main(["export", "--profile", "tiny", *map(str, options), "--out", str(out)])
    assert code == 0, f"export failed with exit code {code}"
    return out


def base_pipeline(cls, folder: Path, **components):
    """A diffusers SD 1.x pipeline class loaded from an exported base folder."""
    return cls.from_pretrained(folder / "base", text_encoder=None, tokenizer=None, **components)


def small_references(folder: Path):
    """Two example pictures at a small size (the tiny SeeCoder reads every pixel: encodes stay quick)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, size in (("coffee", (96, 64)), ("chelsea", (72, 64))):
        path = folder / f"{name}.png"
        Image.open(EXAMPLES / f"{name}.jpg").convert("RGB").resize(size, Image.BICUBIC).save(path)
        out.append(path)
    return tuple(out)
