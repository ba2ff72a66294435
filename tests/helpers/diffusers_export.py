"""The folders of ``prompt-free export`` on the tiny profile, written by the real command in-process,
and diffusers' own pipelines loaded from them (text_encoder=None, tokenizer=None: the base folder has none)."""

from __future__ import annotations

from pathlib import Path

from prompt_free import cli

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
