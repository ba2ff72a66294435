"""What every task returns, and settings shared by all tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from PIL import Image


@dataclass
class TaskResult:
    images: List[Image.Image]  # generated pictures
    extras: List[Image.Image] = field(default_factory=list)  # e.g. control maps used
    info: Dict[str, Any] = field(default_factory=dict)  # seeds, size, timings ...


@dataclass
class SamplerSettings:
    """Settings every generation takes (defaults: the official demo's)."""

    base_model: Optional[str] = None  # None: the profile's default
    seecoder: Optional[str] = None
    guidance: float = 2.0
    steps: int = 50
    width: int = 512
    height: int = 512
    seed: int = 20
    num_images: int = 1
    scheduler: str = "DDIM"


def resolve_defaults(engine, settings: SamplerSettings) -> SamplerSettings:
    from dataclasses import replace

    return replace(
        settings,
        base_model=settings.base_model or engine.defaults["base_model"],
        seecoder=settings.seecoder or engine.defaults["seecoder"],
    )
