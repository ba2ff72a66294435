"""The memory layout of the convolutional models on the CPU (``PFD_CHANNELS_LAST`` = auto | on | off,
``Engine(channels_last=...)``).

channels_last (NHWC) lets oneDNN's convolutions run without reordering their inputs. The engine
lays out the UNet, the ControlNets and the VAE so when it places them on the CPU (``Engine.place``);
a convolution with channels_last weights gives channels_last outputs, so the activations follow
without converting the inputs. SeeCoder (a Swin transformer, linear layers) is left alone.

The rule of ``auto``: channels_last on the CPU when the models run in bf16 (measured faster there,
on AMX and AVX-512 BF16 CPUs: benchmarks/README.md), contiguous in fp32 (a CPU runs fp32 under
auto precision only without bf16 hardware; no such CPU was measured, so its pictures stay bit for
bit those of earlier versions; ``on`` chooses channels_last anyway).

The tiny profile stays contiguous unless a mode is given explicitly (an argument, not the
environment), so its pixel pins hold. channels_last changes the order of the floating-point sums,
not the arithmetic: results differ from contiguous ones by rounding only (tests/unit/test_layout.py
states the tolerance).
"""

from __future__ import annotations

from typing import Optional

import torch

from . import settings


def auto_channels_last(device_type: str, precision: str) -> bool:
    """What ``auto`` means for an engine on ``device_type`` in ``precision`` (fp32 | bf16 | fp16)."""
    return device_type == "cpu" and precision == "bf16"


def resolve(mode: Optional[str], device_type: str, precision: str, *, tiny: bool = False) -> bool:
    """Whether a new engine lays its convolutional models out channels_last: ``mode`` (auto | on |
    off; None: ``PFD_CHANNELS_LAST``). Only on the CPU (CUDA's compiled path has its own layout);
    the tiny profile is contiguous unless ``mode`` is given."""
    if mode is None:
        if tiny:
            return False
        mode = settings.channels_last()
    name = settings.check_channels_last(mode)
    if device_type != "cpu":
        return False
    return auto_channels_last(device_type, precision) if name == "auto" else name == "on"


def is_convolutional(module: torch.nn.Module) -> bool:
    """The models this layout is for: diffusers' UNet, ControlNet and autoencoders (the VAE)."""
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, UNet2DConditionModel

    return isinstance(module, (UNet2DConditionModel, ControlNetModel, AutoencoderKL, AutoencoderTiny))


def lay_out(module: torch.nn.Module) -> torch.nn.Module:
    """``module``'s 4-d weights in channels_last, in place (the others are unchanged)."""
    return module.to(memory_format=torch.channels_last)


def is_channels_last(module: torch.nn.Module) -> bool:
    """Whether every 4-d weight of ``module`` is laid out channels_last."""
    weights = [p for p in module.parameters() if p.ndim == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
