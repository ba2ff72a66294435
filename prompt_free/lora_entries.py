"""The checks of a ``loras`` entry of checkpoints.yaml: its file (safetensors only) and the sampler
settings a few-step LoRA carries."""

from __future__ import annotations

from typing import Any, Dict

from . import settings
from .errors import ConfigError, InvalidSettingError

NO_LORA = "none"  # the LoRA pickers' "no LoRA" choice, so no entry may take this name
# A LoRA entry's sampler settings (few-step LoRAs: LCM-LoRA, TCD, Hyper-SD): choosing the LoRA in a
# tab sets these controls, and `prompt-free generate --lora` uses them unless given on the command line.
LORA_SAMPLER_OPTIONS = ("scheduler", "steps", "guidance")
# Shown beside the picker and printed by the CLI for a LoRA whose entry says `validated: false`.
NOT_VALIDATED = "not validated with SeeCoder context"
NOT_VALIDATED_WHY = ("it was distilled with text-prompt context; nobody has compared its pictures with SeeCoder's "
                     "on real weights yet")


def check_lora_sources(name: str, sources: tuple, where: str) -> None:
    """A LoRA is one .safetensors file (kohya or diffusers/PEFT keys): pickles are never read."""
    if name.strip().lower() == NO_LORA:
        raise ConfigError(f"{where}: '{NO_LORA}' means 'no LoRA' in the pickers; give this LoRA another name")
    for src in sources:
        if src.repo is not None and not src.file:
            raise ConfigError(f"{where}: a hub LoRA is one file of the repo: add `file: <name>.safetensors`")
        filename = src.file if src.repo is not None else src.path.name
        if not filename.lower().endswith(".safetensors"):
            raise ConfigError(f"{where}: LoRA files are read as .safetensors only (pickled .bin/.pt/.ckpt files are "
                              f"not loaded), got '{filename}'")


def check_lora_sampler(options: Dict[str, Any], where: str) -> None:
    """A LoRA's ``scheduler`` / ``steps`` / ``guidance`` (checked as a run checks them) and its
    ``validated`` flag (default: false when it carries sampler settings, else true); in place."""
    from .sampling import FEW_STEP_SCHEDULERS, SCHEDULERS  # torch: only when a profile has LoRAs

    scheduler = options.get("scheduler")
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ConfigError(f"{where}: unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
    try:
        if "steps" in options:
            if isinstance(options["steps"], bool):
                raise InvalidSettingError(f"steps must be a whole number, got {options['steps']!r}")
            limit = settings.FEW_STEPS if scheduler in FEW_STEP_SCHEDULERS else settings.STEPS
            options["steps"] = int(limit.check(options["steps"], f"steps with the {scheduler} sampler" if scheduler
                                               in FEW_STEP_SCHEDULERS else "steps"))
        if "guidance" in options:
            if isinstance(options["guidance"], bool):
                raise InvalidSettingError(f"guidance must be a number, got {options['guidance']!r}")
            options["guidance"] = float(settings.GUIDANCE.check(options["guidance"]))
    except InvalidSettingError as e:
        raise ConfigError(f"{where}: {e}") from None
    validated = options.get("validated", not any(k in options for k in LORA_SAMPLER_OPTIONS))
    if not isinstance(validated, bool):
        raise ConfigError(f"{where}: validated must be true or false, got {validated!r}")
    options["validated"] = validated
