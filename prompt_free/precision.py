"""The models' floating-point precision, chosen per machine (``--precision`` / ``PFD_PRECISION``).

The rule of ``auto``:

- on CUDA: fp16 (as before this setting existed);
- on a CPU with bf16 arithmetic in hardware: bf16. That is AMX (``amx_bf16`` / ``amx_tile`` in
  /proc/cpuinfo's flags, or torch's CPU capability naming AMX) or AVX-512 BF16 (``avx512_bf16``,
  e.g. AMD EPYC Zen 4/5): measured faster than fp32 on both, every part and end to end, so no
  module is kept in fp32 for speed (the figures: benchmarks/README.md, ``bench_cpu.py``);
- on any other CPU (AVX2 only, ARM without these flags): fp32, where bf16 is emulated and slower.

The tiny profile stays fp32 unless a precision is given explicitly (an argument, not the
environment), so its pixel pins hold whatever the machine. No module is kept in fp32 when bf16 is
chosen: bf16 has fp32's exponent range, so nothing overflows (fp16's problem with the SD VAE), and
its rounding (about 1e-2 relative on the UNet output after a step with trained weights) stays below
what the 8-bit pictures show; the sampler's latents and guidance arithmetic stay fp32 in every
precision (``sampling.denoise``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional

import torch

from . import settings

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AMX_FLAGS = frozenset({"amx_bf16", "amx_tile"})
AVX512_BF16_FLAG = "avx512_bf16"
log = logging.getLogger("prompt_free")


def cpu_flags(cpuinfo: Optional[str] = None) -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo (or the text ``cpuinfo``); empty where unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_capability() -> str:
    """torch's CPU capability (e.g. "AVX512", "AVX2"); "" where torch cannot say."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older builds have no such call
        return ""


def has_amx(flags: Iterable[str], capability: str = "") -> bool:
    """Whether a CPU with these flags (or this torch capability) has AMX for bf16."""
    return bool(AMX_FLAGS & set(flags)) or "AMX" in capability.upper()


def has_bf16_hardware(flags: Iterable[str], capability: str = "") -> bool:
    """Whether a CPU with these flags (or this torch capability) multiplies bf16 in hardware:
    AMX or AVX-512 BF16."""
    return has_amx(flags, capability) or AVX512_BF16_FLAG in set(flags)


def auto_precision(device_type: str, flags: Optional[Iterable[str]] = None, capability: Optional[str] = None) -> str:
    """What ``auto`` means on a device: fp16 on CUDA, bf16 on a CPU with AMX or AVX-512 BF16, fp32 elsewhere.
    ``flags`` / ``capability``: the CPU's (default: this machine's)."""
    if device_type == "cuda":
        return "fp16"
    if device_type != "cpu":
        return "fp32"
    flags = cpu_flags() if flags is None else flags
    capability = cpu_capability() if capability is None else capability
    return "bf16" if has_bf16_hardware(flags, capability) else "fp32"


def resolve(precision: Optional[str], device_type: str, *, tiny: bool = False,
            flags: Optional[Iterable[str]] = None, capability: Optional[str] = None) -> str:
    """The precision a new engine runs in: ``precision`` (auto | fp32 | bf16 | fp16; None: the
    setting, ``PFD_PRECISION``) on ``device_type``. The tiny profile is fp32 unless ``precision``
    is given."""
    if precision is None:
        if tiny:
            return "fp32"
        precision = settings.precision(device_type)
    name = settings.check_precision(precision)
    if name == "auto":
        return auto_precision(device_type, flags, capability)
    if name == "bf16" and device_type == "cpu":
        warn_if_emulated(flags, capability)
    return name


def warn_if_emulated(flags: Optional[Iterable[str]] = None, capability: Optional[str] = None) -> bool:
    """Log a warning when bf16 is asked for on a CPU that emulates it (no AMX, no AVX-512 BF16):
    there it is many times slower than fp32, not faster (benchmarks/README.md). True if warned."""
    flags = cpu_flags() if flags is None else flags
    capability = cpu_capability() if capability is None else capability
    if has_bf16_hardware(flags, capability):
        return False
    log.warning("bf16 was asked for, but this CPU has no bf16 arithmetic in hardware (no AMX, no AVX-512 BF16): "
                "torch emulates it, which makes every step many times slower than fp32 (a full-size UNet step "
                "can take minutes). Use --precision fp32 or auto (PFD_PRECISION) here.")
    return True


def name_of(dtype: torch.dtype) -> str:
    """fp32 | bf16 | fp16 for a torch dtype (its str for any other)."""
    return next((k for k, v in DTYPES.items() if v == dtype), str(dtype).replace("torch.", ""))
