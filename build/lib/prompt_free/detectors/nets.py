"""Loading a state dict into a network built from controlnet_aux's model classes.

The networks are built here and the weights loaded into them, instead of calling
controlnet_aux's ``from_pretrained`` (which unpickles without ``weights_only``): files are read
only through ``prompt_free.weights.read_state_dict``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

from ..errors import CheckpointError
from ..weights import read_state_dict

_BENIGN_MISSING = ("num_batches_tracked",)
_BENIGN_UNEXPECTED = ("num_batches_tracked", "relative_position_index")  # buffers torch/timm recompute


@contextlib.contextmanager
def quiet():
    """Silence the prints and deprecation warnings of controlnet_aux / timm while building."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def wrapping(module: str, cls_name: str, filename: str):
    """A detector maker that wraps the one network loaded from ``filename`` in controlnet_aux's
    detector class ``controlnet_aux.<module>.<cls_name>``."""

    def make(nets):
        import importlib

        with quiet():
            cls = getattr(importlib.import_module(f"controlnet_aux.{module}"), cls_name)
        return cls(nets[filename])

    return make


def load_into(module, path: Path, what: str, *, drop_first_component: bool = False):
    """The weights of ``path`` loaded into ``module`` strictly (up to benign buffers); a
    ``CheckpointError`` names missing, unexpected or mis-shaped keys. Returns it in eval mode."""
    import torch

    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in read_state_dict(path).items()}
    own = module.state_dict()
    model_keys = list(own.keys())
    if drop_first_component and not any(k in sd for k in model_keys):
        # OpenPose body/hand files store "conv1_1.weight" for the model's "model0.conv1_1.weight".
        sd = {k: sd[k.split(".", 1)[1]] for k in model_keys if "." in k and k.split(".", 1)[1] in sd}
    known = set(model_keys)
    missing = [k for k in model_keys if k not in sd and not k.endswith(_BENIGN_MISSING)]
    unexpected = [k for k in sd if k not in known and not k.endswith(_BENIGN_UNEXPECTED)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if not problems:
        wrong = [f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})"
                 for k in model_keys if k in sd and isinstance(sd[k], torch.Tensor) and sd[k].shape != own[k].shape]
        if wrong:
            problems.append(f"{len(wrong)} wrong shapes (e.g. {', '.join(wrong[:2])})")
    if problems:
        raise CheckpointError(f"'{path}' does not fit the {what} network: " + "; ".join(problems))
    module.load_state_dict({k: v for k, v in sd.items() if k in known}, strict=False)
    return module.float().eval()
